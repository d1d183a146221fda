//! The systemd cgroup driver against the real systemd (PID 1), as root:
//! a pod's scope in a kubelet-style slice, a container's scope with its
//! limits as unit properties and in the files, a live update, removal that
//! leaves no unit and no cgroup, and refusals that leave nothing either.
//!
//! Needs systemd as PID 1 on cgroup v2, so it is built only with the
//! `vm-systemd` feature; scripts/vm-lane runs it in its setup (b).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use runtime::cgroup::{CgroupError, Cgroups, Driver, Hierarchy, container_cgroup};
use runtime::spec::Resources;

const MIB: i64 = 1024 * 1024;

/// `systemctl show -p <property> --value <unit>`.
fn show(unit: &str, property: &str) -> String {
    let output = Command::new("systemctl")
        .args(["show", "-p", property, "--value", unit])
        .output()
        .expect("systemctl");
    assert!(output.status.success(), "systemctl show {unit}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Gone as far as systemd and the kernel can tell: the unit is not running
/// (systemd may still list it until it unloads it) and its cgroup is gone.
fn assert_gone(unit: &str, dir: &Path) {
    assert_eq!(show(unit, "ActiveState"), "inactive", "{unit}");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

fn read(dir: &Path, file: &str) -> String {
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .trim()
        .to_owned()
}

/// A process to place, killed and reaped on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("1000")
                .spawn()
                .expect("spawn sleep"),
        )
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid")
    }

    fn cgroup(&self) -> String {
        let text = read(Path::new(&format!("/proc/{}", self.0.id())), "cgroup");
        text.strip_prefix("0::").unwrap_or(&text).to_owned()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plays kubelet's part: its pod slice (and the parents systemd made for
/// it) are stopped at the end, also after a failed assert.
struct KubeletSlices(String);

impl Drop for KubeletSlices {
    fn drop(&mut self) {
        let _ = Command::new("systemctl").args(["stop", &self.0]).status();
    }
}

async fn systemd_driver() -> (Cgroups, PathBuf) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test starts systemd units: run it as root"
    );
    let cgroups = Cgroups::new(Driver::Systemd)
        .await
        .expect("the systemd driver needs systemd as PID 1 (scripts/vm-lane setup b)");
    let Hierarchy::V2 { root } = cgroups.hierarchy().clone() else {
        panic!("this test reads cgroup v2 files: {:?}", cgroups.hierarchy());
    };
    (cgroups, root)
}

#[tokio::test]
async fn pod_and_container_scopes_in_a_kubelet_slice() {
    let (cgroups, root) = systemd_driver().await;
    let top = format!("cridtest{}", std::process::id());
    let _kubelet = KubeletSlices(format!("{top}.slice"));
    let parent = format!("{top}-burstable-pod0a1b_2c3d.slice");
    let sandbox_id = format!("sb{}", std::process::id());
    let placement = cgroups
        .placement(&sandbox_id, Some(&parent))
        .expect("placement");
    assert_eq!(
        placement.pod,
        format!("/{top}.slice/{top}-burstable.slice/{parent}")
    );

    // The pod: its scope adopts the monitor and pause (stand-ins here).
    assert!(
        cgroups
            .prepare_sandbox(&placement)
            .expect("prepare")
            .is_empty()
    );
    let (monitor, pause) = (Sleeper::start(), Sleeper::start());
    cgroups
        .adopt_sandbox(&placement, &[monitor.pid(), pause.pid()])
        .await
        .expect("adopt");
    let sandbox_unit = format!("crid-{sandbox_id}.scope");
    assert_eq!(show(&sandbox_unit, "ActiveState"), "active");
    assert_eq!(show(&sandbox_unit, "Slice"), parent);
    assert_eq!(show(&sandbox_unit, "Delegate"), "yes");
    assert_eq!(show(&sandbox_unit, "ControlGroup"), placement.sandbox);
    assert_eq!(monitor.cgroup(), placement.sandbox);
    assert_eq!(pause.cgroup(), placement.sandbox);

    // A container: its scope starts with its init and its limits.
    let container_id = format!("ctr{}", std::process::id());
    let cgroup = container_cgroup(&placement, &container_id);
    let container_unit = format!("crid-{container_id}.scope");
    assert_eq!(cgroup, format!("{}/{container_unit}", placement.pod));
    let resources = Resources {
        cpu_shares: Some(512),
        cpu_quota: Some(12_345),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0".into()),
        memory_limit: Some(64 * MIB),
        pids_limit: Some(20),
        ..Resources::default()
    };
    cgroups
        .prepare_container(&cgroup, &resources, &[])
        .expect("prepare");
    let init = Sleeper::start();
    cgroups
        .place_container(&placement, &cgroup, &[init.pid()], &resources, &[])
        .await
        .expect("place");
    assert_eq!(init.cgroup(), cgroup);
    assert_eq!(show(&container_unit, "Slice"), parent);
    // systemd's view…
    assert_eq!(show(&container_unit, "MemoryMax"), (64 * MIB).to_string());
    assert_eq!(show(&container_unit, "TasksMax"), "20");
    assert_eq!(show(&container_unit, "CPUWeight"), "59");
    assert_eq!(show(&container_unit, "CPUQuotaPerSecUSec"), "130ms");
    assert_eq!(show(&container_unit, "AllowedCPUs"), "0");
    // …and the files, with the exact quota crid wrote after systemd.
    let dir = root.join(cgroup.trim_start_matches('/'));
    assert_eq!(read(&dir, "memory.max"), (64 * MIB).to_string());
    assert_eq!(read(&dir, "pids.max"), "20");
    assert_eq!(read(&dir, "cpu.weight"), "59");
    assert_eq!(read(&dir, "cpu.max"), "12345 100000");
    assert_eq!(read(&dir, "cpuset.cpus"), "0");

    // UpdateContainerResources: both views move.
    let updated = Resources {
        memory_limit: Some(128 * MIB),
        pids_limit: Some(-1),
        ..Resources::default()
    };
    cgroups.update(&cgroup, &updated).await.expect("update");
    assert_eq!(show(&container_unit, "MemoryMax"), (128 * MIB).to_string());
    assert_eq!(show(&container_unit, "TasksMax"), "infinity");
    assert_eq!(read(&dir, "memory.max"), (128 * MIB).to_string());
    assert_eq!(read(&dir, "pids.max"), "max");

    // Removal kills what runs and leaves no unit and no cgroup; again is fine.
    cgroups.kill_and_remove(&cgroup).await.expect("remove");
    assert_gone(&container_unit, &dir);
    cgroups
        .kill_and_remove(&cgroup)
        .await
        .expect("remove again");
    let mut init = init;
    let status = init.0.wait().expect("wait");
    assert!(status.code().is_none(), "killed, not exited: {status:?}");

    cgroups
        .remove_sandbox(&placement)
        .await
        .expect("remove pod");
    assert_gone(
        &sandbox_unit,
        &root.join(placement.sandbox.trim_start_matches('/')),
    );
    // kubelet's slice is kubelet's: it stays for kubelet to remove.
    assert_eq!(show(&parent, "ActiveState"), "active");
}

