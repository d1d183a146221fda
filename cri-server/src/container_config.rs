//! CRI's `ContainerConfig` (plus the pod it goes into) → a validated
//! [`ContainerSpec`], and CRI's container resources both ways.
//!
//! Every refusal names the request field, with its index where it has one
//! (`config.mounts[2].host_path`). Requests for what crid cannot do yet
//! (devices, image volumes, ID-mapped mounts, ambient capabilities) are
//! FailedPrecondition rather than silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pod_sandbox::NamespaceMode;
use proto::cri;
use proto::monitor::LogFile;
use proto::monitor::UserNamespaceMappings;
use runtime::spec::{
    ContainerSpec, MountSpec, PidMode, PodFiles, PodNamespaces, PodUserNamespace, Propagation,
    Resources, SeccompProfile, SharedNamespace, SupplementalGroupsPolicy,
};

use crate::error::CridError;
use crate::objects::PodRecord;

const SECURITY: &str = "config.linux.security_context";

/// The field prefix [`resources`] names: `UpdateContainerResourcesRequest.linux`.
const UPDATE_RESOURCES: &str = "linux";

fn unsupported(field: &str, what: &str) -> CridError {
    CridError::FailedPrecondition(format!("{field}: {what} not supported by crid yet"))
}

/// Translates and validates a CreateContainer request's config for the pod
/// `pod` whose state dir is `pod_dir`. `target_pid_ns` is the PID namespace
/// of the container `namespace_options.target_id` names, which the caller
/// resolves. `cgroups_path` is left for the caller.
pub fn translate(
    config: &cri::ContainerConfig,
    pod: &PodRecord,
    pod_dir: &Path,
    target_pid_ns: Option<PathBuf>,
) -> Result<ContainerSpec, CridError> {
    let metadata = config
        .metadata
        .as_ref()
        .ok_or_else(|| CridError::invalid("config.metadata", "<unset>", "is required"))?;
    if metadata.name.is_empty() {
        return Err(CridError::invalid(
            "config.metadata.name",
            &metadata.name,
            "is required",
        ));
    }
    if config.image.as_ref().is_none_or(|i| i.image.is_empty()) {
        return Err(CridError::invalid("config.image.image", "", "is required"));
    }
    if !config.devices.is_empty() {
        return Err(unsupported("config.devices", "devices are"));
    }
    if !config.cdi_devices.is_empty() {
        return Err(unsupported("config.CDI_devices", "CDI devices are"));
    }

    // The init execs these as C strings: a NUL would cut them short (or
    // fail the start with nothing to say why).
    for (list, values) in [("command", &config.command), ("args", &config.args)] {
        if let Some((i, value)) = values.iter().enumerate().find(|(_, v)| v.contains('\0')) {
            return Err(CridError::invalid(
                format!("config.{list}[{i}]"),
                value,
                "must contain no NUL",
            ));
        }
    }
    if config.working_dir.contains('\0') {
        return Err(CridError::invalid(
            "config.working_dir",
            &config.working_dir,
            "must contain no NUL",
        ));
    }

    let mut env = Vec::with_capacity(config.envs.len());
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains(['=', '\0']) {
            return Err(CridError::invalid(
                format!("config.envs[{i}].key"),
                &kv.key,
                "must be non-empty and contain no '=' and no NUL",
            ));
        }
        // Bytes, passed on as they are (kubelet passes Secret data that
        // need not be UTF-8); execve takes C strings, so no NUL.
        if kv.value.contains(&0) {
            return Err(CridError::invalid(
                format!("config.envs[{i}].value"),
                String::from_utf8_lossy(&kv.value),
                "must contain no NUL",
            ));
        }
        env.push((kv.key.clone(), kv.value.clone()));
    }

    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    let pod_privileged = pod
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if security.privileged && !pod_privileged {
        // CRI: a privileged container needs a privileged sandbox.
        return Err(CridError::FailedPrecondition(format!(
            "{SECURITY}.privileged: the pod sandbox is not privileged"
        )));
    }
    let capabilities = security.capabilities.clone().unwrap_or_default();
    for (list, names) in [
        ("add_capabilities", &capabilities.add_capabilities),
        ("drop_capabilities", &capabilities.drop_capabilities),
        (
            "add_ambient_capabilities",
            &capabilities.add_ambient_capabilities,
        ),
    ] {
        if let Some((i, name)) = names
            .iter()
            .enumerate()
            .find(|(_, n)| !runtime::spec::valid_capability_name(n))
        {
            return Err(CridError::invalid(
                format!("{SECURITY}.capabilities.{list}[{i}]"),
                name,
                runtime::spec::CAPABILITY_REASON,
            ));
        }
    }
    let id = |field: &str, value: i64| -> Result<i64, CridError> {
        // u32::MAX is (uid_t)-1, "no change" to the kernel: not an id.
        if (0..i64::from(u32::MAX)).contains(&value) {
            Ok(value)
        } else {
            Err(CridError::invalid(
                format!("{SECURITY}.{field}"),
                value.to_string(),
                "not a valid user or group id",
            ))
        }
    };
    let run_as_user = security
        .run_as_user
        .map(|v| id("run_as_user", v.value))
        .transpose()?;
    let run_as_group = security
        .run_as_group
        .map(|v| id("run_as_group", v.value))
        .transpose()?;
    let supplemental_groups = security
        .supplemental_groups
        .iter()
        .enumerate()
        .map(|(i, &g)| id(&format!("supplemental_groups[{i}]"), g))
        .collect::<Result<Vec<_>, _>>()?;
    let supplemental_groups_policy =
        match cri::SupplementalGroupsPolicy::try_from(security.supplemental_groups_policy) {
            Ok(cri::SupplementalGroupsPolicy::Merge) => SupplementalGroupsPolicy::Merge,
            Ok(cri::SupplementalGroupsPolicy::Strict) => SupplementalGroupsPolicy::Strict,
            Err(_) => {
                return Err(CridError::invalid(
                    format!("{SECURITY}.supplemental_groups_policy"),
                    security.supplemental_groups_policy.to_string(),
                    "not Merge (0) or Strict (1)",
                ));
            }
        };
    let seccomp = seccomp(&security)?;
    let namespace_options = security.namespace_options.clone().unwrap_or_default();
    let namespaces = namespaces(&namespace_options, pod, pod_dir, target_pid_ns)?;

    let mut mounts = Vec::with_capacity(config.mounts.len());
    for (i, m) in config.mounts.iter().enumerate() {
        mounts.push(mount(i, m, pod.spec.user_namespace.as_ref())?);
    }

    let pod_files = PodFiles {
        hosts: Some(pod_dir.join(pod_sandbox::files::HOSTS_FILE)),
        resolv_conf: Some(pod_dir.join(pod_sandbox::files::RESOLV_FILE)),
        hostname: Some(pod_dir.join(pod_sandbox::files::HOSTNAME_FILE)),
        // Without a pod IPC namespace there is no pod tmpfs: the
        // container gets the default /dev/shm of its own.
        shm: (pod.spec.ipc == NamespaceMode::Pod).then(|| pod_sandbox::shm_path(pod_dir)),
    };

    let mut resources = match &linux.resources {
        Some(r) => resources_at(r, "config.linux.resources")?,
        None => Resources::default(),
    };
    // Always set, 0 included: unset, the container would inherit crid's
    // own (usually strongly negative) score, as containerd avoids too.
    resources.oom_score_adj = Some(resources.oom_score_adj.unwrap_or(0));

    let sorted = |m: &std::collections::HashMap<String, String>| -> BTreeMap<String, String> {
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    Ok(ContainerSpec {
        command: config.command.clone(),
        args: config.args.clone(),
        env,
        working_dir: config.working_dir.clone(),
        tty: config.tty,
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        readonly_rootfs: security.readonly_rootfs,
        privileged: security.privileged,
        no_new_privileges: security.no_new_privs,
        run_as_user,
        run_as_username: Some(security.run_as_username.clone()).filter(|u| !u.is_empty()),
        run_as_group,
        supplemental_groups,
        supplemental_groups_policy,
        mounts,
        hostname: pod.spec.hostname.clone(),
        namespaces,
        pod_files,
        cgroups_path: None,
        annotations: sorted(&config.annotations),
        add_capabilities: capabilities.add_capabilities,
        drop_capabilities: capabilities.drop_capabilities,
        add_ambient_capabilities: capabilities.add_ambient_capabilities,
        masked_paths: paths("masked_paths", &security.masked_paths)?,
        readonly_paths: paths("readonly_paths", &security.readonly_paths)?,
        seccomp,
        labels: sorted(&config.labels),
        resources,
    })
}

