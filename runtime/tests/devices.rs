//! The cgroup v2 device program, for real, as root: a container's rules
//! loaded as eBPF into a v2 cgroup (the host's unified hierarchy, which a
//! cgroup v1 hybrid host also mounts) and enforced on a process inside it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runtime::cgroup::Hierarchy;
use runtime::spec::device_rules;

/// The host's cgroup2 mount: `/sys/fs/cgroup` on a v2 host, the unified
/// hierarchy beside the v1 ones on a hybrid one.
fn cgroup2_mount() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            (after.split(' ').next() == Some("cgroup2")).then(|| before.split(' ').nth(4))?
        })
        .map(PathBuf::from)
        .next()
        .expect("no cgroup2 mount: this test needs a cgroup v2 (or hybrid) host")
}

/// Runs `command` in the cgroup whose procs file is `procs`, or outside
/// any test cgroup when None.
fn run(procs: Option<&Path>, command: &str) -> Output {
    let script = match procs {
        Some(procs) => format!("echo $$ > {} && {command}", procs.display()),
        None => command.to_owned(),
    };
    Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run sh")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A v2 cgroup of the test's own holding a container's device rules;
/// on drop (also after a failed assert) its processes die and it goes.
struct TestCgroup {
    hierarchy: Hierarchy,
    cgroup: String,
    dir: PathBuf,
}

impl TestCgroup {
    fn with_rules_of(name: &str, privileged: bool) -> TestCgroup {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test loads eBPF into a real cgroup: run it as root"
        );
        let root = cgroup2_mount();
        let hierarchy = Hierarchy::V2 { root: root.clone() };
        let cgroup = format!("/crid-devices-{name}-{}", std::process::id());
        hierarchy.create_leaf(&cgroup).expect("create cgroup");
        let test_cgroup = TestCgroup {
            hierarchy,
            dir: root.join(cgroup.trim_start_matches('/')),
            cgroup,
        };
        let rules = device_rules(privileged).expect("rules");
        test_cgroup
            .hierarchy
            .apply_devices(&test_cgroup.cgroup, &rules)
            .expect("load and attach the device program");
        test_cgroup
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.hierarchy.kill_and_remove(&self.cgroup);
    }
}

#[test]
fn a_v2_device_program_allows_the_default_devices_and_mknod_only() {
    let test_cgroup = TestCgroup::with_rules_of("test", false);
    let procs = test_cgroup.procs();
    let nodes = tempfile::tempdir().expect("temp dir");
    let node = nodes.path().join("loop0");
    let node = node.display();

    let null = run(Some(&procs), "head -c 1 /dev/null && echo x > /dev/null");
    assert!(null.status.success(), "{}", stderr(&null));
    let mknod = run(Some(&procs), &format!("mknod {node} b 7 0"));
    assert!(mknod.status.success(), "mknod: {}", stderr(&mknod));
    let open = run(Some(&procs), &format!("head -c 1 {node}"));
    assert!(!open.status.success());
    assert!(
        stderr(&open).contains("Operation not permitted"),
        "{}",
        stderr(&open)
    );
    // The same node outside the cgroup: not the device program's refusal
    // (it opens, or has no loop driver behind it).
    let outside = run(None, &format!("head -c 1 {node}"));
    assert!(
        !stderr(&outside).contains("Operation not permitted"),
        "{}",
        stderr(&outside)
    );

    let dir = test_cgroup.dir.clone();
    drop(test_cgroup);
    assert!(!dir.exists());
}

#[test]
fn a_privileged_containers_rules_need_no_program() {
    let test_cgroup = TestCgroup::with_rules_of("privileged", true);
    let nodes = tempfile::tempdir().expect("temp dir");
    let node = nodes.path().join("loop0");
    let node = node.display();
    let open = run(
        Some(&test_cgroup.procs()),
        &format!("mknod {node} b 7 0 && head -c 1 {node}"),
    );
    assert!(
        !stderr(&open).contains("Operation not permitted"),
        "{}",
        stderr(&open)
    );
}
