//! Which sysctls a pod may set: only those namespaced by the kernel, and only
//! for namespaces the pod owns (the list kubelet and runc use).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::PodError;
use crate::spec::NamespaceMode;

/// IPC-namespaced sysctls (plus the `fs.mqueue.` prefix).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
];

/// Validates and normalises (`/` separators become `.`) the pod's sysctls.
/// Each must be namespaced, in a namespace the pod owns, and exist here.
pub fn validate(
    sysctls: &BTreeMap<String, String>,
    network: NamespaceMode,
    ipc: NamespaceMode,
    proc_sys: &Path,
) -> Result<BTreeMap<String, String>, PodError> {
    let mut valid = BTreeMap::new();
    for (raw_key, value) in sysctls {
        let field = format!("linux.sysctls[{raw_key}]");
        let key = if raw_key.contains('/') {
            raw_key.replace('/', ".")
        } else {
            raw_key.clone()
        };
        let is_net = key.starts_with("net.");
        let is_ipc = IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.");
        if !is_net && !is_ipc {
            return Err(PodError::invalid(
                field,
                value,
                "not a namespaced sysctl; pods may set only net.*, IPC and fs.mqueue.* sysctls",
            ));
        }
        if is_net && network != NamespaceMode::Pod {
            return Err(PodError::invalid(
                field,
                value,
                "net.* sysctls need the pod's own network namespace (not hostNetwork)",
            ));
        }
        if is_ipc && ipc != NamespaceMode::Pod {
            return Err(PodError::invalid(
                field,
                value,
                "IPC sysctls need the pod's own IPC namespace (not hostIPC)",
            ));
        }
        let invalid_key =
            key.is_empty() || key.split('.').any(|part| part.is_empty() || part == "..");
        if invalid_key || !proc_sys.join(key.replace('.', "/")).is_file() {
            return Err(PodError::invalid(field, value, "unknown sysctl"));
        }
        if value.is_empty() || value.contains('\n') {
            return Err(PodError::invalid(
                field,
                value,
                "a sysctl value is one non-empty line",
            ));
        }
        valid.insert(key, value.clone());
    }
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fake_proc_sys() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in [
            "net/ipv4/ip_forward",
            "net/ipv4/ping_group_range",
            "kernel/shmmax",
            "fs/mqueue/msg_max",
            "kernel/hostname",
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, "0").expect("write");
        }
        dir
    }

    #[test]
    fn namespaced_sysctls_of_owned_namespaces_pass_and_are_normalised() {
        let proc_sys = fake_proc_sys();
        let sysctls = map(&[
            ("net/ipv4/ip_forward", "1"),
            ("kernel.shmmax", "100"),
            ("fs.mqueue.msg_max", "20"),
        ]);
        let valid = validate(
            &sysctls,
            NamespaceMode::Pod,
            NamespaceMode::Pod,
            proc_sys.path(),
        )
        .expect("valid");
        assert_eq!(
            valid,
            map(&[
                ("net.ipv4.ip_forward", "1"),
                ("kernel.shmmax", "100"),
                ("fs.mqueue.msg_max", "20")
            ])
        );
    }

    #[test]
    fn refusals_name_the_sysctl() {
        let proc_sys = fake_proc_sys();
        let cases = [
            (
                ("kernel.hostname", "x"),
                NamespaceMode::Pod,
                NamespaceMode::Pod,
                "not a namespaced",
            ),
            (
                ("vm.swappiness", "1"),
                NamespaceMode::Pod,
                NamespaceMode::Pod,
                "not a namespaced",
            ),
            (
                ("net.ipv4.ip_forward", "1"),
                NamespaceMode::Node,
                NamespaceMode::Pod,
                "network namespace",
            ),
            (
                ("kernel.shmmax", "1"),
                NamespaceMode::Pod,
                NamespaceMode::Node,
                "IPC namespace",
            ),
            (
                ("net.ipv4.no_such_thing", "1"),
                NamespaceMode::Pod,
                NamespaceMode::Pod,
                "unknown sysctl",
            ),
            (
                ("net..ipv4", "1"),
                NamespaceMode::Pod,
                NamespaceMode::Pod,
                "unknown sysctl",
            ),
            (
                ("net.ipv4.ip_forward", "1\n2"),
                NamespaceMode::Pod,
                NamespaceMode::Pod,
                "one non-empty line",
            ),
        ];
        for ((key, value), network, ipc, reason) in cases {
            let error = validate(&map(&[(key, value)]), network, ipc, proc_sys.path())
                .expect_err(key)
                .to_string();
            assert!(
                error.contains(key) && error.contains(reason),
                "{key}: {error}"
            );
        }
    }
}