/// A masked or read-only path list: absolute paths inside the container.
fn paths(list: &str, paths: &[String]) -> Result<Vec<String>, CridError> {
    for (i, path) in paths.iter().enumerate() {
        if !runtime::spec::is_clean_absolute(Path::new(path)) {
            return Err(CridError::invalid(
                format!("{SECURITY}.{list}[{i}]"),
                path,
                "must be an absolute path without '..'",
            ));
        }
    }
    Ok(paths.to_vec())
}

/// `seccomp`, else the deprecated `seccomp_profile_path`, as containerd
/// reads them (with no default profile configured): an unset or empty
/// profile is unconfined; an explicit `seccomp` message of type
/// RuntimeDefault (proto's 0) is the runtime default.
fn seccomp(security: &cri::LinuxContainerSecurityContext) -> Result<SeccompProfile, CridError> {
    use cri::security_profile::ProfileType;
    let absolute = |field: String, path: &str| -> Result<SeccompProfile, CridError> {
        if runtime::spec::is_clean_absolute(Path::new(path)) {
            Ok(SeccompProfile::Localhost(path.into()))
        } else {
            Err(CridError::invalid(
                field,
                path,
                "must be an absolute path without '..' to a profile on the node",
            ))
        }
    };
    if let Some(profile) = &security.seccomp {
        return match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(SeccompProfile::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(SeccompProfile::Unconfined),
            Ok(ProfileType::Localhost) => absolute(
                format!("{SECURITY}.seccomp.localhost_ref"),
                &profile.localhost_ref,
            ),
            Err(_) => Err(CridError::invalid(
                format!("{SECURITY}.seccomp.profile_type"),
                profile.profile_type.to_string(),
                "not RuntimeDefault (0), Unconfined (1) or Localhost (2)",
            )),
        };
    }
    #[allow(deprecated)] // still sent by older kubelets
    let path = security.seccomp_profile_path.as_str();
    let field = || format!("{SECURITY}.seccomp_profile_path");
    match path {
        "" | "unconfined" => Ok(SeccompProfile::Unconfined),
        "runtime/default" | "docker/default" => Ok(SeccompProfile::RuntimeDefault),
        _ => match path.strip_prefix("localhost/") {
            Some(file) => absolute(field(), file),
            None => Err(CridError::invalid(
                field(),
                path,
                "not runtime/default, docker/default, unconfined or localhost/<absolute path>",
            )),
        },
    }
}

/// A pod namespace the container shares: the pinned one or the node's.
fn shared(mode: NamespaceMode, pod_dir: &Path, name: &str) -> Result<SharedNamespace, CridError> {
    match mode {
        NamespaceMode::Pod => Ok(SharedNamespace::Pod(pod_sandbox::namespace_path(
            pod_dir, name,
        ))),
        NamespaceMode::Node => Ok(SharedNamespace::Node),
        // pod_config::translate never records this; a record that has it is bad.
        NamespaceMode::Container => Err(CridError::FailedPrecondition(format!(
            "the pod's {name} namespace mode is Container, which pods cannot have"
        ))),
    }
}

/// Network, IPC and UTS follow the pod (as containerd: the container's own
/// options for them are not used); PID is the container's choice.
fn namespaces(
    options: &cri::NamespaceOption,
    pod: &PodRecord,
    pod_dir: &Path,
    target_pid_ns: Option<PathBuf>,
) -> Result<PodNamespaces, CridError> {
    let field = format!("{SECURITY}.namespace_options.pid");
    let pid = match cri::NamespaceMode::try_from(options.pid) {
        // POD is also what an unset option reads as (crictl's configs often
        // have none): it follows the pod. A pod without a PID namespace of
        // its own gives each container one; a node-PID pod, the node's.
        Ok(cri::NamespaceMode::Pod) => match pod.spec.pid {
            NamespaceMode::Container => PidMode::Container,
            NamespaceMode::Node => PidMode::Node,
            NamespaceMode::Pod => {
                if pod.sandbox.pause_pid <= 0 {
                    return Err(CridError::FailedPrecondition(format!(
                        "{field}: POD, but the pod has no running pause process"
                    )));
                }
                PidMode::Pod(PathBuf::from(format!(
                    "/proc/{}/ns/pid",
                    pod.sandbox.pause_pid
                )))
            }
        },
        Ok(cri::NamespaceMode::Container) => PidMode::Container,
        Ok(cri::NamespaceMode::Node) => PidMode::Node,
        Ok(cri::NamespaceMode::Target) => match target_pid_ns {
            Some(path) => PidMode::Target(path),
            None => {
                return Err(CridError::invalid(
                    format!("{SECURITY}.namespace_options.target_id"),
                    &options.target_id,
                    "must name a running container of this pod when pid is TARGET",
                ));
            }
        },
        Err(_) => {
            return Err(CridError::invalid(
                field,
                options.pid.to_string(),
                "not a namespace mode (POD, CONTAINER, NODE or TARGET)",
            ));
        }
    };
    let network = shared(pod.spec.network, pod_dir, "net")?;
    // The pod has its own UTS namespace exactly when it has its own network.
    let uts = shared(pod.spec.network, pod_dir, "uts")?;
    let user = match pod.spec.user_namespace {
        Some(mappings) => {
            if pod.sandbox.pause_pid <= 0 {
                return Err(CridError::FailedPrecondition(
                    "the pod has a user namespace of its own, but no running pause process".into(),
                ));
            }
            Some(PodUserNamespace {
                path: PathBuf::from(format!("/proc/{}/ns/user", pod.sandbox.pause_pid)),
                mappings,
            })
        }
        None => None,
    };
    Ok(PodNamespaces {
        network,
        ipc: shared(pod.spec.ipc, pod_dir, "ipc")?,
        uts,
        pid,
        user,
    })
}

