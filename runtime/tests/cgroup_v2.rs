//! Container cgroups on a real cgroup v2 hierarchy, as root: tests/cgroup.rs's
//! checks in their v2 form (controllers delegated down every level, limits
//! and live updates in v2's files and units), plus a real OOM kill counted in
//! `memory.events`. Needs a pure v2 host, so it is built only with the
//! `vm-lane` feature: scripts/vm-lane runs it in its VM, and the host suite
//! (cgroup v1 here) never builds it. On a v1 host it fails, saying so.

mod common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Cleanup, read, require_root};
use proto::monitor::CgroupView;
use runtime::cgroup::{Hierarchy, Placement, container_cgroup, oom_kills};
use runtime::spec::Resources;

const MIB: i64 = 1024 * 1024;

/// The v2 root, or a failure that says this is the wrong host.
fn v2_root() -> (Hierarchy, PathBuf) {
    require_root();
    let hierarchy = Hierarchy::detect().expect("detect");
    let Hierarchy::V2 { root } = &hierarchy else {
        panic!(
            "this test needs a pure cgroup v2 host (cgroup2 on /sys/fs/cgroup), as \
             scripts/vm-lane's VM has; this host has {hierarchy:?}"
        );
    };
    let root = root.clone();
    (hierarchy, root)
}

/// A test's pod placement under a parent of its own.
fn test_pod(name: &str) -> (String, Placement) {
    let parent = format!("/crid-test-{name}-{}", std::process::id());
    let placement = Placement {
        pod: format!("{parent}/pod"),
        sandbox: format!("{parent}/pod/sandbox"),
        owns_pod: true,
        systemd: false,
    };
    (parent, placement)
}

fn words(text: &str) -> BTreeSet<String> {
    text.split_whitespace().map(String::from).collect()
}

fn dir(root: &Path, cgroup: &str) -> PathBuf {
    root.join(cgroup.trim_start_matches('/'))
}

