//! CRI's `PodSandboxConfig` → a validated [`PodSpec`] for `pod-sandbox`.
//!
//! Every refusal names the request field (`config.metadata.uid`,
//! `config.linux.security_context.namespace_options.userns_options.uids`).
//! The pod controller ([`crate::pods`]) records the config and builds what
//! this returns, as the container controller does with
//! [`crate::container_config`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use pod_sandbox::{DnsConfig, NamespaceMode, PodSpec, PortMapping};
use proto::cri;

use crate::error::CridError;

/// CRI's pod config → a validated [`PodSpec`]; `cgroups` says what a
/// `cgroup_parent` must look like (a path or a systemd slice).
pub fn translate(
    id: &str,
    config: &cri::PodSandboxConfig,
    cgroups: &pod_sandbox::Cgroups,
) -> Result<PodSpec, CridError> {
    let metadata = config
        .metadata
        .as_ref()
        .ok_or_else(|| CridError::invalid("config.metadata", "<unset>", "is required"))?;
    for (field, value) in [
        ("config.metadata.name", &metadata.name),
        ("config.metadata.namespace", &metadata.namespace),
        ("config.metadata.uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(CridError::invalid(field, value, "is required"));
        }
        // They go into CNI_ARGS (';'-separated, passed as C strings).
        if value.contains(['\0', ';']) {
            return Err(CridError::invalid(
                field,
                value,
                "must not contain NUL or ';'",
            ));
        }
        if value.contains('_') && field == "config.metadata.uid" {
            // '_' separates the parts of the reserved name.
            return Err(CridError::invalid(field, value, "must not contain '_'"));
        }
    }
    if !config.log_directory.is_empty() && !Path::new(&config.log_directory).is_absolute() {
        return Err(CridError::invalid(
            "config.log_directory",
            &config.log_directory,
            "must be an absolute path",
        ));
    }
    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.clone().unwrap_or_default();
    let options = security.namespace_options.clone().unwrap_or_default();
    let mode = |field: &'static str,
                value: i32,
                allowed: &[NamespaceMode]|
     -> Result<NamespaceMode, CridError> {
        let mode = match cri::NamespaceMode::try_from(value) {
            Ok(cri::NamespaceMode::Pod) => NamespaceMode::Pod,
            Ok(cri::NamespaceMode::Container) => NamespaceMode::Container,
            Ok(cri::NamespaceMode::Node) => NamespaceMode::Node,
            _ => {
                return Err(CridError::invalid(
                    field,
                    value.to_string(),
                    "not a namespace mode a pod can have",
                ));
            }
        };
        if allowed.contains(&mode) {
            Ok(mode)
        } else {
            Err(CridError::invalid(
                field,
                format!("{mode:?}"),
                "not a namespace mode a pod can have",
            ))
        }
    };
    let pod_or_node = [NamespaceMode::Pod, NamespaceMode::Node];
    let network = mode(
        "config.linux.security_context.namespace_options.network",
        options.network,
        &pod_or_node,
    )?;
    let ipc = mode(
        "config.linux.security_context.namespace_options.ipc",
        options.ipc,
        &pod_or_node,
    )?;
    let pid = mode(
        "config.linux.security_context.namespace_options.pid",
        options.pid,
        &[
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Node,
        ],
    )?;
    let user_namespace = user_namespace(options.userns_options.as_ref())?;
    if let Some(mappings) = &user_namespace {
        for (kind, file, mapping) in [
            ("uids", "/etc/subuid", mappings.uids),
            ("gids", "/etc/subgid", mappings.gids),
        ] {
            // Absent or unreadable: no ranges named, kubelet's default.
            let content = std::fs::read_to_string(file).unwrap_or_default();
            within_subordinate_ids(kind, file, &mapping, &content)?;
        }
        if security.privileged {
            // A privileged container gets the host's device nodes, which
            // cannot be made in a user namespace (as kubelet refuses it).
            return Err(CridError::invalid(
                "config.linux.security_context.privileged",
                "true",
                "a pod with a user namespace of its own cannot be privileged",
            ));
        }
        for (field, mode) in [("network", network), ("ipc", ipc), ("pid", pid)] {
            if mode == NamespaceMode::Node {
                return Err(CridError::invalid(
                    format!("{USERNS_FIELD}.mode"),
                    "POD",
                    format!(
                        "a pod user namespace cannot be combined with namespace_options.{field} NODE"
                    ),
                ));
            }
        }
    }

    let hostname = if network == NamespaceMode::Node {
        nix::unistd::gethostname()
            .map_err(|e| {
                CridError::FailedPrecondition(format!("cannot read the node's hostname: {e}"))
            })?
            .to_string_lossy()
            .into_owned()
    } else if config.hostname.is_empty() {
        metadata.name.chars().take(63).collect()
    } else {
        config.hostname.clone()
    };
    pod_sandbox::files::validate_hostname(&hostname)?;

    let dns = config.dns_config.as_ref().map(|dns| DnsConfig {
        servers: dns.servers.clone(),
        searches: dns.searches.clone(),
        options: dns.options.clone(),
    });
    if let Some(dns) = &dns {
        pod_sandbox::files::validate_dns(dns)?;
    }

    let mut port_mappings = Vec::new();
    for (index, mapping) in config.port_mappings.iter().enumerate() {
        let field = |name: &str| format!("config.port_mappings[{index}].{name}");
        let port = |name: &str, value: i32, allow_zero: bool| -> Result<u16, CridError> {
            u16::try_from(value)
                .ok()
                .filter(|&p| allow_zero || p > 0)
                .ok_or_else(|| {
                    CridError::Pod(pod_sandbox::PodError::invalid(
                        field(name),
                        value.to_string(),
                        "not a port number",
                    ))
                })
        };
        let protocol = match cri::Protocol::try_from(mapping.protocol) {
            Ok(protocol) => protocol.as_str_name().to_string(),
            Err(_) => {
                return Err(pod_sandbox::PodError::invalid(
                    field("protocol"),
                    mapping.protocol.to_string(),
                    "unknown protocol",
                )
                .into());
            }
        };
        if !mapping.host_ip.is_empty() && mapping.host_ip.parse::<IpAddr>().is_err() {
            return Err(pod_sandbox::PodError::invalid(
                field("host_ip"),
                &mapping.host_ip,
                "not an IP address",
            )
            .into());
        }
        port_mappings.push(PortMapping {
            protocol,
            container_port: port("container_port", mapping.container_port, false)?,
            host_port: port("host_port", mapping.host_port, true)?,
            host_ip: mapping.host_ip.clone(),
        });
    }

    let requested: BTreeMap<String, String> = linux
        .sysctls
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let sysctls = pod_sandbox::sysctl::validate(&requested, network, ipc, Path::new("/proc/sys"))?;

    let cgroup_parent = Some(linux.cgroup_parent.clone()).filter(|parent| !parent.is_empty());
    if let Some(parent) = &cgroup_parent {
        cgroups.validate_parent(parent)?;
    }

    Ok(PodSpec {
        id: id.to_string(),
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        hostname,
        network,
        ipc,
        pid,
        dns,
        port_mappings,
        sysctls,
        cgroup_parent,
        annotations: config
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        shm_size_bytes: pod_sandbox::DEFAULT_SHM_BYTES,
        user_namespace,
    })
}