fn mount(
    i: usize,
    m: &cri::Mount,
    user: Option<&UserNamespaceMappings>,
) -> Result<MountSpec, CridError> {
    let field = |name: &str| format!("config.mounts[{i}].{name}");
    let image_volume = is_image_volume(m);
    let idmapped = !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty();
    if idmapped {
        check_mount_mappings(i, m, user)?;
    }
    if image_volume {
        // Its host path is the image's read-only mount, made at create.
        if !m.host_path.is_empty() {
            return Err(CridError::invalid(
                field("host_path"),
                &m.host_path,
                "an image volume has no host path",
            ));
        }
        if !m.readonly {
            return Err(CridError::invalid(
                field("readonly"),
                "false",
                "image volumes are read-only",
            ));
        }
        if !runtime::spec::is_clean_relative(Path::new(&m.image_sub_path)) {
            return Err(CridError::invalid(
                field("image_sub_path"),
                &m.image_sub_path,
                "must be a path inside the image, relative and without '..'",
            ));
        }
    } else if !m.image_sub_path.is_empty() {
        return Err(CridError::invalid(
            field("image_sub_path"),
            &m.image_sub_path,
            "only an image volume has one",
        ));
    }
    let checked_paths: &[(&str, &String)] = if image_volume {
        &[("container_path", &m.container_path)]
    } else {
        &[
            ("container_path", &m.container_path),
            ("host_path", &m.host_path),
        ]
    };
    for &(name, path) in checked_paths {
        if !runtime::spec::is_clean_absolute(Path::new(path)) {
            return Err(CridError::invalid(
                field(name),
                path,
                "must be an absolute path without '..'",
            ));
        }
    }
    if let Some(reason) = forbidden_destination(Path::new(&m.container_path)) {
        return Err(CridError::invalid(
            field("container_path"),
            &m.container_path,
            reason,
        ));
    }
    let propagation = match cri::MountPropagation::try_from(m.propagation) {
        Ok(cri::MountPropagation::PropagationPrivate) => Propagation::Private,
        Ok(cri::MountPropagation::PropagationHostToContainer) => Propagation::RSlave,
        Ok(cri::MountPropagation::PropagationBidirectional) => Propagation::RShared,
        Err(_) => {
            return Err(CridError::invalid(
                field("propagation"),
                m.propagation.to_string(),
                "not a mount propagation (PRIVATE, HOST_TO_CONTAINER or BIDIRECTIONAL)",
            ));
        }
    };
    if m.recursive_read_only && !m.readonly {
        return Err(CridError::invalid(
            field("recursive_read_only"),
            "true",
            "needs readonly",
        ));
    }
    if m.recursive_read_only && propagation != Propagation::Private {
        return Err(CridError::invalid(
            field("recursive_read_only"),
            "true",
            "needs PROPAGATION_PRIVATE",
        ));
    }
    if m.selinux_relabel {
        tracing::info!(
            host_path = %m.host_path,
            "{}: SELinux is not enabled on this host; not relabelling",
            field("selinux_relabel")
        );
    }
    Ok(MountSpec {
        container_path: PathBuf::from(&m.container_path),
        host_path: PathBuf::from(&m.host_path),
        readonly: m.readonly,
        propagation,
        recursive_read_only: m.recursive_read_only,
        idmapped,
    })
}

/// kubelet gives a user-namespaced pod's volumes the pod's own mappings,
/// and crid idmaps them through the pod's namespace: any other mapping
/// (or one in a pod without a namespace of its own) cannot be made.
fn check_mount_mappings(
    i: usize,
    m: &cri::Mount,
    user: Option<&UserNamespaceMappings>,
) -> Result<(), CridError> {
    let Some(user) = user else {
        return Err(CridError::invalid(
            format!("config.mounts[{i}].uidMappings"),
            format!("{} ranges", m.uid_mappings.len()),
            "the pod has no user namespace of its own to map the mount through",
        ));
    };
    let is_pods = |mappings: &[cri::IdMapping], pods: proto::monitor::IdMapping| {
        matches!(mappings, [only] if (only.container_id, only.host_id, only.length)
            == (pods.container_id, pods.host_id, pods.length))
    };
    for (name, mappings, pods) in [
        ("uidMappings", &m.uid_mappings, user.uids),
        ("gidMappings", &m.gid_mappings, user.gids),
    ] {
        if !is_pods(mappings, pods) {
            let value = mappings
                .iter()
                .map(|r| format!("{}:{}:{}", r.container_id, r.host_id, r.length))
                .collect::<Vec<_>>()
                .join(",");
            return Err(CridError::invalid(
                format!("config.mounts[{i}].{name}"),
                value,
                format!(
                    "must be the pod's user namespace mapping ({}:{}:{})",
                    pods.container_id, pods.host_id, pods.length
                ),
            ));
        }
    }
    Ok(())
}

/// A CRI mount of an image's content (Kubernetes image volumes) rather
/// than of a host path.
pub fn is_image_volume(m: &cri::Mount) -> bool {
    m.image
        .as_ref()
        .is_some_and(|image| !image.image.is_empty())
}

/// Files of /proc a bind may cover, as runc allows (lxcfs binds its
/// views of these); anything else at or beneath /proc would hide or
/// replace the container's procfs, which its setup needs.
const PROC_BIND_DESTINATIONS: [&str; 10] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Why a mount may not go at `destination` (a clean absolute path), as
/// runc refuses it: over the root itself, or over /proc.
fn forbidden_destination(destination: &Path) -> Option<&'static str> {
    if destination == Path::new("/") {
        return Some("must not be the container's root");
    }
    let allowed = PROC_BIND_DESTINATIONS
        .iter()
        .any(|file| destination == Path::new(file));
    (destination.starts_with("/proc") && !allowed).then_some(
        "must not be /proc or beneath it (but for the files runc allows, as /proc/cpuinfo)",
    )
}

/// Where the container's log goes: `config.log_path` beneath the pod's
/// `log_directory`; none (output dropped) when either is empty. kubelet
/// sends `<container name>/<restart count>.log`; anything that could name a
/// file outside the directory is refused here, and the monitor resolves
/// the rest beneath the directory without following symlinks.
pub fn log_file(
    config: &cri::ContainerConfig,
    pod: &PodRecord,
) -> Result<Option<LogFile>, CridError> {
    let path = &config.log_path;
    // Checked even without a log directory: the request is wrong either way.
    if !path.is_empty() && !path.split('/').all(is_plain_name) {
        return Err(CridError::invalid(
            "config.log_path",
            path,
            "must be a relative path of names without '..', '.', empty names or NUL",
        ));
    }
    let directory = &pod.config.log_directory;
    Ok(
        (!directory.is_empty() && !path.is_empty()).then(|| LogFile {
            directory: PathBuf::from(directory),
            relative: PathBuf::from(path),
        }),
    )
}

/// A file name that stays in its directory: `/` was split on, so an
/// absolute path or `a//b` shows up as an empty name.
fn is_plain_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && !name.contains('\0')
}

/// CRI's resources → [`Resources`], naming fields as in
/// `UpdateContainerResourcesRequest` (`linux.memory_limit_in_bytes`).
pub fn resources(r: &cri::LinuxContainerResources) -> Result<Resources, CridError> {
    resources_at(r, UPDATE_RESOURCES)
}

/// Whether `s` is a cpuset list such as `0-3,8,10-11`.
fn is_cpu_list(s: &str) -> bool {
    let number = |n: &str| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit());
    s.split(',').all(|item| match item.split_once('-') {
        Some((lo, hi)) => {
            number(lo) && number(hi) && lo.parse::<u32>().ok() <= hi.parse::<u32>().ok()
        }
        None => number(item),
    })
}

/// A hugepage size as kubelet writes it (`2MB`, `1GB`, `64KB`).
fn is_page_size(s: &str) -> bool {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && ["KB", "MB", "GB", "TB", "PB"].contains(&&s[digits..])
}