#[test]
fn container_leaf_limits_updates_and_removal_on_v2() {
    let (hierarchy, root) = v2_root();
    let (parent, placement) = test_pod("v2");
    let container = container_cgroup(&placement, "c1");
    let mut cleanup = Cleanup {
        hierarchy: hierarchy.clone(),
        levels: vec![container.clone(), placement.pod.clone(), parent.clone()],
        child: None,
    };

    hierarchy.create_leaf(&container).expect("create leaf");
    // Every level hands all its controllers down, so the leaf has every
    // controller the root offers (limits need their files in the leaf).
    let offered = words(&read(&root, "cgroup.controllers"));
    for controller in ["cpu", "cpuset", "memory", "pids", "hugetlb"] {
        assert!(
            offered.contains(controller),
            "the kernel offers no {controller} controller: {offered:?}"
        );
    }
    for level in ["/", &parent, &placement.pod] {
        let level_dir = dir(&root, level);
        let delegated = words(&read(&level_dir, "cgroup.subtree_control"));
        let available = words(&read(&level_dir, "cgroup.controllers"));
        assert_eq!(delegated, available, "{level} delegates all it has");
    }
    let leaf = dir(&root, &container);
    assert_eq!(words(&read(&leaf, "cgroup.controllers")), offered);
    assert_eq!(hierarchy.view(&container), CgroupView::V2);
    assert_eq!(
        hierarchy.procs_files(&container),
        vec![leaf.join("cgroup.procs")]
    );

    // A process inside, as a running container has: limits apply live.
    let child = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id().to_string();
    cleanup.child = Some(child);
    for procs in hierarchy.procs_files(&container) {
        std::fs::write(&procs, &pid).unwrap_or_else(|error| panic!("{}: {error}", procs.display()));
    }
    assert_eq!(
        hierarchy.processes(&container),
        vec![pid.parse::<i32>().expect("pid")]
    );

    let page_size = "2MB";
    assert!(
        leaf.join(format!("hugetlb.{page_size}.max")).exists(),
        "no hugetlb.{page_size}.max in {}: the lane's kernel has 2 MB huge pages",
        leaf.display()
    );
    let resources = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0".into()),
        cpuset_mems: Some("0".into()),
        memory_limit: Some(64 * MIB),
        pids_limit: Some(100),
        hugepage_limits: vec![(page_size.into(), 4 * MIB)],
        ..Resources::default()
    };
    hierarchy.apply(&container, &resources).expect("apply");
    // shares 512 are weight 59, as runc and crun convert them.
    assert_eq!(read(&leaf, "cpu.weight"), "59");
    assert_eq!(read(&leaf, "cpu.max"), "50000 100000");
    assert_eq!(read(&leaf, "cpuset.cpus"), "0");
    assert_eq!(read(&leaf, "cpuset.cpus.effective"), "0");
    assert_eq!(read(&leaf, "cpuset.mems"), "0");
    assert_eq!(read(&leaf, "memory.max"), (64 * MIB).to_string());
    // No swap limit asked: memory+swap = memory, which on v2 is no swap.
    assert_eq!(read(&leaf, "memory.swap.max"), "0");
    assert_eq!(read(&leaf, "pids.max"), "100");
    assert_eq!(read(&leaf, "hugetlb.2MB.max"), (4 * MIB).to_string());

    // A live update: CRI's memory_swap_limit is memory+swap (v1's memsw);
    // v2's memory.swap.max is swap alone.
    let update = Resources {
        cpu_shares: Some(256),
        cpu_quota: Some(-1),
        memory_limit: Some(32 * MIB),
        memory_swap_limit: Some(128 * MIB),
        pids_limit: Some(-1),
        unified: BTreeMap::from([("memory.high".into(), (24 * MIB).to_string())]),
        ..Resources::default()
    };
    hierarchy.apply(&container, &update).expect("update");
    assert_eq!(read(&leaf, "cpu.weight"), "35");
    assert_eq!(read(&leaf, "cpu.max"), "max 100000");
    assert_eq!(read(&leaf, "memory.max"), (32 * MIB).to_string());
    assert_eq!(read(&leaf, "memory.swap.max"), (96 * MIB).to_string());
    assert_eq!(read(&leaf, "memory.high"), (24 * MIB).to_string());
    assert_eq!(read(&leaf, "pids.max"), "max");
    // Raising memory alone again means no swap; unset limits stay.
    let raise = Resources {
        memory_limit: Some(128 * MIB),
        ..Resources::default()
    };
    hierarchy.apply(&container, &raise).expect("raise memory");
    assert_eq!(read(&leaf, "memory.max"), (128 * MIB).to_string());
    assert_eq!(read(&leaf, "memory.swap.max"), "0");
    assert_eq!(read(&leaf, "cpu.weight"), "35", "unset limits stay");
    assert_eq!(read(&leaf, "cpuset.cpus"), "0", "unset limits stay");

    // A swap limit without a memory limit means nothing on v2: refused.
    let swap_only = Resources {
        memory_swap_limit: Some(64 * MIB),
        ..Resources::default()
    };
    let error = hierarchy
        .apply(&container, &swap_only)
        .expect_err("swap without memory");
    assert!(error.to_string().contains("memory_swap_limit"), "{error}");

    let oom_file = hierarchy
        .oom_events_file(&container)
        .expect("memory controller");
    assert_eq!(oom_file, leaf.join("memory.events"));
    assert_eq!(oom_kills(&oom_file).expect("read memory.events"), 0);

    hierarchy
        .kill_and_remove(&container)
        .expect("remove container");
    if let Some(mut child) = cleanup.child.take() {
        let _ = child.wait();
    }
    hierarchy.remove(&placement.pod).expect("remove pod");
    hierarchy.remove(&parent).expect("remove parent");
    assert!(!dir(&root, &parent).exists(), "{parent} left behind");
}