pub(crate) const USERNS_FIELD: &str =
    "config.linux.security_context.namespace_options.userns_options";

/// The pod's user namespace, checked: None for the node's (NODE, or no
/// options at all); the mappings for a pod's own (POD). CONTAINER and
/// TARGET are refused, and so is every mapping kubelet would never send
/// (see [`id_mapping`]).
fn user_namespace(
    options: Option<&cri::UserNamespace>,
) -> Result<Option<proto::monitor::UserNamespaceMappings>, CridError> {
    let Some(options) = options else {
        return Ok(None);
    };
    let mode_field = format!("{USERNS_FIELD}.mode");
    match cri::NamespaceMode::try_from(options.mode) {
        Ok(cri::NamespaceMode::Node) => {
            if options.uids.is_empty() && options.gids.is_empty() {
                Ok(None)
            } else {
                Err(CridError::invalid(
                    mode_field,
                    "NODE",
                    "uid and gid mappings are only for mode POD",
                ))
            }
        }
        Ok(cri::NamespaceMode::Pod) => Ok(Some(proto::monitor::UserNamespaceMappings {
            uids: id_mapping("uids", &options.uids)?,
            gids: id_mapping("gids", &options.gids)?,
        })),
        Ok(mode @ (cri::NamespaceMode::Container | cri::NamespaceMode::Target)) => {
            Err(CridError::invalid(
                mode_field,
                mode.as_str_name(),
                "a pod's user namespace is the node's (NODE) or the pod's own (POD)",
            ))
        }
        Err(_) => Err(CridError::invalid(
            mode_field,
            options.mode.to_string(),
            "not a namespace mode",
        )),
    }
}

