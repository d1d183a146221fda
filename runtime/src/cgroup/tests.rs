use std::collections::BTreeMap;

use super::*;

const MIB: i64 = 1024 * 1024;

fn mount(dir: PathBuf, controllers: &[&str]) -> V1Mount {
    V1Mount {
        dir,
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[test]
fn detects_v1_hybrid_and_v2() {
    let v1 = "30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n\
              31 25 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
              32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
              33 25 0:29 / /sys/fs/cgroup/net_cls rw - cgroup cgroup rw,net_cls\n\
              34 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
              35 25 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n";
    assert_eq!(
        Hierarchy::from_mountinfo(v1),
        Hierarchy::V1 {
            mounts: vec![
                mount("/sys/fs/cgroup/memory".into(), &["memory"]),
                mount("/sys/fs/cgroup/cpu".into(), &["cpu"]),
                mount("/sys/fs/cgroup/cpu,cpuacct".into(), &["cpu", "cpuacct"]),
                mount("/sys/fs/cgroup/systemd".into(), &["name=systemd"]),
            ]
        }
    );
    let v2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(
        Hierarchy::from_mountinfo(v2),
        Hierarchy::V2 {
            root: PathBuf::from("/sys/fs/cgroup")
        }
    );
}

#[test]
fn placement_uses_kubelets_parent_or_crids_own() {
    let kubelet = placement("abc", Some("/kubepods/burstable/pod123"));
    assert_eq!(kubelet.pod, "/kubepods/burstable/pod123");
    assert_eq!(kubelet.sandbox, "/kubepods/burstable/pod123/abc");
    assert!(!kubelet.owns_pod);
    let own = placement("abc", None);
    assert_eq!(
        (own.pod.as_str(), own.sandbox.as_str(), own.owns_pod),
        ("/crid/abc", "/crid/abc/sandbox", true)
    );
    validate_parent("/kubepods/pod1").expect("valid");
    for bad in [
        "kubepods",
        "/a/../b",
        "kubepods-pod1.slice",
        "/x\ny",
        "/x\0y",
    ] {
        assert!(validate_parent(bad).is_err(), "{bad}");
    }
}

/// The v2 path on a fake tree: parents delegate their controllers,
/// processes go to the leaf, removal takes the leaf away.
#[test]
fn v2_on_a_fake_tree() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::write(
        root.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .expect("write");
    fs::write(root.path().join("cgroup.subtree_control"), "cpu\n").expect("write");
    let hierarchy = Hierarchy::V2 {
        root: root.path().to_path_buf(),
    };
    let placement = placement("pod1", None);
    hierarchy.create(&placement).expect("create");
    let subtree = fs::read_to_string(root.path().join("cgroup.subtree_control")).expect("read");
    assert_eq!(subtree, "+cpuset +io +memory +pids");
    let leaf = root.path().join("crid/pod1/sandbox");
    assert!(leaf.is_dir());
    assert_eq!(
        hierarchy.procs_files(&placement.sandbox),
        vec![leaf.join("cgroup.procs")]
    );
    fs::write(leaf.join("cgroup.procs"), "4242\n").expect("write");
    assert_eq!(hierarchy.processes(&placement.sandbox), vec![4242]);
    // A container's leaf goes beside the sandbox's, by the same mechanism.
    let container = container_cgroup(&placement, "c1");
    assert_eq!(container, "/crid/pod1/c1");
    hierarchy
        .create_leaf(&container)
        .expect("create container leaf");
    assert!(root.path().join("crid/pod1/c1").is_dir());
}

/// v1 on a fake tree: every controller gets the leaf; cpuset inherits.
#[test]
fn v1_on_a_fake_tree() {
    let root = tempfile::tempdir().expect("tempdir");
    let (memory, cpuset) = (root.path().join("memory"), root.path().join("cpuset"));
    fs::create_dir_all(&memory).expect("mkdir");
    fs::create_dir_all(&cpuset).expect("mkdir");
    fs::write(cpuset.join("cpuset.cpus"), "0-1\n").expect("write");
    fs::write(cpuset.join("cpuset.mems"), "0\n").expect("write");
    let hierarchy = Hierarchy::V1 {
        mounts: vec![
            mount(memory.clone(), &["memory"]),
            mount(cpuset.clone(), &["cpuset"]),
        ],
    };
    // A fake cpuset dir has no cpuset.cpus until written, so pre-create the levels' files.
    let placement = placement("pod1", Some("/kubepods/pod1"));
    // A level another creator made but has not filled in yet.
    fs::create_dir_all(cpuset.join("kubepods")).expect("mkdir");
    fs::write(cpuset.join("kubepods/cpuset.cpus"), "").expect("write");
    fs::write(cpuset.join("kubepods/cpuset.mems"), "").expect("write");
    // A fake tree's new dirs have no cpuset files; a real kernel makes them empty.
    fs::create_dir_all(cpuset.join("kubepods/pod1/pod1")).expect("mkdir");
    for level in ["kubepods/pod1", "kubepods/pod1/pod1"] {
        fs::write(cpuset.join(level).join("cpuset.cpus"), "").expect("write");
        fs::write(cpuset.join(level).join("cpuset.mems"), "").expect("write");
    }
    hierarchy.create(&placement).expect("create");
    for level in ["kubepods", "kubepods/pod1", "kubepods/pod1/pod1"] {
        assert_eq!(
            fs::read_to_string(cpuset.join(level).join("cpuset.cpus")).expect("read"),
            "0-1",
            "{level}"
        );
        assert_eq!(
            fs::read_to_string(cpuset.join(level).join("cpuset.mems")).expect("read"),
            "0",
            "{level}"
        );
    }
    assert!(memory.join("kubepods/pod1/pod1").is_dir());
    assert!(cpuset.join("kubepods/pod1/pod1").is_dir());
    // rmdir of a real cgroup takes its control files along; a fake tree's must go first.
    for file in ["cpuset.cpus", "cpuset.mems"] {
        fs::remove_file(cpuset.join("kubepods/pod1/pod1").join(file)).expect("remove fake file");
    }
    hierarchy.remove(&placement.sandbox).expect("remove");
    assert!(!memory.join("kubepods/pod1/pod1").exists());
    hierarchy.remove(&placement.sandbox).expect("remove twice");
}

/// A fake leaf holding the given control files with their initial values.
fn fake_leaf(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).expect("mkdir");
    for (file, value) in files {
        fs::write(dir.join(file), value).expect("write");
    }
}

fn realistic() -> Resources {
    Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0-1".into()),
        cpuset_mems: Some("0".into()),
        memory_limit: Some(64 * MIB),
        pids_limit: Some(100),
        hugepage_limits: vec![("2MB".into(), 4 * MIB)],
        ..Resources::default()
    }
}