/// The kernel's OOM killer in a container's leaf: the kill is counted in
/// the leaf's memory.events, which is how crid-monitor tells OOMKilled.
#[test]
fn an_oom_kill_is_counted_in_memory_events() {
    let (hierarchy, root) = v2_root();
    let (parent, placement) = test_pod("oom");
    let container = container_cgroup(&placement, "hog");
    let mut cleanup = Cleanup {
        hierarchy: hierarchy.clone(),
        levels: vec![container.clone(), placement.pod.clone(), parent.clone()],
        child: None,
    };
    hierarchy.create_leaf(&container).expect("create leaf");
    let limits = Resources {
        memory_limit: Some(8 * MIB),
        ..Resources::default()
    };
    hierarchy.apply(&container, &limits).expect("apply");
    let leaf = dir(&root, &container);
    assert_eq!(read(&leaf, "memory.swap.max"), "0", "no swap to escape to");
    let oom_file = hierarchy
        .oom_events_file(&container)
        .expect("memory controller");

    // The shell moves itself into the leaf, then becomes the hog: tail
    // keeps the endless "line" of /dev/zero in memory.
    let procs = leaf.join("cgroup.procs");
    let hog = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec tail /dev/zero",
            procs.display()
        ))
        .spawn()
        .expect("spawn the hog");
    cleanup.child = Some(hog);
    let status = cleanup
        .child
        .as_mut()
        .map(|hog| hog.wait().expect("wait for the hog"))
        .expect("hog");
    cleanup.child = None;
    assert_eq!(
        status.signal(),
        Some(9),
        "the OOM killer's SIGKILL: {status:?}"
    );
    assert_eq!(oom_kills(&oom_file).expect("read memory.events"), 1);
    assert!(
        hierarchy.processes(&container).is_empty(),
        "the leaf is empty after the kill"
    );

    hierarchy.kill_and_remove(&container).expect("remove");
    hierarchy.remove(&placement.pod).expect("remove pod");
    hierarchy.remove(&parent).expect("remove parent");
    assert!(!dir(&root, &parent).exists(), "{parent} left behind");
}

/// Removing a container's cgroup kills everything in it at once (v2's
/// cgroup.kill), a shell and the children it forked alike.
#[test]
fn kill_and_remove_ends_a_process_tree() {
    let (hierarchy, root) = v2_root();
    let (parent, placement) = test_pod("kill");
    let container = container_cgroup(&placement, "tree");
    let mut cleanup = Cleanup {
        hierarchy: hierarchy.clone(),
        levels: vec![container.clone(), placement.pod.clone(), parent.clone()],
        child: None,
    };
    hierarchy.create_leaf(&container).expect("create leaf");
    let leaf = dir(&root, &container);
    assert!(
        leaf.join("cgroup.kill").exists(),
        "Linux 5.14+ has cgroup.kill"
    );
    let procs = leaf.join("cgroup.procs");
    let shell = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} || exit 1; sleep 600 & sleep 600 & wait",
            procs.display()
        ))
        .spawn()
        .expect("spawn the tree");
    cleanup.child = Some(shell);
    // The shell, moved in first, then the two sleeps it forks there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while hierarchy.processes(&container).len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tree never reached the leaf: {:?}",
            hierarchy.processes(&container)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    hierarchy
        .kill_and_remove(&container)
        .expect("kill and remove");
    assert!(!leaf.exists(), "the leaf is gone");
    let status = cleanup
        .child
        .take()
        .map(|mut shell| shell.wait().expect("wait for the shell"))
        .expect("shell");
    assert_eq!(status.signal(), Some(9), "killed: {status:?}");
    hierarchy.remove(&placement.pod).expect("remove pod");
    hierarchy.remove(&parent).expect("remove parent");
    assert!(!dir(&root, &parent).exists(), "{parent} left behind");
}