fn resources_at(r: &cri::LinuxContainerResources, prefix: &str) -> Result<Resources, CridError> {
    let field = |name: &str| format!("{prefix}.{name}");
    let bad = |name: &str, value: String, reason: &str| {
        CridError::invalid(field(name), value, reason.to_owned())
    };
    // 0 is "unset" everywhere in CRI's resources.
    let nonzero = |v: i64| (v != 0).then_some(v);
    let unsigned = |name: &str, v: i64| -> Result<Option<u64>, CridError> {
        match u64::try_from(v) {
            Ok(u) => Ok((u != 0).then_some(u)),
            Err(_) => Err(bad(name, v.to_string(), "must not be negative")),
        }
    };
    // -1 is "no limit" to the kernel (and runc); lower makes no sense.
    let limit_or_unlimited = |name: &str, v: i64| -> Result<Option<i64>, CridError> {
        if v < -1 {
            Err(bad(
                name,
                v.to_string(),
                "must be positive, 0 (unset) or -1 (unlimited)",
            ))
        } else {
            Ok(nonzero(v))
        }
    };
    if r.memory_limit_in_bytes < 0 {
        return Err(bad(
            "memory_limit_in_bytes",
            r.memory_limit_in_bytes.to_string(),
            "must not be negative",
        ));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(bad(
            "oom_score_adj",
            r.oom_score_adj.to_string(),
            "must be between -1000 and 1000",
        ));
    }
    for (name, value) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        if !value.is_empty() && !is_cpu_list(value) {
            return Err(bad(name, value.clone(), "not a list such as 0-3,8"));
        }
    }
    let mut hugepage_limits = Vec::with_capacity(r.hugepage_limits.len());
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        if !is_page_size(&h.page_size) {
            return Err(bad(
                &format!("hugepage_limits[{i}].page_size"),
                h.page_size.clone(),
                "not a page size such as 2MB or 1GB",
            ));
        }
        let Ok(limit) = i64::try_from(h.limit) else {
            return Err(bad(
                &format!("hugepage_limits[{i}].limit"),
                h.limit.to_string(),
                "too large",
            ));
        };
        hugepage_limits.push((h.page_size.clone(), limit));
    }
    let mut unified = BTreeMap::new();
    for (key, value) in &r.unified {
        // Keys are file names in the container's cgroup directory.
        if key.is_empty() || key.contains(['/', '\0']) || key == "." || key == ".." {
            return Err(bad(
                "unified",
                key.clone(),
                "keys must be cgroup file names such as memory.high",
            ));
        }
        if value.contains('\0') {
            return Err(bad(
                &format!("unified[{key}]"),
                value.clone(),
                "must contain no NUL",
            ));
        }
        unified.insert(key.clone(), value.clone());
    }
    Ok(Resources {
        cpu_shares: unsigned("cpu_shares", r.cpu_shares)?,
        cpu_quota: limit_or_unlimited("cpu_quota", r.cpu_quota)?,
        cpu_period: unsigned("cpu_period", r.cpu_period)?,
        cpuset_cpus: Some(r.cpuset_cpus.clone()).filter(|s| !s.is_empty()),
        cpuset_mems: Some(r.cpuset_mems.clone()).filter(|s| !s.is_empty()),
        memory_limit: nonzero(r.memory_limit_in_bytes),
        memory_swap_limit: limit_or_unlimited(
            "memory_swap_limit_in_bytes",
            r.memory_swap_limit_in_bytes,
        )?,
        // CRI has no per-container PID limit (kubelet sets it on the pod).
        pids_limit: None,
        hugepage_limits,
        unified,
        // In range by the check above.
        oom_score_adj: i32::try_from(r.oom_score_adj).ok().filter(|&v| v != 0),
    })
}

/// The signal StopContainer sends first, settled at create: the request's
/// `stop_signal`, else the image's `StopSignal`, else SIGTERM.
pub fn stop_signal(
    config: &cri::ContainerConfig,
    image: Option<&str>,
) -> Result<cri::Signal, CridError> {
    const FIELD: &str = "config.stop_signal";
    let requested = cri::Signal::try_from(config.stop_signal).map_err(|_| {
        CridError::invalid(FIELD, config.stop_signal.to_string(), "is not a CRI signal")
    })?;
    match requested {
        cri::Signal::RuntimeDefault => Ok(image_stop_signal(image)),
        signal if sendable(signal) => Ok(signal),
        _ => Err(unsupported(FIELD, "real-time stop signals are")),
    }
}

/// An image's `StopSignal` as Docker reads it (`SIGQUIT`, `quit`, `3`,
/// `SIGRTMIN+3`), else SIGTERM: crid has always fallen back on SIGTERM
/// for what it cannot send, as for a name it does not know.
pub fn image_stop_signal(name: Option<&str>) -> cri::Signal {
    name.map(str::trim)
        .filter(|name| !name.is_empty())
        .and_then(parse_signal)
        .filter(|&signal| sendable(signal))
        .unwrap_or(cri::Signal::Sigterm)
}

