//! The runtime's readiness as CRI `Status` reports it. Every check looks at
//! the real host; nothing is assumed.

use std::path::Path;

use nix::unistd::AccessFlags;
use proto::cri::RuntimeCondition;

use crate::config::Config;

pub const RUNTIME_READY: &str = "RuntimeReady";
pub const NETWORK_READY: &str = "NetworkReady";
pub const RUNTIME_NOT_READY_REASON: &str = "RuntimeNotReady";
pub const NETWORK_NOT_READY_REASON: &str = "NetworkPluginNotReady";

/// Kernel features every pod and container needs. The newest syscalls the
/// monitor cannot do without are close_range (5.9: every fork drops the
/// monitor's descriptors with it) and openat2 (5.6: container logs are
/// opened beneath their directory).
const REQUIRED_NAMESPACES: &[&str] = &["mnt", "uts", "ipc", "net", "pid"];
const MIN_KERNEL: (u32, u32) = (5, 9);

/// `RuntimeReady`: root and state dirs usable, kernel features present.
pub fn runtime_condition(config: &Config) -> RuntimeCondition {
    let mut problems = Vec::new();
    for (name, dir) in [("root", &config.root), ("state", &config.state)] {
        if let Err(problem) = dir_usable(dir) {
            problems.push(format!("{name} dir {}: {problem}", dir.display()));
        }
    }
    problems.extend(missing_kernel_features());
    condition(RUNTIME_READY, problems, RUNTIME_NOT_READY_REASON)
}

/// `NetworkReady`: a valid CNI network whose plugins all exist.
pub fn network_condition(
    network: &Result<cni::NetworkConfigList, cni::CniConfigError>,
) -> RuntimeCondition {
    let problems = match network {
        Ok(_) => Vec::new(),
        Err(error) => vec![format!("cni config uninitialized: {error}")],
    };
    condition(NETWORK_READY, problems, NETWORK_NOT_READY_REASON)
}

fn condition(kind: &str, problems: Vec<String>, reason: &str) -> RuntimeCondition {
    let ready = problems.is_empty();
    RuntimeCondition {
        r#type: kind.to_string(),
        status: ready,
        reason: if ready {
            String::new()
        } else {
            reason.to_string()
        },
        message: problems.join("; "),
    }
}

pub fn dir_usable(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err("not a directory".into()),
        Err(error) => return Err(error.to_string()),
    }
    // access(2) sees a read-only mount (EROFS) even for root.
    nix::unistd::access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
        .map_err(|errno| format!("not writable: {errno}"))
}

pub fn missing_kernel_features() -> Vec<String> {
    let mut missing = Vec::new();
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for fs in ["overlay", "tmpfs"] {
        if !filesystems.split_whitespace().any(|name| name == fs) {
            missing.push(format!("kernel has no {fs} filesystem (/proc/filesystems)"));
        }
    }
    for ns in REQUIRED_NAMESPACES {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            missing.push(format!("kernel has no {ns} namespace (/proc/self/ns/{ns})"));
        }
    }
    if !has_memory_cgroup(Path::new("/sys/fs/cgroup")) {
        missing.push("no memory cgroup controller mounted under /sys/fs/cgroup".into());
    }
    match nix::sys::utsname::uname() {
        Ok(uts) => {
            let release = uts.release().to_string_lossy().into_owned();
            if !kernel_at_least(&release, MIN_KERNEL) {
                missing.push(format!(
                    "kernel {release} is older than {}.{} (close_range)",
                    MIN_KERNEL.0, MIN_KERNEL.1
                ));
            }
        }
        Err(errno) => missing.push(format!("uname: {errno}")),
    }
    missing
}

/// Recursive read-only mounts: crid-monitor makes them with
/// mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY), which Linux has since 5.12.
pub fn recursive_read_only_mounts() -> bool {
    nix::sys::utsname::uname()
        .is_ok_and(|uts| kernel_at_least(&uts.release().to_string_lossy(), MOUNT_SETATTR_KERNEL))
}

const MOUNT_SETATTR_KERNEL: (u32, u32) = (5, 12);

/// cgroup v2 lists its controllers at the root; v1 mounts one per directory.
fn has_memory_cgroup(cgroup_root: &Path) -> bool {
    let v2 = std::fs::read_to_string(cgroup_root.join("cgroup.controllers"))
        .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"));
    v2 || cgroup_root.join("memory/memory.limit_in_bytes").exists()
}

fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse::<u32>().ok());
    match (numbers.next(), numbers.next()) {
        (Some(found_major), Some(found_minor)) => (found_major, found_minor) >= (major, minor),
        _ => false,
    }
}

/// crid applies no AppArmor or SELinux profile; this says whether the
/// host would have one to offer.
pub fn host_lsm() -> &'static str {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|enabled| enabled.trim() == "Y");
    let selinux = std::path::Path::new("/sys/fs/selinux/enforce").exists();
    match (apparmor, selinux) {
        (false, false) => "none: no AppArmor or SELinux on this host",
        (true, false) => {
            "none: crid applies no AppArmor profile (AppArmor is enabled on this host)"
        }
        (false, true) => "none: crid applies no SELinux label (SELinux is enabled on this host)",
        (true, true) => "none: crid applies no AppArmor profile or SELinux label",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_comparison() {
        assert!(kernel_at_least("6.18.44-fc-v657", MIN_KERNEL));
        assert!(kernel_at_least("5.9.0", MIN_KERNEL));
        assert!(!kernel_at_least("5.8.18", MIN_KERNEL));
        assert!(kernel_at_least("6.18.44-fc-v657", (5, 3)));
        assert!(kernel_at_least("5.3.0", (5, 3)));
        assert!(!kernel_at_least("5.2.21-generic", (5, 3)));
        assert!(!kernel_at_least("4.19.0", (5, 3)));
        assert!(!kernel_at_least("garbage", (5, 3)));
        assert!(kernel_at_least("5.12.0", MOUNT_SETATTR_KERNEL));
        assert!(!kernel_at_least("5.11.22", MOUNT_SETATTR_KERNEL));
    }

    #[test]
    fn memory_cgroup_detection_on_fake_trees() {
        let v2 = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            v2.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("write");
        assert!(has_memory_cgroup(v2.path()));
        let v2_without = tempfile::tempdir().expect("tempdir");
        std::fs::write(v2_without.path().join("cgroup.controllers"), "cpu io\n").expect("write");
        assert!(!has_memory_cgroup(v2_without.path()));
        let v1 = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(v1.path().join("memory")).expect("mkdir");
        std::fs::write(
            v1.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .expect("write");
        assert!(has_memory_cgroup(v1.path()));
    }

    #[test]
    fn runtime_condition_names_an_unusable_dir() {
        let good = tempfile::tempdir().expect("tempdir");
        let config = Config {
            root: good.path().to_path_buf(),
            state: good.path().join("missing"),
            ..Config::default()
        };
        let condition = runtime_condition(&config);
        assert!(!condition.status);
        assert_eq!(condition.reason, RUNTIME_NOT_READY_REASON);
        assert!(
            condition.message.contains("state dir"),
            "{}",
            condition.message
        );
        assert!(
            !condition.message.contains("root dir"),
            "{}",
            condition.message
        );
    }

    #[test]
    fn runtime_condition_is_ready_on_this_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            root: dir.path().to_path_buf(),
            state: dir.path().to_path_buf(),
            ..Config::default()
        };
        let condition = runtime_condition(&config);
        assert!(condition.status, "{}", condition.message);
        assert!(condition.reason.is_empty());
    }
}