#[tokio::test]
async fn pods_without_a_parent_go_to_system_slice() {
    let (cgroups, root) = systemd_driver().await;
    let sandbox_id = format!("own{}", std::process::id());
    let placement = cgroups.placement(&sandbox_id, None).expect("placement");
    assert_eq!(
        placement.sandbox,
        format!("/system.slice/crid-{sandbox_id}.scope")
    );
    let monitor = Sleeper::start();
    cgroups
        .adopt_sandbox(&placement, &[monitor.pid()])
        .await
        .expect("adopt");
    assert_eq!(monitor.cgroup(), placement.sandbox);
    cgroups.remove_sandbox(&placement).await.expect("remove");
    assert_gone(
        &format!("crid-{sandbox_id}.scope"),
        &root.join(placement.sandbox.trim_start_matches('/')),
    );
}

#[tokio::test]
async fn refusals_name_the_field_and_leave_nothing() {
    let (cgroups, root) = systemd_driver().await;
    for parent in ["/kubepods/burstable/pod1", "kubepods-burstable-pod1"] {
        let error = cgroups.validate_parent(parent).expect_err(parent);
        assert!(
            matches!(&error, CgroupError::Invalid { field, .. } if field == "linux.cgroup_parent"),
            "{error:?}"
        );
    }

    // A limit systemd takes but the files refuse (swap below memory): the
    // placement fails after the scope started; removal (the container's
    // rollback) leaves nothing.
    let top = format!("cridbad{}", std::process::id());
    let _kubelet = KubeletSlices(format!("{top}.slice"));
    let placement = cgroups
        .placement("bad", Some(&format!("{top}-pod1.slice")))
        .expect("placement");
    let cgroup = container_cgroup(&placement, &format!("bad{}", std::process::id()));
    let unit = cgroup.rsplit('/').next().expect("unit").to_owned();
    let resources = Resources {
        memory_limit: Some(64 * MIB),
        memory_swap_limit: Some(32 * MIB),
        ..Resources::default()
    };
    let init = Sleeper::start();
    let error = cgroups
        .place_container(&placement, &cgroup, &[init.pid()], &resources, &[])
        .await
        .expect_err("swap below memory");
    assert!(
        matches!(&error, CgroupError::Invalid { field, .. } if field == "memory_swap_limit"),
        "{error:?}"
    );
    cgroups.kill_and_remove(&cgroup).await.expect("rollback");
    assert_gone(&unit, &root.join(cgroup.trim_start_matches('/')));

    // A cpuset systemd cannot take is refused before any unit exists.
    let resources = Resources {
        cpuset_cpus: Some("3-1".into()),
        ..Resources::default()
    };
    let error = cgroups
        .place_container(&placement, &cgroup, &[init.pid()], &resources, &[])
        .await
        .expect_err("backwards range");
    assert!(
        matches!(&error, CgroupError::Invalid { field, .. } if field == "cpuset_cpus"),
        "{error:?}"
    );
    assert_gone(&unit, &root.join(cgroup.trim_start_matches('/')));
}