const V1_UNLIMITED: &str = "9223372036854771712";

/// A fake v1 host: cpu and cpuacct co-mounted, as on most distributions.
struct FakeV1 {
    _root: tempfile::TempDir,
    hierarchy: Hierarchy,
    cpu: PathBuf,
    cpuset: PathBuf,
    memory: PathBuf,
    pids: PathBuf,
    hugetlb: PathBuf,
}

fn fake_v1(cgroup: &str, memsw: bool) -> FakeV1 {
    let root = tempfile::tempdir().expect("tempdir");
    let relative = cgroup.trim_start_matches('/');
    let at = |name: &str| root.path().join(name);
    let hierarchy = Hierarchy::V1 {
        mounts: vec![
            mount(at("cpu,cpuacct"), &["cpu", "cpuacct"]),
            mount(at("cpuset"), &["cpuset"]),
            mount(at("memory"), &["memory"]),
            mount(at("pids"), &["pids"]),
            mount(at("hugetlb"), &["hugetlb"]),
        ],
    };
    let fake = FakeV1 {
        cpu: at("cpu,cpuacct").join(relative),
        cpuset: at("cpuset").join(relative),
        memory: at("memory").join(relative),
        pids: at("pids").join(relative),
        hugetlb: at("hugetlb").join(relative),
        hierarchy,
        _root: root,
    };
    fake_leaf(
        &fake.cpu,
        &[
            ("cpu.shares", "1024"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpu.cfs_period_us", "100000"),
        ],
    );
    fake_leaf(
        &fake.cpuset,
        &[("cpuset.cpus", "0-3"), ("cpuset.mems", "0")],
    );
    fake_leaf(&fake.memory, &[("memory.limit_in_bytes", V1_UNLIMITED)]);
    if memsw {
        fake_leaf(
            &fake.memory,
            &[("memory.memsw.limit_in_bytes", V1_UNLIMITED)],
        );
    }
    fake_leaf(&fake.pids, &[("pids.max", "max")]);
    fake_leaf(
        &fake.hugetlb,
        &[("hugetlb.2MB.limit_in_bytes", V1_UNLIMITED)],
    );
    fake
}

#[test]
fn v1_apply_writes_every_limit_in_its_controllers_hierarchy() {
    let cgroup = "/kubepods/pod1/c1";
    let fake = fake_v1(cgroup, true);
    fake.hierarchy.apply(cgroup, &realistic()).expect("apply");
    assert_eq!(read(&fake.cpu.join("cpu.shares")), "512");
    assert_eq!(read(&fake.cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&fake.cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&fake.cpuset.join("cpuset.cpus")), "0-1");
    assert_eq!(read(&fake.cpuset.join("cpuset.mems")), "0");
    assert_eq!(read(&fake.memory.join("memory.limit_in_bytes")), "67108864");
    // No swap limit asked: memory+swap = memory, i.e. no swap.
    assert_eq!(
        read(&fake.memory.join("memory.memsw.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(&fake.pids.join("pids.max")), "100");
    assert_eq!(
        read(&fake.hugetlb.join("hugetlb.2MB.limit_in_bytes")),
        "4194304"
    );

    // An update: explicit swap, unlimited quota and pids; unset stays.
    let update = Resources {
        cpu_quota: Some(-1),
        memory_limit: Some(32 * MIB),
        memory_swap_limit: Some(128 * MIB),
        pids_limit: Some(-1),
        ..Resources::default()
    };
    fake.hierarchy.apply(cgroup, &update).expect("update");
    assert_eq!(read(&fake.cpu.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(read(&fake.cpu.join("cpu.shares")), "512");
    assert_eq!(read(&fake.memory.join("memory.limit_in_bytes")), "33554432");
    assert_eq!(
        read(&fake.memory.join("memory.memsw.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(read(&fake.pids.join("pids.max")), "max");
}

#[test]
fn v1_apply_leaves_swap_alone_without_swap_accounting() {
    let cgroup = "/p/c";
    let fake = fake_v1(cgroup, false);
    fake.hierarchy.apply(cgroup, &realistic()).expect("apply");
    assert_eq!(read(&fake.memory.join("memory.limit_in_bytes")), "67108864");
    assert!(!fake.memory.join("memory.memsw.limit_in_bytes").exists());
}

#[test]
fn v1_apply_refuses_what_it_cannot_write() {
    let cgroup = "/p/c";
    let fake = fake_v1(cgroup, true);
    let unified = Resources {
        unified: BTreeMap::from([("memory.high".into(), "1M".into())]),
        ..Resources::default()
    };
    let error = fake
        .hierarchy
        .apply(cgroup, &unified)
        .expect_err("v1 has no unified");
    assert!(matches!(error, CgroupError::Invalid { .. }), "{error}");
    let swap_below = Resources {
        memory_limit: Some(64 * MIB),
        memory_swap_limit: Some(32 * MIB),
        ..Resources::default()
    };
    let error = fake
        .hierarchy
        .apply(cgroup, &swap_below)
        .expect_err("swap below memory");
    assert!(error.to_string().contains("memory_swap_limit"), "{error}");
    // A page size the kernel does not offer: the error names file and value.
    let huge = Resources {
        hugepage_limits: vec![("1GB".into(), 1 << 30)],
        ..Resources::default()
    };
    let error = fake
        .hierarchy
        .apply(cgroup, &huge)
        .expect_err("no such file");
    let text = error.to_string();
    assert!(
        text.contains("hugetlb.1GB.limit_in_bytes") && text.contains("1073741824"),
        "{text}"
    );
    let bad_size = Resources {
        hugepage_limits: vec![("../2MB".into(), 1)],
        ..Resources::default()
    };
    assert!(fake.hierarchy.apply(cgroup, &bad_size).is_err());
    // A controller crid has no hierarchy for.
    let no_pids = Hierarchy::V1 { mounts: vec![] };
    let pids = Resources {
        pids_limit: Some(5),
        ..Resources::default()
    };
    let error = no_pids.apply(cgroup, &pids).expect_err("no pids hierarchy");
    assert!(error.to_string().contains("pids.max"), "{error}");
}

fn fake_v2(swap: bool) -> (tempfile::TempDir, Hierarchy, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let leaf = root.path().join("kubepods/pod1/c1");
    fake_leaf(
        &leaf,
        &[
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("memory.max", "max"),
            ("memory.high", "max"),
            ("pids.max", "max"),
            ("hugetlb.2MB.max", "max"),
        ],
    );
    if swap {
        fake_leaf(&leaf, &[("memory.swap.max", "max")]);
    }
    let hierarchy = Hierarchy::V2 {
        root: root.path().to_path_buf(),
    };
    (root, hierarchy, leaf)
}

#[test]
fn v2_apply_writes_every_limit() {
    let (_root, hierarchy, leaf) = fake_v2(true);
    let cgroup = "/kubepods/pod1/c1";
    let resources = Resources {
        unified: BTreeMap::from([("memory.high".into(), "50331648".into())]),
        ..realistic()
    };
    hierarchy.apply(cgroup, &resources).expect("apply");
    assert_eq!(read(&leaf.join("cpu.weight")), "59");
    assert_eq!(read(&leaf.join("cpu.max")), "50000 100000");
    assert_eq!(read(&leaf.join("cpuset.cpus")), "0-1");
    assert_eq!(read(&leaf.join("cpuset.mems")), "0");
    assert_eq!(read(&leaf.join("memory.max")), "67108864");
    // v2 swap excludes memory: memory+swap = memory means no swap.
    assert_eq!(read(&leaf.join("memory.swap.max")), "0");
    assert_eq!(read(&leaf.join("pids.max")), "100");
    assert_eq!(read(&leaf.join("hugetlb.2MB.max")), "4194304");
    assert_eq!(read(&leaf.join("memory.high")), "50331648");

    let update = Resources {
        memory_limit: Some(64 * MIB),
        memory_swap_limit: Some(96 * MIB),
        pids_limit: Some(-1),
        hugepage_limits: vec![("2MB".into(), -1)],
        ..Resources::default()
    };
    hierarchy.apply(cgroup, &update).expect("update");
    assert_eq!(read(&leaf.join("memory.swap.max")), (32 * MIB).to_string());
    assert_eq!(read(&leaf.join("pids.max")), "max");
    assert_eq!(read(&leaf.join("hugetlb.2MB.max")), "max");
    assert_eq!(read(&leaf.join("cpu.weight")), "59", "unset stays");

    let unlimited_swap = Resources {
        memory_limit: Some(64 * MIB),
        memory_swap_limit: Some(-1),
        ..Resources::default()
    };
    hierarchy.apply(cgroup, &unlimited_swap).expect("update");
    assert_eq!(read(&leaf.join("memory.swap.max")), "max");
}

#[test]
fn v2_cpu_max_with_and_without_quota() {
    let (_root, hierarchy, leaf) = fake_v2(true);
    let cgroup = "/kubepods/pod1/c1";
    let cases = [
        (Some(50_000), Some(100_000), "50000 100000"),
        (None, Some(200_000), "max 200000"),
        (Some(-1), Some(100_000), "max 100000"),
        (Some(25_000), None, "25000"),
    ];
    for (quota, period, expected) in cases {
        let resources = Resources {
            cpu_quota: quota,
            cpu_period: period,
            ..Resources::default()
        };
        hierarchy.apply(cgroup, &resources).expect("apply");
        assert_eq!(
            read(&leaf.join("cpu.max")),
            expected,
            "{quota:?} {period:?}"
        );
    }
}

#[test]
fn v2_swap_rules() {
    let cgroup = "/kubepods/pod1/c1";
    let (_root, hierarchy, leaf) = fake_v2(false);
    hierarchy
        .apply(cgroup, &realistic())
        .expect("no swap accounting");
    assert!(!leaf.join("memory.swap.max").exists());

    let (_root, hierarchy, _leaf) = fake_v2(true);
    let swap_only = Resources {
        memory_swap_limit: Some(64 * MIB),
        ..Resources::default()
    };
    let error = hierarchy
        .apply(cgroup, &swap_only)
        .expect_err("swap needs memory");
    assert!(matches!(error, CgroupError::Invalid { .. }), "{error}");
}

#[test]
fn v2_unified_keys_are_file_names() {
    let (_root, hierarchy, _leaf) = fake_v2(true);
    for key in ["../memory.max", "a/b", ""] {
        let resources = Resources {
            unified: BTreeMap::from([(key.to_owned(), "1".to_owned())]),
            ..Resources::default()
        };
        let error = hierarchy
            .apply("/kubepods/pod1/c1", &resources)
            .expect_err(key);
        assert!(
            matches!(error, CgroupError::Invalid { .. }),
            "{key}: {error}"
        );
    }
    // A file the kernel does not offer is an error naming it, not a new file.
    let resources = Resources {
        unified: BTreeMap::from([("io.max".to_owned(), "8:0 rbps=1".to_owned())]),
        ..Resources::default()
    };
    let error = hierarchy
        .apply("/kubepods/pod1/c1", &resources)
        .expect_err("no io.max");
    assert!(error.to_string().contains("io.max"), "{error}");
}

#[test]
fn cpu_shares_map_onto_cpu_weight() {
    for (shares, weight) in [
        (1, 1),
        (2, 1),
        (3, 2),
        (102, 17),
        (256, 35),
        (512, 59),
        (1024, 100),
        (2048, 174),
        (100_000, 4340),
        (262_143, 10_000),
        (262_144, 10_000),
        (1_000_000, 10_000),
    ] {
        assert_eq!(limits::cpu_weight(shares), weight, "{shares}");
    }
}

#[test]
fn oom_kills_reads_the_oom_kill_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events");
    for (text, kills) in [
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", 3),
        (
            "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n",
            1,
        ),
        ("oom_kill_disable 0\nunder_oom 0\n", 0),
    ] {
        fs::write(&file, text).expect("write");
        assert_eq!(oom_kills(&file).expect("parse"), kills, "{text}");
    }
    fs::write(&file, "oom_kill many\n").expect("write");
    assert!(oom_kills(&file).is_err());
    assert!(oom_kills(&dir.path().join("missing")).is_err());
}

#[test]
fn oom_events_file_per_version() {
    let v1 = Hierarchy::V1 {
        mounts: vec![
            mount("/cg/cpu".into(), &["cpu"]),
            mount("/cg/memory".into(), &["memory"]),
        ],
    };
    assert_eq!(
        v1.oom_events_file("/p/c"),
        Some(PathBuf::from("/cg/memory/p/c/memory.oom_control"))
    );
    let no_memory = Hierarchy::V1 {
        mounts: vec![mount("/cg/cpu".into(), &["cpu"])],
    };
    assert_eq!(no_memory.oom_events_file("/p/c"), None);
    let v2 = Hierarchy::V2 { root: "/cg".into() };
    assert_eq!(
        v2.oom_events_file("/p/c"),
        Some(PathBuf::from("/cg/p/c/memory.events"))
    );
}

#[test]
fn view_names_hierarchies_as_the_host_does() {
    let root = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| root.path().join(name);
    for dir in ["cpu,cpuacct", "memory", "net_cls"] {
        fs::create_dir(at(dir)).expect("mkdir");
    }
    std::os::unix::fs::symlink("cpu,cpuacct", at("cpu")).expect("symlink");
    std::os::unix::fs::symlink(at("cpu,cpuacct"), at("cpuacct")).expect("symlink");
    std::os::unix::fs::symlink("net_cls", at("net_prio")).expect("symlink");
    let hierarchy = Hierarchy::V1 {
        mounts: vec![
            mount(at("cpu,cpuacct"), &["cpu", "cpuacct"]),
            mount(at("memory"), &["memory"]),
        ],
    };
    assert_eq!(
        hierarchy.view("/kubepods/pod1/c1"),
        CgroupView::V1 {
            hierarchies: vec![
                CgroupV1Mount {
                    name: "cpu,cpuacct".into(),
                    host_dir: at("cpu,cpuacct/kubepods/pod1/c1"),
                    aliases: vec!["cpu".into(), "cpuacct".into()],
                },
                CgroupV1Mount {
                    name: "memory".into(),
                    host_dir: at("memory/kubepods/pod1/c1"),
                    aliases: vec![],
                },
            ]
        }
    );
    let v2 = Hierarchy::V2 {
        root: root.path().to_path_buf(),
    };
    assert_eq!(v2.view("/kubepods/pod1/c1"), CgroupView::V2);
}

#[test]
fn values_the_kernel_refuses_are_named_before_any_write() {
    let (_root, hierarchy, leaf) = fake_v2(true);
    let cgroup = "/kubepods/pod1/c1";
    let cases: [(Resources, &str); 7] = [
        (
            Resources {
                cpu_period: Some(1),
                cpu_quota: Some(1000),
                ..Resources::default()
            },
            "cpu_period",
        ),
        (
            Resources {
                cpu_period: Some(1 << 40),
                ..Resources::default()
            },
            "cpu_period",
        ),
        (
            Resources {
                cpu_quota: Some(999),
                ..Resources::default()
            },
            "cpu_quota",
        ),
        (
            Resources {
                cpuset_cpus: Some("0-1000".into()),
                ..Resources::default()
            },
            "cpuset_cpus",
        ),
        (
            Resources {
                cpuset_cpus: Some("1-0".into()),
                ..Resources::default()
            },
            "cpuset_cpus",
        ),
        (
            Resources {
                cpuset_cpus: Some("zero".into()),
                ..Resources::default()
            },
            "cpuset_cpus",
        ),
        (
            Resources {
                cpuset_mems: Some("4096".into()),
                ..Resources::default()
            },
            "cpuset_mems",
        ),
    ];
    for (resources, field) in cases {
        // Shares come first in the write order: refused before it, too.
        let resources = Resources {
            cpu_shares: Some(2048),
            ..resources
        };
        match hierarchy.apply(cgroup, &resources) {
            Err(CgroupError::Invalid { field: named, .. }) => {
                assert_eq!(named, field, "{resources:?}")
            }
            other => panic!("{resources:?}: expected Invalid {field}, got {other:?}"),
        }
        assert_eq!(read(&leaf.join("cpu.weight")), "100", "nothing written");
    }
    // What is online is fine, and unlimited quota is not a quota.
    let fine = Resources {
        cpu_quota: Some(-1),
        cpu_period: Some(1000),
        cpuset_cpus: Some("0".into()),
        cpuset_mems: Some("0".into()),
        ..Resources::default()
    };
    hierarchy.apply(cgroup, &fine).expect("valid values");
}

#[test]
fn a_failed_apply_puts_back_every_file_it_wrote() {
    let (_root, hierarchy, leaf) = fake_v2(true);
    let cgroup = "/kubepods/pod1/c1";
    // The kernel offers no memory.max here (as without the controller):
    // the CPU and cpuset files are written before it fails.
    fs::remove_file(leaf.join("memory.max")).expect("remove memory.max");
    let error = hierarchy
        .apply(cgroup, &realistic())
        .expect_err("memory.max is missing");
    assert!(error.to_string().contains("memory.max"), "{error}");
    assert_eq!(read(&leaf.join("cpu.weight")), "100");
    assert_eq!(read(&leaf.join("cpu.max")), "max 100000");
    // An empty old value goes back as a lone newline (an empty write would
    // never reach the kernel); the kernel reads an empty cpuset as "\n" too.
    assert_eq!(read(&leaf.join("cpuset.cpus")).trim(), "");
    assert_eq!(read(&leaf.join("cpuset.mems")).trim(), "");
    assert_eq!(read(&leaf.join("pids.max")), "max", "never reached");
}
