//! The stat readers against the real thing, as root: a cgroup on the host's
//! hierarchy with a process burning CPU in it, and a network namespace with
//! an interface in it.

// Shared with the other cgroup tests; this one needs not all of it.
#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cleanup, require_root};
use runtime::cgroup::Hierarchy;
use runtime::cgroup::stats::{ControlFiles, Detail, StatsError};
use runtime::netstats::{NetStatsError, read_in_namespaces};

/// Polls `check` until it holds (bounded: a stuck reader fails, a slow
/// machine does not).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_busy_process_shows_in_its_cgroups_figures_until_the_cgroup_goes() {
    require_root();
    let hierarchy = Hierarchy::detect().expect("detect");
    let parent = format!("/crid-test-stats-{}", std::process::id());
    let leaf = format!("{parent}/c1");
    let mut cleanup = Cleanup {
        hierarchy: hierarchy.clone(),
        levels: vec![leaf.clone(), parent.clone()],
        child: None,
    };
    hierarchy.create_leaf(&leaf).expect("create leaf");
    let idle = hierarchy.stats(&leaf).expect("stats of an empty cgroup");
    assert_eq!(idle.cpu.usage_ns, 0);
    assert_eq!(idle.pids.current, 0);

    // It waits to be placed, then takes ~4 MB (a v1 move does not carry
    // charges over) and burns CPU.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; x=$(head -c 4000000 /dev/zero | tr '\\0' a); while :; do :; done",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a busy shell");
    let mut go = child.stdin.take().expect("stdin");
    let pid = child.id().to_string();
    cleanup.child = Some(child);
    if let Hierarchy::V1 { .. } = hierarchy {
        hierarchy
            .apply(
                &leaf,
                &runtime::spec::Resources {
                    cpuset_cpus: Some("0".into()),
                    cpuset_mems: Some("0".into()),
                    memory_limit: Some(256 << 20),
                    ..Default::default()
                },
            )
            .expect("cpuset first: an empty v1 cpuset refuses tasks");
    }
    for procs in hierarchy.procs_files(&leaf) {
        std::fs::write(&procs, &pid).unwrap_or_else(|e| panic!("{}: {e}", procs.display()));
    }

    std::io::Write::write_all(&mut go, b"go\n").expect("let it go");
    let mut first = hierarchy.stats(&leaf).expect("stats");
    eventually("memory charged", || {
        first = hierarchy.stats(&leaf).expect("stats");
        first.memory.rss_bytes > 1 << 20
    });
    assert!(first.pids.current >= 1, "{first:?}");
    assert!(first.memory.usage_bytes > 0, "{first:?}");
    assert!(
        first.memory.working_set_bytes <= first.memory.usage_bytes,
        "{first:?}"
    );
    assert!(first.memory.rss_bytes > 0, "{first:?}");
    if let Hierarchy::V1 { .. } = hierarchy {
        assert_eq!(first.memory.limit_bytes, Some(256 << 20));
        assert!(first.pressure.is_none());
    }
    eventually("CPU usage rising", || {
        let now = hierarchy.stats(&leaf).expect("stats");
        now.cpu.usage_ns > first.cpu.usage_ns && now.cpu.user_ns > first.cpu.user_ns
    });
    // Control files kept open from one reading to the next (as the
    // collector keeps them) read new figures each time.
    let mut kept = ControlFiles::default();
    let before = hierarchy
        .stats_with(&leaf, &mut kept, Detail::Full)
        .expect("stats");
    assert_eq!(before.memory.limit_bytes, first.memory.limit_bytes);
    eventually("CPU usage rising through kept files", || {
        let now = hierarchy
            .stats_with(&leaf, &mut kept, Detail::Full)
            .expect("stats");
        now.cpu.usage_ns > before.cpu.usage_ns && now.cpu.user_ns > before.cpu.user_ns
    });

    // The CRI's figures alone, as the stats calls read them.
    let mut cri = ControlFiles::default();
    let before = hierarchy
        .stats_with(&leaf, &mut cri, Detail::Cri)
        .expect("stats");
    assert_eq!(before.memory.limit_bytes, first.memory.limit_bytes);
    assert!(before.memory.usage_bytes > 0, "{before:?}");
    eventually("CPU usage rising through the CRI's figures", || {
        let now = hierarchy
            .stats_with(&leaf, &mut cri, Detail::Cri)
            .expect("stats");
        now.cpu.usage_ns > before.cpu.usage_ns
    });

    hierarchy.kill_and_remove(&leaf).expect("remove leaf");
    if let Some(mut child) = cleanup.child.take() {
        let _ = child.wait();
    }
    let gone = hierarchy.stats(&leaf);
    assert!(matches!(gone, Err(StatsError::Gone(_))), "{gone:?}");
    // Kept files of a removed cgroup read ENODEV: gone as well.
    let gone = hierarchy.stats_with(&leaf, &mut kept, Detail::Full);
    assert!(matches!(gone, Err(StatsError::Gone(_))), "{gone:?}");
}

/// Removes the test's namespace, also after a failed assert.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("run ip (install iproute2)");
    assert!(status.success(), "ip {args:?}: {status}");
}

#[test]
fn interfaces_are_read_inside_their_namespace() {
    require_root();
    let name = format!("crid-test-netstats-{}", std::process::id());
    ip(&["netns", "add", &name]);
    let netns = Netns(name.clone());
    ip(&[
        "-n", &name, "link", "add", "stat0", "type", "veth", "peer", "name", "stat1",
    ]);
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    let path = PathBuf::from("/run/netns").join(&name);

    let results = read_in_namespaces(vec![
        path,
        PathBuf::from(format!("/run/netns/{name}-missing")),
    ])
    .expect("thread");
    let [Ok(interfaces), Err(NetStatsError::Gone(_))] = results.as_slice() else {
        panic!("{results:?}");
    };
    let mut names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["stat0", "stat1"], "the namespace's own, without lo");
    // The calling thread stayed where it was.
    let own: Vec<String> = runtime::netstats::parse_net_dev(
        &std::fs::read_to_string("/proc/thread-self/net/dev").expect("read"),
    )
    .into_iter()
    .map(|i| i.name)
    .collect();
    assert!(!own.contains(&"stat0".to_string()), "{own:?}");
    drop(netns);
}
