//! Container cgroups on the host's real hierarchy, as root: a leaf under a
//! test parent, limits written and read back, live updates with a process
//! inside, and nothing left behind. This one is cgroup v1 (the host's);
//! tests/cgroup_v2.rs is its v2 twin, run in scripts/vm-lane's VM.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::{Cleanup, read, require_root};
use proto::monitor::CgroupView;
use runtime::cgroup::{CgroupError, Hierarchy, Placement, container_cgroup, oom_kills};
use runtime::spec::Resources;

const MIB: i64 = 1024 * 1024;

/// The container's dir in the v1 hierarchy of `name` (as `view` names it).
fn dir_of(view: &CgroupView, name: &str) -> PathBuf {
    let CgroupView::V1 { hierarchies } = view else {
        panic!("expected a v1 view");
    };
    hierarchies
        .iter()
        .find(|mount| mount.name == name)
        .unwrap_or_else(|| panic!("no {name} hierarchy in {view:?}"))
        .host_dir
        .clone()
}

/// The host's v1 hierarchy and a pod placement under a test parent of its
/// own (`/crid-test-<name>-<pid>`).
fn v1_test_pod(name: &str) -> (Hierarchy, String, Placement) {
    require_root();
    let hierarchy = Hierarchy::detect().expect("detect");
    assert!(
        matches!(hierarchy, Hierarchy::V1 { .. }),
        "this test reads v1 control files; the host is cgroup v2: {hierarchy:?}"
    );
    let parent = format!("/crid-test-{name}-{}", std::process::id());
    let placement = Placement {
        pod: format!("{parent}/pod"),
        sandbox: format!("{parent}/pod/sandbox"),
        owns_pod: true,
        systemd: false,
    };
    (hierarchy, parent, placement)
}

#[test]
fn container_leaf_limits_updates_and_removal_on_v1() {
    let (hierarchy, parent, placement) = v1_test_pod("limits");
    let container = container_cgroup(&placement, "c1");
    assert_eq!(container, format!("{parent}/pod/c1"));
    let mut cleanup = Cleanup {
        hierarchy: hierarchy.clone(),
        levels: vec![container.clone(), placement.pod.clone(), parent.clone()],
        child: None,
    };

    hierarchy.create_leaf(&container).expect("create leaf");
    let view = hierarchy.view(&container);
    let CgroupView::V1 { hierarchies } = &view else {
        panic!("expected a v1 view");
    };
    assert!(!hierarchies.is_empty());
    for mount in hierarchies {
        assert!(mount.host_dir.is_dir(), "{}", mount.host_dir.display());
        assert!(mount.host_dir.ends_with(container.trim_start_matches('/')));
    }
    let (cpu, cpuset, memory, pids) = (
        dir_of(&view, "cpu"),
        dir_of(&view, "cpuset"),
        dir_of(&view, "memory"),
        dir_of(&view, "pids"),
    );

    // A process inside, as a running container has: limits apply live.
    let child = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id().to_string();
    cleanup.child = Some(child);
    hierarchy
        .apply(
            &container,
            &Resources {
                cpuset_cpus: Some("0".into()),
                cpuset_mems: Some("0".into()),
                ..Resources::default()
            },
        )
        .expect("cpuset first: an empty v1 cpuset refuses tasks");
    for procs in hierarchy.procs_files(&container) {
        fs::write(&procs, &pid).unwrap_or_else(|error| panic!("{}: {error}", procs.display()));
    }
    assert_eq!(
        hierarchy.processes(&container),
        vec![pid.parse::<i32>().expect("pid")]
    );

    let resources = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0".into()),
        memory_limit: Some(64 * MIB),
        pids_limit: Some(100),
        ..Resources::default()
    };
    hierarchy.apply(&container, &resources).expect("apply");
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&cpuset, "cpuset.cpus"), "0");
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        (64 * MIB).to_string()
    );
    let memsw = memory.join("memory.memsw.limit_in_bytes").exists();
    if memsw {
        assert_eq!(
            read(&memory, "memory.memsw.limit_in_bytes"),
            (64 * MIB).to_string()
        );
    }
    assert_eq!(read(&pids, "pids.max"), "100");

    // Lowering and raising memory both keep memsw >= memory at every step.
    for limit in [32 * MIB, 128 * MIB] {
        let update = Resources {
            memory_limit: Some(limit),
            ..Resources::default()
        };
        hierarchy.apply(&container, &update).expect("update memory");
        assert_eq!(read(&memory, "memory.limit_in_bytes"), limit.to_string());
        if memsw {
            assert_eq!(
                read(&memory, "memory.memsw.limit_in_bytes"),
                limit.to_string()
            );
        }
    }
    assert_eq!(read(&cpu, "cpu.shares"), "512", "unset limits stay");

    let oom_file = hierarchy
        .oom_events_file(&container)
        .expect("memory controller");
    assert_eq!(oom_kills(&oom_file).expect("read oom events"), 0);

    hierarchy
        .kill_and_remove(&container)
        .expect("remove container");
    // Reap the killed sleep.
    if let Some(mut child) = cleanup.child.take() {
        let _ = child.wait();
    }
    hierarchy.remove(&placement.pod).expect("remove pod");
    hierarchy.remove(&parent).expect("remove parent");
    for mount in hierarchies {
        let top = mount
            .host_dir
            .ancestors()
            .find(|dir| dir.ends_with(parent.trim_start_matches('/')))
            .expect("test parent");
        assert!(!top.exists(), "{} left behind", top.display());
    }
}

