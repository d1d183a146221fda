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
        if let Some(reason) = value_error(&key, value) {
            return Err(PodError::invalid(field, value, reason));
        }
        valid.insert(key, value.clone());
    }
    Ok(valid)
}

/// What the kernel takes in a sysctl whose format is known (integers, in
/// a range where the kernel has one), so a value it would refuse inside
/// the pod is refused here, naming the sysctl. Others go through as
/// given.
enum Format {
    /// `count` whitespace-separated integers.
    Integers(usize),
    /// One integer in this range.
    Range(i64, i64),
}

/// The formats kernel/ipc, ipc/mq_sysctl.c and net/ipv4 give them.
fn format_of(key: &str) -> Option<Format> {
    // fs/mqueue: HARD_MSGMAX and HARD_MSGSIZEMAX bound what may be set.
    const HARD_MSGMAX: i64 = 65_536;
    const HARD_MSGSIZEMAX: i64 = 16 * 1024 * 1024;
    let forwarding = |family: &str| {
        key.strip_prefix(family)
            .and_then(|rest| rest.strip_suffix(".forwarding"))
            .is_some_and(|interface| !interface.contains('.'))
    };
    Some(match key {
        "fs.mqueue.msg_max" | "fs.mqueue.msg_default" => Format::Range(1, HARD_MSGMAX),
        "fs.mqueue.msgsize_max" | "fs.mqueue.msgsize_default" => {
            Format::Range(128, HARD_MSGSIZEMAX)
        }
        "fs.mqueue.queues_max" => Format::Range(0, i64::from(i32::MAX)),
        "kernel.sem" => Format::Integers(4),
        "kernel.shmall" | "kernel.shmmax" | "kernel.shmmni" | "kernel.msgmax" | "kernel.msgmnb"
        | "kernel.msgmni" => Format::Integers(1),
        "kernel.shm_rmid_forced" => Format::Range(0, 1),
        "net.ipv4.ip_local_port_range" | "net.ipv4.ping_group_range" => Format::Integers(2),
        "net.ipv4.tcp_mem" | "net.ipv4.udp_mem" | "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem" => {
            Format::Integers(3)
        }
        "net.ipv4.ip_unprivileged_port_start" => Format::Range(0, 65_535),
        "net.ipv4.ip_forward"
        | "net.ipv4.tcp_syncookies"
        | "net.ipv4.tcp_keepalive_time"
        | "net.ipv4.tcp_keepalive_intvl"
        | "net.ipv4.tcp_keepalive_probes"
        | "net.ipv4.tcp_fin_timeout" => Format::Integers(1),
        _ if forwarding("net.ipv4.conf.") || forwarding("net.ipv6.conf.") => Format::Integers(1),
        _ => return None,
    })
}

/// Why the kernel would refuse `value` for `key`, if its format is known.
fn value_error(key: &str, value: &str) -> Option<String> {
    let integers = |count: usize| {
        let words: Vec<&str> = value.split_whitespace().collect();
        let all_integers = words
            .iter()
            .all(|w| w.parse::<i64>().is_ok() || w.parse::<u64>().is_ok());
        (words.len() != count || !all_integers).then(|| match count {
            1 => "must be an integer".to_string(),
            n => format!("must be {n} integers separated by spaces"),
        })
    };
    match format_of(key)? {
        Format::Integers(count) => integers(count),
        Format::Range(min, max) => match value.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => None,
            _ => Some(format!("must be an integer from {min} to {max}")),
        },
    }
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
    fn values_of_known_formats_are_checked() {
        for (key, value) in [
            ("kernel.sem", "250 32000 32 128"),
            ("net.ipv4.tcp_mem", "1 2 3"),
            ("net.ipv4.ping_group_range", "0\t2147483647"),
            ("kernel.shmmax", "18446744073709551615"),
            ("net.ipv4.conf.eth0.forwarding", "1"),
            ("net.ipv4.tcp_congestion_control", "reno"),
        ] {
            assert_eq!(value_error(key, value), None, "{key}={value}");
        }
        for (key, value) in [
            ("kernel.sem", "250 32000"),
            ("net.ipv4.tcp_mem", "1 2 x"),
            ("net.ipv4.conf.all.forwarding", "yes"),
            ("fs.mqueue.msgsize_max", "1"),
            ("kernel.shm_rmid_forced", "2"),
        ] {
            assert!(value_error(key, value).is_some(), "{key}={value}");
        }
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
                ("net.ipv4.ip_forward", "junk"),
                NamespaceMode::Pod,
                NamespaceMode::Pod,
                "must be an integer",
            ),
            (
                ("fs.mqueue.msg_max", "2000000000"),
                NamespaceMode::Pod,
                NamespaceMode::Pod,
                "from 1 to 65536",
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