/// One kind's mapping of a pod user namespace: exactly one range (so no
/// two can overlap), mapping container id 0 (the pod's root), not empty,
/// and inside the 32-bit id space on both sides.
fn id_mapping(
    kind: &str,
    mappings: &[cri::IdMapping],
) -> Result<proto::monitor::IdMapping, CridError> {
    let field = format!("{USERNS_FIELD}.{kind}");
    let [mapping] = mappings else {
        return Err(CridError::invalid(
            field,
            format!("{} ranges", mappings.len()),
            "must be exactly one range",
        ));
    };
    let mapping = proto::monitor::IdMapping {
        container_id: mapping.container_id,
        host_id: mapping.host_id,
        length: mapping.length,
    };
    let value = format!(
        "container_id {} host_id {} length {}",
        mapping.container_id, mapping.host_id, mapping.length
    );
    let end = |start: u32| u64::from(start) + u64::from(mapping.length);
    if mapping.container_id != 0 {
        Err(CridError::invalid(
            format!("{field}[0].container_id"),
            value,
            "must be 0: the range must map the pod's root",
        ))
    } else if mapping.length == 0 {
        Err(CridError::invalid(
            format!("{field}[0].length"),
            value,
            "must not be 0",
        ))
    } else if end(mapping.host_id) > 1 << 32 {
        Err(CridError::invalid(
            format!("{field}[0].host_id"),
            value,
            "the range ends beyond the largest id (2^32 - 1)",
        ))
    } else {
        Ok(mapping)
    }
}

/// The user whose subordinate ids kubelet gives pods (it asks getsubids).
const KUBELET_USER: &str = "kubelet";

/// The `kubelet` user's subordinate id ranges in `content` (the text of
/// /etc/subuid or /etc/subgid: `user:start:count` lines), as (start, end).
fn subordinate_ranges(content: &str) -> Vec<(u64, u64)> {
    content
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split(':');
            let (user, start, count) = (fields.next()?, fields.next()?, fields.next()?);
            let (start, count) = (start.parse::<u64>().ok()?, count.parse::<u64>().ok()?);
            (user == KUBELET_USER).then_some((start, start + count))
        })
        .collect()
}