fn parse_signal(name: &str) -> Option<cri::Signal> {
    if let Ok(number) = name.parse::<i32>() {
        return signal_from_number(number);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let full = full
        .replace("RTMIN+", "RTMINPLUS")
        .replace("RTMAX-", "RTMAXMINUS");
    cri::Signal::from_str_name(&full).filter(|&s| s != cri::Signal::RuntimeDefault)
}

fn signal_from_number(number: i32) -> Option<cri::Signal> {
    let name = match number {
        REAL_TIME_MIN => "SIGRTMIN".to_string(),
        REAL_TIME_MAX => "SIGRTMAX".to_string(),
        n if n > REAL_TIME_MIN && n <= REAL_TIME_MIN + 15 => {
            format!("SIGRTMINPLUS{}", n - REAL_TIME_MIN)
        }
        n if n > REAL_TIME_MIN + 15 && n < REAL_TIME_MAX => {
            format!("SIGRTMAXMINUS{}", REAL_TIME_MAX - n)
        }
        n => nix::sys::signal::Signal::try_from(n)
            .ok()?
            .as_str()
            .to_string(),
    };
    cri::Signal::from_str_name(&name)
}

/// The real-time signals' range as containers number them (glibc's
/// SIGRTMIN, as Docker and containerd count).
const REAL_TIME_MIN: i32 = 34;
const REAL_TIME_MAX: i32 = 64;

/// The Linux number of `signal`; None for RUNTIME_DEFAULT.
pub fn signal_number(signal: cri::Signal) -> Option<i32> {
    use nix::sys::signal::Signal as Linux;
    let name = signal.as_str_name();
    let number = match signal {
        cri::Signal::RuntimeDefault => return None,
        // Aliases nix does not name.
        cri::Signal::Sigcld => Linux::SIGCHLD as i32,
        cri::Signal::Sigpoll => Linux::SIGIO as i32,
        cri::Signal::Sigiot => Linux::SIGABRT as i32,
        cri::Signal::Sigrtmin => REAL_TIME_MIN,
        cri::Signal::Sigrtmax => REAL_TIME_MAX,
        _ => {
            if let Some(n) = name.strip_prefix("SIGRTMINPLUS") {
                REAL_TIME_MIN + n.parse::<i32>().ok()?
            } else if let Some(n) = name.strip_prefix("SIGRTMAXMINUS") {
                REAL_TIME_MAX - n.parse::<i32>().ok()?
            } else {
                name.parse::<Linux>().ok()? as i32
            }
        }
    };
    Some(number)
}

/// Whether the pod's monitor can deliver `signal`: it takes the standard
/// signals only, not the real-time ones.
fn sendable(signal: cri::Signal) -> bool {
    signal_number(signal).is_some_and(|number| nix::sys::signal::Signal::try_from(number).is_ok())
}

/// [`Resources`] as CRI reports them (ContainerStatus.resources); unset is 0.
pub fn to_cri_resources(r: &Resources) -> cri::LinuxContainerResources {
    let signed = |v: Option<u64>| v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
    cri::LinuxContainerResources {
        cpu_period: signed(r.cpu_period),
        cpu_quota: r.cpu_quota.unwrap_or(0),
        cpu_shares: signed(r.cpu_shares),
        memory_limit_in_bytes: r.memory_limit.unwrap_or(0),
        oom_score_adj: i64::from(r.oom_score_adj.unwrap_or(0)),
        cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: r.cpuset_mems.clone().unwrap_or_default(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| cri::HugepageLimit {
                page_size: page_size.clone(),
                limit: u64::try_from(*limit).unwrap_or(0),
            })
            .collect(),
        unified: r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        memory_swap_limit_in_bytes: r.memory_swap_limit.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use pod_sandbox::{PodSpec, SandboxState};
    use tonic::{Code, Status};

    use super::*;
    use crate::objects::PodPhase;

    const POD_DIR: &str = "/run/crid/pods/p1";

    fn pod_spec(network: NamespaceMode, ipc: NamespaceMode, pid: NamespaceMode) -> PodSpec {
        PodSpec {
            id: "p1".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            hostname: "web-host".into(),
            network,
            ipc,
            pid,
            dns: None,
            port_mappings: Vec::new(),
            sysctls: BTreeMap::new(),
            cgroup_parent: None,
            annotations: BTreeMap::new(),
            shm_size_bytes: pod_sandbox::DEFAULT_SHM_BYTES,
            user_namespace: None,
        }
    }

    fn pod_with(spec: PodSpec, privileged: bool) -> PodRecord {
        PodRecord {
            id: "p1".into(),
            reserved_name: "web_default_u1_0".into(),
            config: cri::PodSandboxConfig {
                linux: Some(cri::LinuxPodSandboxConfig {
                    security_context: Some(cri::LinuxSandboxSecurityContext {
                        privileged,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            runtime_handler: String::new(),
            spec,
            phase: PodPhase::Ready,
            created_at: 1,
            sandbox: SandboxState {
                monitor_pid: 41,
                pause_pid: 42,
                ..Default::default()
            },
        }
    }

    /// A pod with its own network and IPC, each container its own PID.
    fn pod() -> PodRecord {
        pod_with(
            pod_spec(
                NamespaceMode::Pod,
                NamespaceMode::Pod,
                NamespaceMode::Container,
            ),
            false,
        )
    }

    fn security(config: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
        config
            .linux
            .get_or_insert_with(Default::default)
            .security_context
            .get_or_insert_with(Default::default)
    }

    /// A minimal valid config, as kubelet sends for a plain container.
    fn config() -> cri::ContainerConfig {
        let mut c = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "sha256:abc".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        security(&mut c).namespace_options = Some(cri::NamespaceOption {
            pid: cri::NamespaceMode::Container.into(),
            ..Default::default()
        });
        c
    }

    fn ok(c: &cri::ContainerConfig) -> ContainerSpec {
        translate(c, &pod(), Path::new(POD_DIR), None).unwrap()
    }

    fn err_with(c: &cri::ContainerConfig, pod: &PodRecord, target: Option<PathBuf>) -> Status {
        Status::from(translate(c, pod, Path::new(POD_DIR), target).unwrap_err())
    }

    fn err(c: &cri::ContainerConfig) -> Status {
        err_with(c, &pod(), None)
    }

    /// The status has `code` and its message names `field`.
    #[track_caller]
    fn assert_refused(status: &Status, code: Code, field: &str) {
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }

    #[test]
    fn a_plain_config_translates() {
        let mut c = config();
        c.command = vec!["/bin/sh".into()];
        c.args = vec!["-c".into(), "echo hi".into()];
        c.working_dir = "/srv".into();
        c.envs = vec![
            cri::KeyValue {
                key: "A".into(),
                value: "1".into(),
            },
            cri::KeyValue {
                key: "B".into(),
                value: "x=y".into(),
            },
        ];
        c.tty = true;
        c.stdin = true;
        c.stdin_once = true;
        c.labels.insert("l".into(), "1".into());
        c.annotations.insert("a".into(), "2".into());
        let s = ok(&c);
        assert_eq!(s.command, vec!["/bin/sh"]);
        assert_eq!(s.args, vec!["-c", "echo hi"]);
        assert_eq!(s.working_dir, "/srv");
        assert_eq!(
            s.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert!(s.tty && s.stdin && s.stdin_once);
        assert_eq!(s.labels.get("l").map(String::as_str), Some("1"));
        assert_eq!(s.annotations.get("a").map(String::as_str), Some("2"));
        assert_eq!(s.hostname, "web-host");
        assert!(!s.privileged && !s.readonly_rootfs && !s.no_new_privileges);
        assert_eq!(s.run_as_user, None);
        assert_eq!(s.run_as_username, None);
        assert_eq!(s.cgroups_path, None);
        let dir = Path::new(POD_DIR);
        assert_eq!(
            s.pod_files,
            PodFiles {
                hosts: Some(dir.join("hosts")),
                resolv_conf: Some(dir.join("resolv.conf")),
                hostname: Some(dir.join("hostname")),
                shm: Some(dir.join("shm")),
            }
        );
        assert_eq!(
            s.namespaces,
            PodNamespaces {
                network: SharedNamespace::Pod(dir.join("ns/net")),
                ipc: SharedNamespace::Pod(dir.join("ns/ipc")),
                uts: SharedNamespace::Pod(dir.join("ns/uts")),
                pid: PidMode::Container,
                user: None,
            }
        );
        // No resources asked for: only the explicit oom_score_adj 0.
        assert_eq!(
            s.resources,
            Resources {
                oom_score_adj: Some(0),
                ..Default::default()
            }
        );
    }

    #[test]
    fn metadata_and_image_are_required() {
        let mut c = config();
        c.metadata = None;
        assert_refused(&err(&c), Code::InvalidArgument, "config.metadata");
        let mut c = config();
        c.metadata.as_mut().unwrap().name.clear();
        assert_refused(&err(&c), Code::InvalidArgument, "config.metadata.name");
        let mut c = config();
        c.image = None;
        assert_refused(&err(&c), Code::InvalidArgument, "config.image.image");
        let mut c = config();
        c.image.as_mut().unwrap().image.clear();
        assert_refused(&err(&c), Code::InvalidArgument, "config.image.image");
    }

    #[test]
    fn stop_signal_request_over_image_over_sigterm() {
        let mut c = config();
        assert_eq!(stop_signal(&c, None).unwrap(), cri::Signal::Sigterm);
        assert_eq!(
            stop_signal(&c, Some("SIGQUIT")).unwrap(),
            cri::Signal::Sigquit
        );
        c.stop_signal = cri::Signal::Sigusr1.into();
        assert_eq!(
            stop_signal(&c, Some("SIGQUIT")).unwrap(),
            cri::Signal::Sigusr1
        );
        c.stop_signal = 66;
        assert_refused(
            &Status::from(stop_signal(&c, None).unwrap_err()),
            Code::InvalidArgument,
            "config.stop_signal",
        );
        c.stop_signal = cri::Signal::Sigrtminplus3.into();
        assert_refused(
            &Status::from(stop_signal(&c, None).unwrap_err()),
            Code::FailedPrecondition,
            "config.stop_signal",
        );
    }

    #[test]
    fn image_stop_signals_parse_like_dockers() {
        use cri::Signal;
        assert_eq!(image_stop_signal(None), Signal::Sigterm);
        assert_eq!(image_stop_signal(Some(" ")), Signal::Sigterm);
        assert_eq!(image_stop_signal(Some("SIGQUIT")), Signal::Sigquit);
        assert_eq!(image_stop_signal(Some("quit")), Signal::Sigquit);
        assert_eq!(image_stop_signal(Some("9")), Signal::Sigkill);
        assert_eq!(image_stop_signal(Some("bogus")), Signal::Sigterm);
        // Real-time signals are understood but the monitor cannot send them.
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(Signal::Sigrtminplus3));
        assert_eq!(parse_signal("RTMAX-2"), Some(Signal::Sigrtmaxminus2));
        assert_eq!(parse_signal("37"), Some(Signal::Sigrtminplus3));
        assert_eq!(parse_signal("50"), Some(Signal::Sigrtmaxminus14));
        assert_eq!(image_stop_signal(Some("SIGRTMIN+3")), Signal::Sigterm);
    }

    #[test]
    fn every_cri_signal_has_its_linux_number() {
        use nix::sys::signal::Signal as Linux;
        assert_eq!(signal_number(cri::Signal::RuntimeDefault), None);
        for value in 1..=65 {
            let signal = cri::Signal::try_from(value).unwrap();
            let number = signal_number(signal).unwrap();
            assert!((1..=64).contains(&number), "{signal:?}: {number}");
            // Back from the number to the same signal, but for aliases.
            let back = signal_from_number(number).unwrap();
            assert_eq!(signal_number(back), Some(number), "{signal:?}");
        }
        assert_eq!(
            signal_number(cri::Signal::Sigusr1),
            Some(Linux::SIGUSR1 as i32)
        );
        assert_eq!(
            signal_number(cri::Signal::Sigpoll),
            Some(Linux::SIGIO as i32)
        );
        assert_eq!(signal_number(cri::Signal::Sigrtminplus15), Some(49));
        assert_eq!(signal_number(cri::Signal::Sigrtmaxminus14), Some(50));
        assert_eq!(signal_number(cri::Signal::Sigrtmax), Some(64));
    }

    #[test]
    fn bad_env_names_the_entry() {
        for (key, value, field) in [
            ("", &b"v"[..], "config.envs[1].key"),
            ("A=B", b"v", "config.envs[1].key"),
            ("A\0", b"v", "config.envs[1].key"),
            ("A", b"v\0", "config.envs[1].value"),
            ("SECRET", b"\xff\0", "config.envs[1].value"),
        ] {
            let mut c = config();
            c.envs = vec![
                cri::KeyValue {
                    key: "OK".into(),
                    value: Vec::new(),
                },
                cri::KeyValue {
                    key: key.into(),
                    value: value.into(),
                },
            ];
            assert_refused(&err(&c), Code::InvalidArgument, field);
        }
    }

    #[test]
    fn env_values_that_are_not_utf8_pass_as_bytes() {
        let mut c = config();
        c.envs = vec![cri::KeyValue {
            key: "SECRET".into(),
            value: b"caf\xe9\xff".to_vec(),
        }];
        assert_eq!(
            ok(&c).env,
            vec![("SECRET".to_owned(), b"caf\xe9\xff".to_vec())]
        );
    }

    #[test]
    fn nul_bytes_in_what_is_execed_name_the_field() {
        let mut c = config();
        c.command = vec!["sh".into(), "ec\0ho".into()];
        assert_refused(&err(&c), Code::InvalidArgument, "config.command[1]");
        let mut c = config();
        c.args = vec!["\0".into()];
        assert_refused(&err(&c), Code::InvalidArgument, "config.args[0]");
        let mut c = config();
        c.working_dir = "/srv\0x".into();
        assert_refused(&err(&c), Code::InvalidArgument, "config.working_dir");
    }

    #[test]
    fn privileged_needs_a_privileged_pod() {
        let mut c = config();
        security(&mut c).privileged = true;
        assert_refused(
            &err(&c),
            Code::FailedPrecondition,
            "config.linux.security_context.privileged",
        );
        let privileged_pod = pod_with(pod().spec, true);
        let s = translate(&c, &privileged_pod, Path::new(POD_DIR), None).unwrap();
        assert!(s.privileged);
        // A privileged pod may still run unprivileged containers.
        security(&mut c).privileged = false;
        let s = translate(&c, &privileged_pod, Path::new(POD_DIR), None).unwrap();
        assert!(!s.privileged);
    }

    #[test]
    fn security_context_fields() {
        let mut c = config();
        let sc = security(&mut c);
        sc.readonly_rootfs = true;
        sc.no_new_privs = true;
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.run_as_group = Some(cri::Int64Value { value: 0 });
        sc.run_as_username = "alice".into();
        sc.supplemental_groups = vec![10, 20];
        sc.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict.into();
        let s = ok(&c);
        assert!(s.readonly_rootfs && s.no_new_privileges);
        assert_eq!(s.run_as_user, Some(1000));
        assert_eq!(s.run_as_group, Some(0), "root group is a real value");
        assert_eq!(s.run_as_username.as_deref(), Some("alice"));
        assert_eq!(s.supplemental_groups, vec![10, 20]);
        assert_eq!(
            s.supplemental_groups_policy,
            SupplementalGroupsPolicy::Strict
        );

        // run_as_user 0 is root, not "unset".
        let mut c = config();
        security(&mut c).run_as_user = Some(cri::Int64Value { value: 0 });
        assert_eq!(ok(&c).run_as_user, Some(0));
        assert_eq!(
            ok(&config()).supplemental_groups_policy,
            SupplementalGroupsPolicy::Merge
        );
    }

    #[test]
    fn bad_ids_and_policy_name_the_field() {
        let prefix = "config.linux.security_context.";
        type Set = fn(&mut cri::LinuxContainerSecurityContext);
        let cases: Vec<(Set, &str)> = vec![
            (
                |sc| sc.run_as_user = Some(cri::Int64Value { value: -1 }),
                "run_as_user",
            ),
            (
                |sc| sc.run_as_group = Some(cri::Int64Value { value: 1 << 32 }),
                "run_as_group",
            ),
            (
                |sc| sc.run_as_user = Some(cri::Int64Value { value: 4294967295 }),
                "run_as_user",
            ),
            (
                |sc| sc.supplemental_groups = vec![1, -5],
                "supplemental_groups[1]",
            ),
            (
                |sc| sc.supplemental_groups_policy = 7,
                "supplemental_groups_policy",
            ),
        ];
        for (set, field) in cases {
            let mut c = config();
            set(security(&mut c));
            assert_refused(&err(&c), Code::InvalidArgument, &format!("{prefix}{field}"));
        }
    }

    #[test]
    #[allow(deprecated)] // seccomp_profile_path is what older kubelets send
    fn seccomp_profiles_translate() {
        use cri::security_profile::ProfileType;
        assert_eq!(ok(&config()).seccomp, SeccompProfile::Unconfined);
        let profile = |typ: ProfileType, path: &str| cri::SecurityProfile {
            profile_type: typ.into(),
            localhost_ref: path.into(),
        };
        for (message, expected) in [
            (
                profile(ProfileType::RuntimeDefault, ""),
                SeccompProfile::RuntimeDefault,
            ),
            (
                profile(ProfileType::Unconfined, ""),
                SeccompProfile::Unconfined,
            ),
            (
                profile(ProfileType::Localhost, "/var/lib/kubelet/seccomp/p.json"),
                SeccompProfile::Localhost("/var/lib/kubelet/seccomp/p.json".into()),
            ),
        ] {
            let mut c = config();
            security(&mut c).seccomp = Some(message);
            // The message wins over the deprecated path.
            security(&mut c).seccomp_profile_path = "unconfined".into();
            assert_eq!(ok(&c).seccomp, expected);
        }
        for (path, expected) in [
            ("", SeccompProfile::Unconfined),
            ("unconfined", SeccompProfile::Unconfined),
            ("runtime/default", SeccompProfile::RuntimeDefault),
            ("docker/default", SeccompProfile::RuntimeDefault),
            (
                "localhost//p.json",
                SeccompProfile::Localhost("/p.json".into()),
            ),
        ] {
            let mut c = config();
            security(&mut c).seccomp_profile_path = path.into();
            assert_eq!(ok(&c).seccomp, expected, "{path}");
        }
    }

    #[test]
    #[allow(deprecated)]
    fn bad_seccomp_profiles_name_the_field() {
        let prefix = "config.linux.security_context.";
        for (typ, path, field) in [
            (2, "relative.json", "seccomp.localhost_ref"),
            (2, "", "seccomp.localhost_ref"),
            (2, "/a/../b.json", "seccomp.localhost_ref"),
            (7, "", "seccomp.profile_type"),
        ] {
            let mut c = config();
            security(&mut c).seccomp = Some(cri::SecurityProfile {
                profile_type: typ,
                localhost_ref: path.into(),
            });
            assert_refused(&err(&c), Code::InvalidArgument, &format!("{prefix}{field}"));
        }
        for path in ["localhost/rel.json", "default", "Unconfined"] {
            let mut c = config();
            security(&mut c).seccomp_profile_path = path.into();
            assert_refused(
                &err(&c),
                Code::InvalidArgument,
                &format!("{prefix}seccomp_profile_path"),
            );
        }
    }

    #[test]
    fn capabilities_are_carried_and_checked() {
        let mut c = config();
        security(&mut c).capabilities = Some(cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into(), "all".into()],
            drop_capabilities: vec!["ALL".into(), "CAP_KILL".into()],
            add_ambient_capabilities: Vec::new(),
        });
        let s = ok(&c);
        assert_eq!(s.add_capabilities, vec!["NET_ADMIN", "all"]);
        assert_eq!(s.drop_capabilities, vec!["ALL", "CAP_KILL"]);

        let mut c = config();
        security(&mut c).capabilities = Some(cri::Capability {
            add_capabilities: vec!["CHOWN".into(), "NET_ADMN".into()],
            ..Default::default()
        });
        let status = err(&c);
        assert_refused(
            &status,
            Code::InvalidArgument,
            "config.linux.security_context.capabilities.add_capabilities[1]",
        );
        assert!(status.message().contains("NET_ADMN"));
        let mut c = config();
        security(&mut c).capabilities = Some(cri::Capability {
            drop_capabilities: vec!["bogus".into()],
            ..Default::default()
        });
        assert_refused(
            &err(&c),
            Code::InvalidArgument,
            "capabilities.drop_capabilities[0]",
        );
        let mut c = config();
        security(&mut c).capabilities = Some(cri::Capability {
            add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        });
        assert_eq!(ok(&c).add_ambient_capabilities, vec!["NET_BIND_SERVICE"]);
        let mut paths = config();
        security(&mut paths).masked_paths = vec!["/proc/version".into(), "proc/x".into()];
        assert_refused(
            &err(&paths),
            Code::InvalidArgument,
            "security_context.masked_paths[1]",
        );
        security(&mut c).capabilities = Some(cri::Capability {
            add_ambient_capabilities: vec!["NET_BIND_SERVIC".into()],
            ..Default::default()
        });
        assert_refused(
            &err(&c),
            Code::InvalidArgument,
            "capabilities.add_ambient_capabilities[0]",
        );
    }

    fn with_pid(mode: cri::NamespaceMode, target_id: &str) -> cri::ContainerConfig {
        let mut c = config();
        security(&mut c).namespace_options = Some(cri::NamespaceOption {
            pid: mode.into(),
            target_id: target_id.into(),
            ..Default::default()
        });
        c
    }

    #[test]
    fn pid_namespace_modes() {
        let shared = pod_with(
            pod_spec(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod),
            false,
        );
        let dir = Path::new(POD_DIR);
        let pid = |c: &cri::ContainerConfig, pod: &PodRecord, target: Option<PathBuf>| {
            translate(c, pod, dir, target).unwrap().namespaces.pid
        };
        assert_eq!(
            pid(&with_pid(cri::NamespaceMode::Pod, ""), &shared, None),
            PidMode::Pod("/proc/42/ns/pid".into())
        );
        assert_eq!(
            pid(&with_pid(cri::NamespaceMode::Container, ""), &shared, None),
            PidMode::Container
        );
        assert_eq!(
            pid(&with_pid(cri::NamespaceMode::Node, ""), &pod(), None),
            PidMode::Node
        );
        let target = PathBuf::from("/proc/77/ns/pid");
        assert_eq!(
            pid(
                &with_pid(cri::NamespaceMode::Target, "c2"),
                &pod(),
                Some(target.clone())
            ),
            PidMode::Target(target.clone())
        );
        // A target given for another mode is not used.
        assert_eq!(
            pid(
                &with_pid(cri::NamespaceMode::Container, ""),
                &pod(),
                Some(target)
            ),
            PidMode::Container
        );
        // No namespace options at all is CRI's default, POD.
        let mut c = config();
        security(&mut c).namespace_options = None;
        assert_eq!(
            pid(&c, &shared, None),
            PidMode::Pod("/proc/42/ns/pid".into())
        );
    }

    #[test]
    fn pid_namespace_errors_name_the_field() {
        let status = err_with(&with_pid(cri::NamespaceMode::Target, "c2"), &pod(), None);
        assert_refused(
            &status,
            Code::InvalidArgument,
            "config.linux.security_context.namespace_options.target_id",
        );
        assert!(status.message().contains("c2"));
        // POD follows a pod without a PID namespace of its own.
        for (pod_pid, expected) in [
            (NamespaceMode::Container, PidMode::Container),
            (NamespaceMode::Node, PidMode::Node),
        ] {
            let p = pod_with(
                pod_spec(NamespaceMode::Pod, NamespaceMode::Pod, pod_pid),
                false,
            );
            let spec = translate(
                &with_pid(cri::NamespaceMode::Pod, ""),
                &p,
                Path::new("/pod"),
                None,
            )
            .expect("POD follows the pod");
            assert_eq!(spec.namespaces.pid, expected);
        }
        let mut p = pod_with(
            pod_spec(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod),
            false,
        );
        p.sandbox.pause_pid = 0;
        assert_refused(
            &err_with(&with_pid(cri::NamespaceMode::Pod, ""), &p, None),
            Code::FailedPrecondition,
            "pause",
        );
        let mut c = config();
        security(&mut c).namespace_options.as_mut().unwrap().pid = 9;
        assert_refused(&err(&c), Code::InvalidArgument, "namespace_options.pid");
    }

    #[test]
    fn host_network_and_ipc_follow_the_pod() {
        let host = pod_with(
            pod_spec(
                NamespaceMode::Node,
                NamespaceMode::Node,
                NamespaceMode::Container,
            ),
            false,
        );
        // The container's own network/ipc options are not what counts.
        let mut c = config();
        let options = security(&mut c).namespace_options.as_mut().unwrap();
        options.network = cri::NamespaceMode::Pod.into();
        options.ipc = cri::NamespaceMode::Pod.into();
        let s = translate(&c, &host, Path::new(POD_DIR), None).unwrap();
        assert_eq!(s.namespaces.network, SharedNamespace::Node);
        assert_eq!(s.namespaces.uts, SharedNamespace::Node);
        assert_eq!(s.namespaces.ipc, SharedNamespace::Node);
        assert_eq!(s.pod_files.shm, None, "no pod IPC: the default /dev/shm");
        assert!(s.pod_files.hosts.is_some());

        // Host IPC with a pod network: only shm and ipc change.
        let p = pod_with(
            pod_spec(
                NamespaceMode::Pod,
                NamespaceMode::Node,
                NamespaceMode::Container,
            ),
            false,
        );
        let s = translate(&config(), &p, Path::new(POD_DIR), None).unwrap();
        assert_eq!(s.namespaces.ipc, SharedNamespace::Node);
        assert_eq!(
            s.namespaces.uts,
            SharedNamespace::Pod(Path::new(POD_DIR).join("ns/uts"))
        );
        assert_eq!(s.pod_files.shm, None);
    }

    fn bind(container: &str, host: &str) -> cri::Mount {
        cri::Mount {
            container_path: container.into(),
            host_path: host.into(),
            ..Default::default()
        }
    }

    #[test]
    fn mounts_translate() {
        let mut c = config();
        c.mounts = vec![
            bind("/data", "/host/data"),
            cri::Mount {
                readonly: true,
                recursive_read_only: true,
                ..bind("/ro", "/host/ro")
            },
            cri::Mount {
                propagation: cri::MountPropagation::PropagationHostToContainer.into(),
                selinux_relabel: true,
                ..bind("/slave", "/host/slave")
            },
            cri::Mount {
                propagation: cri::MountPropagation::PropagationBidirectional.into(),
                image: Some(cri::ImageSpec::default()),
                ..bind("/shared", "/host/shared")
            },
        ];
        let m = ok(&c).mounts;
        assert_eq!(
            m[0],
            MountSpec {
                container_path: "/data".into(),
                host_path: "/host/data".into(),
                readonly: false,
                propagation: Propagation::Private,
                recursive_read_only: false,
                idmapped: false,
            }
        );
        assert!(m[1].readonly && m[1].recursive_read_only);
        assert_eq!(m[2].propagation, Propagation::RSlave);
        assert_eq!(m[3].propagation, Propagation::RShared);
    }

    #[test]
    fn bad_mounts_name_the_field() {
        let cases: Vec<(cri::Mount, Code, &str)> = vec![
            (
                bind("data", "/h"),
                Code::InvalidArgument,
                "config.mounts[1].container_path",
            ),
            (
                bind("/d", ""),
                Code::InvalidArgument,
                "config.mounts[1].host_path",
            ),
            (
                bind("/", "/h"),
                Code::InvalidArgument,
                "config.mounts[1].container_path",
            ),
            (
                bind("/proc", "/h"),
                Code::InvalidArgument,
                "config.mounts[1].container_path",
            ),
            (
                bind("/proc/sys/net", "/h"),
                Code::InvalidArgument,
                "config.mounts[1].container_path",
            ),
            (
                bind("/d", "/h/../etc"),
                Code::InvalidArgument,
                "config.mounts[1].host_path",
            ),
            (
                cri::Mount {
                    propagation: 5,
                    ..bind("/d", "/h")
                },
                Code::InvalidArgument,
                "config.mounts[1].propagation",
            ),
            (
                cri::Mount {
                    recursive_read_only: true,
                    ..bind("/d", "/h")
                },
                Code::InvalidArgument,
                "config.mounts[1].recursive_read_only",
            ),
            (
                cri::Mount {
                    readonly: true,
                    recursive_read_only: true,
                    propagation: cri::MountPropagation::PropagationBidirectional.into(),
                    ..bind("/d", "/h")
                },
                Code::InvalidArgument,
                "config.mounts[1].recursive_read_only",
            ),
            (
                cri::Mount {
                    image: Some(cri::ImageSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    ..bind("/d", "")
                },
                Code::InvalidArgument,
                "config.mounts[1].readonly",
            ),
            (
                cri::Mount {
                    image: Some(cri::ImageSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    readonly: true,
                    ..bind("/d", "/h")
                },
                Code::InvalidArgument,
                "config.mounts[1].host_path",
            ),
            (
                cri::Mount {
                    image: Some(cri::ImageSpec {
                        image: "busybox".into(),
                        ..Default::default()
                    }),
                    readonly: true,
                    image_sub_path: "etc/../../x".into(),
                    ..bind("/d", "")
                },
                Code::InvalidArgument,
                "config.mounts[1].image_sub_path",
            ),
            (
                cri::Mount {
                    image_sub_path: "etc".into(),
                    ..bind("/d", "/h")
                },
                Code::InvalidArgument,
                "config.mounts[1].image_sub_path",
            ),
            (
                cri::Mount {
                    uid_mappings: vec![cri::IdMapping {
                        host_id: 1000,
                        container_id: 0,
                        length: 1,
                    }],
                    ..bind("/d", "/h")
                },
                // The pod has no user namespace of its own to map through.
                Code::InvalidArgument,
                "config.mounts[1].uidMappings",
            ),
        ];
        for (bad, code, field) in cases {
            let mut c = config();
            c.mounts = vec![bind("/ok", "/host/ok"), bad];
            assert_refused(&err(&c), code, field);
        }
    }

    #[test]
    fn devices_are_refused_not_ignored() {
        let mut c = config();
        c.devices = vec![cri::Device {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rwm".into(),
        }];
        assert_refused(&err(&c), Code::FailedPrecondition, "config.devices");
        let mut c = config();
        c.cdi_devices = vec![cri::CdiDevice {
            name: "vendor.com/gpu=0".into(),
        }];
        assert_refused(&err(&c), Code::FailedPrecondition, "config.CDI_devices");
    }

    fn full_resources() -> cri::LinuxContainerResources {
        cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            memory_swap_limit_in_bytes: 128 << 20,
        }
    }

    #[test]
    fn resources_translate_both_ways() {
        let mut c = config();
        c.linux.as_mut().unwrap().resources = Some(full_resources());
        let want = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("0-1,3".into()),
            cpuset_mems: Some("0".into()),
            memory_limit: Some(64 << 20),
            memory_swap_limit: Some(128 << 20),
            pids_limit: None,
            hugepage_limits: vec![("2MB".into(), 4 << 20)],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            oom_score_adj: Some(999),
        };
        assert_eq!(ok(&c).resources, want);
        assert_eq!(resources(&full_resources()).unwrap(), want);
        assert_eq!(to_cri_resources(&want), full_resources());

        // Zeros are unset; -1 is "unlimited" for quota and swap.
        let r = resources(&cri::LinuxContainerResources {
            cpu_quota: -1,
            memory_swap_limit_in_bytes: -1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            r,
            Resources {
                cpu_quota: Some(-1),
                memory_swap_limit: Some(-1),
                ..Default::default()
            }
        );
        assert_eq!(
            to_cri_resources(&Resources::default()),
            cri::LinuxContainerResources::default()
        );
    }

    #[test]
    fn bad_resources_name_the_field() {
        type Set = fn(&mut cri::LinuxContainerResources);
        let cases: Vec<(Set, &str)> = vec![
            (|r| r.memory_limit_in_bytes = -1, "memory_limit_in_bytes"),
            (|r| r.cpu_shares = -2, "cpu_shares"),
            (|r| r.cpu_period = -1, "cpu_period"),
            (|r| r.cpu_quota = -2, "cpu_quota"),
            (
                |r| r.memory_swap_limit_in_bytes = -2,
                "memory_swap_limit_in_bytes",
            ),
            (|r| r.oom_score_adj = 1001, "oom_score_adj"),
            (|r| r.oom_score_adj = -1001, "oom_score_adj"),
            (|r| r.cpuset_cpus = "0-a".into(), "cpuset_cpus"),
            (|r| r.cpuset_cpus = "3-1".into(), "cpuset_cpus"),
            (|r| r.cpuset_mems = "0,,1".into(), "cpuset_mems"),
            (
                |r| r.hugepage_limits[0].page_size = "2M".into(),
                "hugepage_limits[0].page_size",
            ),
            (
                |r| r.hugepage_limits[0].limit = u64::MAX,
                "hugepage_limits[0].limit",
            ),
            (
                |r| {
                    r.unified.insert("../../cgroup.procs".into(), "1".into());
                },
                "unified",
            ),
            (
                |r| {
                    r.unified.insert("..".into(), "1".into());
                },
                "unified",
            ),
        ];
        for (set, name) in cases {
            let mut r = full_resources();
            set(&mut r);
            // As UpdateContainerResources names them…
            let status = Status::from(resources(&r).unwrap_err());
            assert_refused(&status, Code::InvalidArgument, &format!("linux.{name}"));
            // …and as CreateContainer does.
            let mut c = config();
            c.linux.as_mut().unwrap().resources = Some(r);
            assert_refused(
                &err(&c),
                Code::InvalidArgument,
                &format!("config.linux.resources.{name}"),
            );
        }
    }

    #[test]
    fn cpu_lists() {
        for good in ["0", "0-3", "0-3,8,10-11", "7-7"] {
            assert!(is_cpu_list(good), "{good}");
        }
        for bad in ["", ",", "a", "-1", "1-", "3-1", "0,,1", "0 1", "1-2-3"] {
            assert!(!is_cpu_list(bad), "{bad}");
        }
    }

    #[test]
    fn log_path_is_kept_beneath_the_log_directory() {
        let mut pod = pod();
        pod.config.log_directory = "/var/log/pods/default_web_u1".into();
        let mut c = config();
        c.log_path = "app/0.log".into();
        let log = log_file(&c, &pod).unwrap().unwrap();
        assert_eq!(log.directory, Path::new("/var/log/pods/default_web_u1"));
        assert_eq!(log.relative, Path::new("app/0.log"));
        assert_eq!(
            log.path(),
            Path::new("/var/log/pods/default_web_u1/app/0.log")
        );
        c.log_path = "app.log".into();
        assert!(log_file(&c, &pod).unwrap().is_some());

        // Either side empty: no log.
        c.log_path = String::new();
        assert_eq!(log_file(&c, &pod).unwrap(), None);
        c.log_path = "app/0.log".into();
        let mut no_dir = pod.clone();
        no_dir.config.log_directory = String::new();
        assert_eq!(log_file(&c, &no_dir).unwrap(), None);

        for bad in [
            "../../../../tmp/x.log",
            "app/../../x.log",
            "..",
            "app/..",
            "/tmp/x.log",
            "/",
            "app//0.log",
            "app/0.log/",
            "./app/0.log",
            "app/./0.log",
            "app/0\0.log",
        ] {
            c.log_path = bad.into();
            for pod in [&pod, &no_dir] {
                let status = Status::from(log_file(&c, pod).unwrap_err());
                assert_refused(&status, Code::InvalidArgument, "config.log_path");
                assert!(status.message().contains(&format!("{bad:?}")), "{status:?}");
            }
        }
    }
}