/// The unit properties an update may change (and MemoryHigh, which a
/// `unified` key changes behind systemd's back), as systemctl shows them.
const PROPERTIES: [&str; 9] = [
    "CPUWeight",
    "CPUQuotaPerSecUSec",
    "CPUQuotaPeriodUSec",
    "AllowedCPUs",
    "AllowedMemoryNodes",
    "MemoryMax",
    "MemoryHigh",
    "MemorySwapMax",
    "TasksMax",
];
/// The files systemd or crid write for those (None: the kernel has none).
const FILES: [&str; 10] = [
    "cpu.weight",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "memory.swap.max",
    "pids.max",
];

type Limits = (Vec<String>, Vec<Option<String>>);

fn limits(unit: &str, dir: &Path) -> Limits {
    (
        PROPERTIES.iter().map(|name| show(unit, name)).collect(),
        FILES
            .iter()
            .map(|file| {
                std::fs::read_to_string(dir.join(file))
                    .ok()
                    .map(|value| value.trim().to_owned())
            })
            .collect(),
    )
}

/// UpdateContainerResources is all or nothing with systemd too: systemd
/// changes its properties (and rewrites its files) first, crid then writes
/// the files; when the kernel refuses one of crid's writes, every property
/// and file is as before the update. A done update can be undone whole
/// (what crid does when it cannot record it).
#[tokio::test]
async fn a_refused_update_leaves_every_property_and_file_as_before() {
    let (cgroups, root) = systemd_driver().await;
    let id = std::process::id();
    let top = format!("cridundo{id}");
    let _kubelet = KubeletSlices(format!("{top}.slice"));
    let placement = cgroups
        .placement(&format!("undo{id}"), Some(&format!("{top}-pod1.slice")))
        .expect("placement");
    let cgroup = container_cgroup(&placement, &format!("undoctr{id}"));
    let unit = cgroup.rsplit('/').next().expect("unit").to_owned();
    let dir = root.join(cgroup.trim_start_matches('/'));
    let init = Sleeper::start();
    // With a cpuset: the kernel refuses to empty the cpuset of a cgroup
    // with processes (ENOSPC), so an update that sets the first one cannot
    // be put back to "" (the same CPUs, but not the same file).
    let created = Resources {
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpuset_cpus: Some("0-1".into()),
        memory_limit: Some(64 * MIB),
        ..Resources::default()
    };
    cgroups
        .place_container(&placement, &cgroup, &[init.pid()], &created, &[])
        .await
        .expect("place");
    let before = limits(&unit, &dir);
    assert_eq!(before.1[1].as_deref(), Some("50000 100000"), "{before:?}");

    // Every limit systemd takes, so that it changes its properties and its
    // files, and last a `unified` value the kernel refuses (EINVAL), after
    // crid has written all the others.
    let mut changes = Resources {
        cpu_shares: Some(2048),
        cpu_quota: Some(20_000),
        cpu_period: Some(50_000),
        cpuset_cpus: Some("1".into()),
        memory_limit: Some(128 * MIB),
        pids_limit: Some(30),
        ..Resources::default()
    };
    changes
        .unified
        .insert("memory.high".into(), "plenty".into());
    let error = cgroups
        .update(&cgroup, &changes)
        .await
        .expect_err("memory.high plenty");
    assert!(
        matches!(&error, CgroupError::Invalid { field, .. } if field == "unified[memory.high]"),
        "{error:?}"
    );
    assert_eq!(
        limits(&unit, &dir),
        before,
        "(properties, files) after a refused update"
    );

    // The same update with a value the kernel takes changes both views…
    changes
        .unified
        .insert("memory.high".into(), (100 * MIB).to_string());
    let undo = cgroups.update(&cgroup, &changes).await.expect("update");
    assert_eq!(show(&unit, "MemoryMax"), (128 * MIB).to_string());
    assert_eq!(show(&unit, "TasksMax"), "30");
    assert_eq!(read(&dir, "cpu.max"), "20000 50000");
    assert_eq!(read(&dir, "memory.high"), (100 * MIB).to_string());
    // …and undone, leaves both as they were.
    cgroups.undo(undo).await;
    assert_eq!(
        limits(&unit, &dir),
        before,
        "(properties, files) after an undo"
    );

    cgroups.kill_and_remove(&cgroup).await.expect("remove");
    assert_gone(&unit, &dir);
}