/// An update the kernel itself refuses halfway (a quota above what the
/// pod's cgroup allows, checked by the kernel only when it is written) is
/// that field's error, and every file written before it is put back.
#[test]
fn an_update_the_kernel_refuses_leaves_every_limit_as_it_was() {
    let (hierarchy, parent, placement) = v1_test_pod("refused");
    let container = container_cgroup(&placement, "c1");
    let _cleanup = Cleanup {
        hierarchy: hierarchy.clone(),
        levels: vec![container.clone(), placement.pod.clone(), parent.clone()],
        child: None,
    };
    hierarchy.create_leaf(&container).expect("create leaf");
    let cpu = dir_of(&hierarchy.view(&container), "cpu");
    let pod_cpu = cpu.parent().expect("the pod's cpu dir").to_path_buf();
    // The pod may use half a CPU, as kubelet sets a pod's quota.
    fs::write(pod_cpu.join("cpu.cfs_quota_us"), "50000").expect("pod quota");

    let before = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(20_000),
        cpu_period: Some(100_000),
        ..Resources::default()
    };
    hierarchy.apply(&container, &before).expect("apply");
    // Shares and period are written before the quota the kernel refuses.
    let refused = Resources {
        cpu_shares: Some(256),
        cpu_period: Some(200_000),
        cpu_quota: Some(150_000),
        ..Resources::default()
    };
    match hierarchy.apply(&container, &refused) {
        Err(CgroupError::Invalid { field, value, .. }) => {
            assert_eq!((field.as_str(), value.as_str()), ("cpu_quota", "150000"))
        }
        other => panic!("expected the kernel to refuse the quota, got {other:?}"),
    }
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "20000");
}

/// Killing a container's cgroup on v1 freezes it, kills what is in it and
/// thaws it: a shell that keeps forking ends with all it forked, and the
/// leaf is removed (so nothing is left frozen).
#[test]
fn kill_and_remove_ends_a_forking_process_tree_on_v1() {
    let (hierarchy, parent, placement) = v1_test_pod("kill");
    let container = container_cgroup(&placement, "tree");
    let mut cleanup = Cleanup {
        hierarchy: hierarchy.clone(),
        levels: vec![container.clone(), placement.pod.clone(), parent.clone()],
        child: None,
    };
    hierarchy.create_leaf(&container).expect("create leaf");
    // As the monitor's launcher and a container's init join: the shell
    // (one thread) writes "0" to each join file.
    let join: Vec<String> = hierarchy
        .join_files(&container)
        .iter()
        .map(|file| format!("echo 0 > {} || exit 1;", file.display()))
        .collect();
    let shell = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} while :; do sleep 600 & sleep 0.01; done",
            join.join(" ")
        ))
        .spawn()
        .expect("spawn the tree");
    cleanup.child = Some(shell);
    // The shell, moved in first, then the sleeps it keeps forking there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while hierarchy.processes(&container).len() < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tree never reached the leaf: {:?}",
            hierarchy.processes(&container)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let forked = hierarchy.processes(&container);
    // Joined whole, in every hierarchy, and so are its children.
    let hierarchies = hierarchy.join_files(&container).len();
    let suffix = format!(":{container}");
    for pid in &forked {
        let Ok(cgroups) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue; // a sleep that ended meanwhile
        };
        let inside = cgroups
            .lines()
            .filter(|line| line.ends_with(&suffix))
            .count();
        assert_eq!(inside, hierarchies, "{pid}: {cgroups}");
    }
    assert!(
        hierarchy
            .procs_files(&container)
            .iter()
            .any(|file| file.with_file_name("freezer.state").exists()),
        "the host has no v1 freezer to kill through"
    );

    hierarchy
        .kill_and_remove(&container)
        .expect("kill and remove");
    let status = cleanup
        .child
        .take()
        .map(|mut shell| shell.wait().expect("wait for the shell"))
        .expect("shell");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed: {status:?}"
    );
    for pid in forked {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists()
                || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))),
            "{pid} survived"
        );
    }
    hierarchy.remove(&placement.pod).expect("remove pod");
    hierarchy.remove(&parent).expect("remove parent");
    for dir in hierarchy.procs_files(&parent) {
        let dir = dir.parent().expect("a cgroup dir").to_path_buf();
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