/// Where the node names subordinate ids for kubelet, a pod's range must
/// lie inside them (they are what kubelet hands out, and nothing else on
/// the node uses them); where it names none, kubelet's default applies
/// and only the 32-bit bound is checked (by [`id_mapping`]).
fn within_subordinate_ids(
    kind: &str,
    file: &str,
    mapping: &proto::monitor::IdMapping,
    content: &str,
) -> Result<(), CridError> {
    let ranges = subordinate_ranges(content);
    let (start, end) = (
        u64::from(mapping.host_id),
        u64::from(mapping.host_id) + u64::from(mapping.length),
    );
    if ranges.is_empty() || ranges.iter().any(|&(from, to)| from <= start && end <= to) {
        return Ok(());
    }
    let named = ranges
        .iter()
        .map(|(from, to)| format!("{from}-{}", to - 1))
        .collect::<Vec<_>>()
        .join(", ");
    Err(CridError::invalid(
        format!("{USERNS_FIELD}.{kind}[0].host_id"),
        format!("host ids {start}-{}", end - 1),
        format!("outside the {KUBELET_USER} user's subordinate ids in {file} ({named})"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
        cri::IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn pod_mode(uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::UserNamespace {
        cri::UserNamespace {
            mode: i32::from(cri::NamespaceMode::Pod),
            uids,
            gids,
        }
    }

    #[test]
    fn a_range_must_lie_in_kubelets_subordinate_ids_where_the_node_names_them() {
        let mapping = |host_id, length| proto::monitor::IdMapping {
            container_id: 0,
            host_id,
            length,
        };
        let file =
            "root:100000:65536\nkubelet:65536:131072\n# kubelet:0:1\nkubelet:1000000:65536\n";
        let check = |m| within_subordinate_ids("uids", "/etc/subuid", &m, file);
        assert!(check(mapping(65536, 65536)).is_ok());
        assert!(check(mapping(131072, 65536)).is_ok());
        assert!(check(mapping(1000000, 65536)).is_ok());
        // Straddling the end of a range, and past every range.
        for outside in [mapping(131073, 65536), mapping(300000, 1)] {
            let error = check(outside).expect_err("outside").to_string();
            assert!(error.contains("userns_options.uids[0].host_id"), "{error}");
            assert!(error.contains("65536-196607, 1000000-1065535"), "{error}");
        }
        // A node that names none for kubelet: kubelet's default applies.
        let none =
            within_subordinate_ids("gids", "/etc/subgid", &mapping(1000, 100000), "root:1:2\n");
        assert!(none.is_ok());
    }

    fn refusal(options: &cri::UserNamespace) -> String {
        match user_namespace(Some(options)) {
            Err(error @ CridError::InvalidArgument { .. }) => error.to_string(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn kubelets_mappings_are_taken() {
        let options = pod_mode(vec![range(0, 65536, 65536)], vec![range(0, 131072, 65536)]);
        let mappings = user_namespace(Some(&options)).expect("valid").expect("POD");
        assert_eq!(mappings.uids.host_id, 65536);
        assert_eq!(mappings.gids.host_id, 131072);
        assert_eq!(mappings.uids.map_line(), "0 65536 65536\n");
        // critest's mapping is not 65536-aligned: still fine.
        let options = pod_mode(vec![range(0, 1000, 100000)], vec![range(0, 1000, 100000)]);
        assert!(user_namespace(Some(&options)).expect("valid").is_some());
        // Up to the very last id.
        let options = pod_mode(
            vec![range(0, u32::MAX - 65535, 65536)],
            vec![range(0, 65536, 65536)],
        );
        assert!(user_namespace(Some(&options)).expect("valid").is_some());
    }

    #[test]
    fn node_mode_and_no_options_are_the_nodes_namespace() {
        assert!(user_namespace(None).expect("none").is_none());
        let node = cri::UserNamespace {
            mode: i32::from(cri::NamespaceMode::Node),
            ..Default::default()
        };
        assert!(user_namespace(Some(&node)).expect("node").is_none());
        let node_with_mappings = cri::UserNamespace {
            mode: i32::from(cri::NamespaceMode::Node),
            uids: vec![range(0, 65536, 65536)],
            gids: vec![],
        };
        assert!(refusal(&node_with_mappings).contains("userns_options.mode"));
    }

    #[test]
    fn bad_modes_and_mappings_are_refused_naming_the_field() {
        for mode in [cri::NamespaceMode::Container, cri::NamespaceMode::Target] {
            let options = cri::UserNamespace {
                mode: i32::from(mode),
                ..Default::default()
            };
            let message = refusal(&options);
            assert!(message.contains("userns_options.mode"), "{message}");
            assert!(message.contains(mode.as_str_name()), "{message}");
        }
        let unknown = cri::UserNamespace {
            mode: 9,
            ..Default::default()
        };
        assert!(refusal(&unknown).contains("userns_options.mode"));
        let good = || vec![range(0, 65536, 65536)];
        // critest's two cases: two (overlapping) ranges, and no root.
        let two = vec![range(0, 1000, 100000), range(0, 2000, 100000)];
        assert!(refusal(&pod_mode(two.clone(), two)).contains("userns_options.uids"));
        let rootless = vec![range(1, 1000, 100000)];
        assert!(
            refusal(&pod_mode(good(), rootless)).contains("userns_options.gids[0].container_id")
        );
        assert!(refusal(&pod_mode(vec![], good())).contains("userns_options.uids"));
        assert!(
            refusal(&pod_mode(vec![range(0, 65536, 0)], good()))
                .contains("userns_options.uids[0].length")
        );
        assert!(
            refusal(&pod_mode(good(), vec![range(0, u32::MAX, 2)]))
                .contains("userns_options.gids[0].host_id")
        );
    }
}
