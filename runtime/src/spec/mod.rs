//! The OCI runtime spec (`config.json`) of a container.
//!
//! cri-server translates and validates a CRI `ContainerConfig` (plus what it
//! knows about the pod) into a [`ContainerSpec`], converts the image's config
//! into an [`ImageConfigView`] (so this crate does not depend on `image`),
//! resolves the user with [`resolve_user`] against the container's rootfs,
//! and calls [`build_spec`]. The resulting [`oci_spec::runtime::Spec`] is
//! written as the bundle's `config.json` (see [`to_config_json`]) and is what
//! crid's container init follows.
//!
//! # Rules (containerd's CRI plugin unless said otherwise)
//! * **Args** ([`process_args`]): containerd's `WithProcessArgs`. If
//!   `command` is empty: args = `args`, or the image `Cmd` when `args` is
//!   empty, after the image `Entrypoint` (unless that is `[""]`). If
//!   `command` is set, it replaces the entrypoint and the image `Cmd` is
//!   not used at all: `command + args`. Nothing at all is
//!   [`SpecError::NoCommand`].
//! * **Env**: image env, then `HOSTNAME=<pod hostname>`, then the request's
//!   env; a later value replaces an earlier one of the same key in place.
//!   `PATH` defaults to [`DEFAULT_PATH`] and `HOME` to the user's passwd home
//!   (else `/`) when neither the image nor the request has them (runc sets
//!   `HOME` the same way at exec time). Request values are bytes; one that
//!   is not UTF-8 shows lossily in `config.json` ([`process_env`]) and
//!   reaches the process through the bundle's env file ([`exact_env`]).
//! * **Working dir**: request, else image, else `/`. A relative request dir
//!   is an error; a relative image dir is taken from `/` (Docker does too).
//! * **Namespaces**: a new mount namespace always; net/ipc/uts join the
//!   pod's pinned namespaces by path (or stay the node's); pid per
//!   [`PidMode`]; the pod's user namespace, joined first, when it has one
//!   (its mappings recorded in the spec); no cgroup namespace yet.
//! * **Hostname**: the pod's, unless the pod uses the node's UTS namespace.
//! * **Mounts**: containerd's defaults (`/proc`, `/dev` tmpfs, `/dev/pts`,
//!   `/dev/shm`, `/dev/mqueue`, `/sys` ro unless privileged,
//!   `/sys/fs/cgroup` cgroup ro unless privileged; no `/run`, as CRI
//!   removes it), then the pod files (`/etc/hosts`, `/etc/resolv.conf`,
//!   `/etc/hostname`, the pod's `/dev/shm`) and the CRI mounts, sorted by
//!   path depth. A CRI mount replaces a default or pod-file mount with the
//!   same destination, and a CRI `/dev` drops every default under `/dev/`.
//!   CRI mounts are `bind` with `rbind`, `rprivate|rslave|rshared`, and
//!   `ro`/`rw`/`rro` (recursive read-only, runc's option name; needs
//!   readonly and private propagation). Any rslave/rshared mount sets
//!   `rootfsPropagation` as containerd does. Creating missing host paths and
//!   resolving their symlinks is I/O done at create time (item 3), not here.
//! * **Capabilities** ([`capabilities`]): containerd's default set
//!   ([`DEFAULT_CAPABILITIES`]) in bounding, effective and permitted, none
//!   inheritable or ambient (containerd 1.6+); then CRI's add/drop as
//!   containerd applies them (add `ALL`, drop `ALL`, add each, drop each).
//!   Privileged containers get every capability ([`ALL_CAPABILITIES`]) and
//!   add/drop is ignored, as in containerd.
//! * **Security**: masked and read-only paths are containerd's defaults
//!   unless privileged; `noNewPrivileges` only when asked; the root is
//!   read-only when asked. Every container gets the file limit systemd
//!   gives a service and containerd 2 its containers ([`NOFILE_LIMITS`]),
//!   not crid's own raised one; other rlimits are the host's.
//! * **Device cgroup** ([`DEVICE_RULES`]): runc's defaults, every device
//!   for privileged containers.
//! * **Seccomp** ([`SeccompProfile`]): none when unconfined (CRI's unset
//!   or empty profile, as containerd does without a configured default) or
//!   privileged (kubelet expects privileged containers unfiltered); else
//!   [`seccomp::runtime_default`] or a [`seccomp::localhost`] file, both
//!   for the container's capability set.
//! * `ociVersion` is [`OCI_VERSION`].

pub mod seccomp;
mod user;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use nix::sys::resource::Resource;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder, LinuxIdMapping,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp,
    Mount, MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde::{Deserialize, Serialize};

pub use user::{MAX_DB_BYTES, ResolvedUser, resolve_user};

/// The `ociVersion` crid writes (runc 1.1 and youki read it).
pub const OCI_VERSION: &str = "1.0.2";

/// `PATH` when neither the image nor the request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default masked paths (non-privileged containers).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths (non-privileged containers).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// containerd's default capabilities of a non-privileged container.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability oci-spec knows (Linux's 0 to 40, CAP_CHECKPOINT_RESTORE
/// being the last): what privileged containers and `ALL` get.
pub const ALL_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// What went wrong building a spec; each names the field and the value.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "no command specified: command, args, and the image's entrypoint and cmd are all empty"
    )]
    NoCommand,
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("unable to find user {0:?}: no matching entry in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("unable to find group {0:?}: no matching entry in the image's /etc/group")]
    UnknownGroup(String),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp profile {path}: {reason}")]
    SeccompProfile { path: PathBuf, reason: String },
    #[error("building the OCI spec: {0}")]
    Oci(String),
}

impl From<oci_spec::OciSpecError> for SpecError {
    fn from(e: oci_spec::OciSpecError) -> Self {
        SpecError::Oci(e.to_string())
    }
}

/// CRI `supplemental_groups_policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupplementalGroupsPolicy {
    /// The image's `/etc/group` memberships plus the requested groups.
    #[default]
    Merge,
    /// Only the primary group and the requested groups.
    Strict,
}

/// CRI `MountPropagation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    #[default]
    Private,
    /// HOST_TO_CONTAINER.
    RSlave,
    /// BIDIRECTIONAL.
    RShared,
}

/// One CRI mount (a bind mount of a host path).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub container_path: PathBuf,
    pub host_path: PathBuf,
    pub readonly: bool,
    pub propagation: Propagation,
    pub recursive_read_only: bool,
    /// Bound idmapped through the pod's user namespace (kubelet set the
    /// mount's mappings to the pod's). Records older than the field have
    /// none.
    #[serde(default)]
    pub idmapped: bool,
}

/// A namespace the container shares: the pod's pinned one, or the node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedNamespace {
    /// Join the pod's namespace pinned at this path.
    Pod(PathBuf),
    /// The node's (host) namespace: no namespace entry in the spec.
    Node,
}

/// The container's PID namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidMode {
    /// The pod's shared PID namespace, pinned at this path.
    Pod(PathBuf),
    /// A new one of its own (CRI `CONTAINER`, the default).
    #[default]
    Container,
    /// The node's.
    Node,
    /// The target container's (CRI `TARGET`), at this path.
    Target(PathBuf),
}

/// The namespaces a container joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    pub network: SharedNamespace,
    pub ipc: SharedNamespace,
    pub uts: SharedNamespace,
    pub pid: PidMode,
    /// The pod's own user namespace, which the container joins first;
    /// None: the node's. (Records older than the field have none.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<PodUserNamespace>,
}

/// A pod's own user namespace: where it is, and its mappings (the
/// container's files are shown through them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUserNamespace {
    pub path: PathBuf,
    pub mappings: proto::monitor::UserNamespaceMappings,
}

impl Default for PodNamespaces {
    fn default() -> Self {
        PodNamespaces {
            network: SharedNamespace::Node,
            ipc: SharedNamespace::Node,
            uts: SharedNamespace::Node,
            pid: PidMode::Container,
            user: None,
        }
    }
}

/// Files the pod provides to each of its containers (host paths).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFiles {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    /// The pod's `/dev/shm` (bind-mounted over the default tmpfs).
    pub shm: Option<PathBuf>,
}

/// CRI `LinuxContainerResources`, with "unset" as `None` instead of 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory_limit: Option<i64>,
    /// When unset and `memory_limit` is set, swap is set equal to the memory
    /// limit (no swap), as containerd does; the cgroup layer skips it where
    /// the host has no swap accounting.
    pub memory_swap_limit: Option<i64>,
    pub pids_limit: Option<i64>,
    /// (page size such as `2MB`, limit in bytes).
    pub hugepage_limits: Vec<(String, i64)>,
    /// cgroup v2 `unified` key/values.
    pub unified: BTreeMap<String, String>,
    pub oom_score_adj: Option<i32>,
}

impl Resources {
    /// The memory and memory+swap limits to set (0 counts as unset): with
    /// no swap limit but a memory limit, swap equals memory (no swap), as
    /// containerd does. Shared by the OCI spec and the cgroup writer.
    pub fn memory_and_swap(&self) -> (Option<i64>, Option<i64>) {
        let memory = self.memory_limit.filter(|&v| v != 0);
        let swap = self.memory_swap_limit.filter(|&v| v != 0).or(memory);
        (memory, swap)
    }
}

/// The container's seccomp profile (CRI `security_context.seccomp`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// No filter. CRI's unset or empty profile means this (containerd's
    /// behaviour without a configured default); so do records written
    /// before crid had seccomp, which ran unfiltered.
    #[default]
    Unconfined,
    /// [`seccomp::runtime_default`].
    RuntimeDefault,
    /// The profile file at this absolute path on the node.
    Localhost(PathBuf),
}

/// A validated, translated CRI `ContainerConfig` plus the pod context it
/// needs. Built by cri-server; kept with the container's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// The request's env: values are bytes, as CRI passes them (Secret
    /// data need not be UTF-8). Records from before held strings.
    #[serde(deserialize_with = "request_env")]
    pub env: Vec<(String, Vec<u8>)>,
    /// Empty = unset.
    pub working_dir: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub no_new_privileges: bool,
    pub run_as_user: Option<i64>,
    pub run_as_username: Option<String>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    pub mounts: Vec<MountSpec>,
    /// The pod's hostname.
    pub hostname: String,
    pub namespaces: PodNamespaces,
    pub pod_files: PodFiles,
    /// cgroupfs path of the container's cgroup, if any.
    pub cgroups_path: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// CRI capability names (`NET_ADMIN`; a `CAP_` prefix is accepted too;
    /// `ALL`) added to the default set. Ignored when privileged.
    #[serde(default)]
    pub add_capabilities: Vec<String>,
    /// CRI capability names (or `ALL`) dropped from the set.
    #[serde(default)]
    pub drop_capabilities: Vec<String>,
    /// CRI `add_ambient_capabilities`: kept across exec by a non-root user
    /// (also added to the other sets, as the kernel requires).
    #[serde(default)]
    pub add_ambient_capabilities: Vec<String>,
    /// CRI `masked_paths` / `readonly_paths`: when non-empty they replace
    /// the defaults (as containerd; kubelet sends the defaults itself, or
    /// none for `procMount: Unmasked`).
    #[serde(default)]
    pub masked_paths: Vec<String>,
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    #[serde(default)]
    pub seccomp: SeccompProfile,
    /// Not part of the OCI spec; kept for status and filtering.
    pub labels: BTreeMap<String, String>,
    pub resources: Resources,
}

/// The parts of the image config a spec needs (cri-server converts
/// `image::ImageConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigView {
    pub user: String,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: String,
}

/// The process args: containerd's `WithProcessArgs` (from moby).
pub fn process_args(
    container: &ContainerSpec,
    image: &ImageConfigView,
) -> Result<Vec<String>, SpecError> {
    let mut command = container.command.clone();
    let mut args = container.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone().unwrap_or_default();
        }
        // CRI cannot tell an empty command from an absent one (proto), so
        // the entrypoint is always used here, unless it is `[""]`.
        let entrypoint = image.entrypoint.clone().unwrap_or_default();
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    if command.is_empty() && args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    command.extend(args);
    Ok(command)
}

/// The environment as it is merged: entries in first-seen order, and each
/// key's position, so that a later value replaces an earlier one in place
/// without a scan (a request may carry 100 000 entries; a scan per entry
/// made that quadratic). Keys and values borrow from the inputs.
#[derive(Default)]
struct Env<'a> {
    entries: Vec<(&'a str, &'a [u8])>,
    positions: HashMap<&'a str, usize>,
}

impl<'a> Env<'a> {
    /// Sets `key` to `value`: in place if it is there, else at the end.
    fn set(&mut self, key: &'a str, value: &'a [u8]) {
        match self
            .positions
            .get(key)
            .and_then(|&i| self.entries.get_mut(i))
        {
            Some(slot) => slot.1 = value,
            None => {
                self.positions.insert(key, self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    fn has(&self, key: &str) -> bool {
        self.positions.contains_key(key)
    }
}

/// The merged environment (see the module docs for the rules), as
/// (key, value) in the order the process gets it.
fn merged_env<'a>(
    container: &'a ContainerSpec,
    image: &'a ImageConfigView,
    user: &'a ResolvedUser,
) -> Result<Vec<(&'a str, &'a [u8])>, SpecError> {
    let mut env = Env::default();
    for kv in &image.env {
        // An image entry without `=` sets nothing (Docker ignores it too).
        if let Some((k, v)) = kv.split_once('=')
            && !k.is_empty()
        {
            env.set(k, v.as_bytes());
        }
    }
    if !container.hostname.is_empty() {
        env.set("HOSTNAME", container.hostname.as_bytes());
    }
    for (k, v) in &container.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains(&0) {
            return Err(SpecError::Invalid {
                field: "envs",
                value: format!("{k}={}", String::from_utf8_lossy(v)),
                reason: "the key must be non-empty and contain no '=' and no NUL".into(),
            });
        }
        env.set(k, v);
    }
    let home = user.home.as_deref().unwrap_or("/").as_bytes();
    let path = (!env.has("PATH")).then_some(("PATH", DEFAULT_PATH.as_bytes()));
    let home = (!env.has("HOME")).then_some(("HOME", home));
    Ok(path.into_iter().chain(env.entries).chain(home).collect())
}

/// The process environment as `config.json` holds it: strings, so a
/// request value that is not UTF-8 shows lossily there (U+FFFD for each
/// bad sequence); [`exact_env`] has its bytes.
pub fn process_env(
    container: &ContainerSpec,
    image: &ImageConfigView,
    user: &ResolvedUser,
) -> Result<Vec<String>, SpecError> {
    Ok(merged_env(container, image, user)?
        .into_iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect())
}

/// The process environment byte for byte (`KEY=value` entries) when
/// `config.json`'s strings cannot carry it, that is when a request value
/// is not UTF-8: what the bundle's env file
/// ([`proto::monitor::ENV_FILE`]) holds. None when [`process_env`] is exact.
pub fn exact_env(
    container: &ContainerSpec,
    image: &ImageConfigView,
    user: &ResolvedUser,
) -> Result<Option<Vec<Vec<u8>>>, SpecError> {
    if container.env_is_utf8() {
        return Ok(None);
    }
    let entries = merged_env(container, image, user)?
        .into_iter()
        .map(|(k, v)| [k.as_bytes(), b"=", v].concat())
        .collect();
    Ok(Some(entries))
}

impl ContainerSpec {
    /// Whether every request env value is UTF-8 (the image's and crid's
    /// own always are), so `config.json` holds the environment exactly.
    pub fn env_is_utf8(&self) -> bool {
        self.env.iter().all(|(_, v)| std::str::from_utf8(v).is_ok())
    }
}

/// [`ContainerSpec::env`] from a record: values as bytes, or as the
/// strings records held before.
fn request_env<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
    #[derive(Deserialize)]
    struct Entry(
        String,
        #[serde(deserialize_with = "proto::env_value::deserialize")] Vec<u8>,
    );
    let entries = Vec::<Entry>::deserialize(deserializer)?;
    Ok(entries.into_iter().map(|Entry(k, v)| (k, v)).collect())
}

/// The working directory: request, else image, else `/`.
pub fn working_dir(
    container: &ContainerSpec,
    image: &ImageConfigView,
) -> Result<PathBuf, SpecError> {
    if !container.working_dir.is_empty() {
        let p = PathBuf::from(&container.working_dir);
        if !p.is_absolute() {
            return Err(SpecError::Invalid {
                field: "working_dir",
                value: container.working_dir.clone(),
                reason: "must be an absolute path".into(),
            });
        }
        return Ok(p);
    }
    if !image.working_dir.is_empty() {
        return Ok(Path::new("/").join(&image.working_dir));
    }
    Ok(PathBuf::from("/"))
}

/// Whether `name` is CRI's `ALL` (any case, as containerd compares).
fn is_all(name: &str) -> bool {
    name.eq_ignore_ascii_case("ALL")
}

/// A CRI capability name (`NET_ADMIN`, any case, optionally `CAP_`-prefixed)
/// as oci-spec's capability; `None` for an unknown name (and for `ALL`).
pub fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse::<Capability>()
        .ok()
        .filter(|cap| ALL_CAPABILITIES.contains(cap))
}

/// Whether `name` may appear in CRI's add/drop capability lists.
pub fn valid_capability_name(name: &str) -> bool {
    is_all(name) || parse_capability(name).is_some()
}

fn checked_capability(field: &'static str, name: &str) -> Result<Capability, SpecError> {
    parse_capability(name).ok_or_else(|| SpecError::Invalid {
        field,
        value: name.to_owned(),
        reason: CAPABILITY_REASON.into(),
    })
}

/// Why a capability name is refused (shared with cri-server's checks).
pub const CAPABILITY_REASON: &str = "not a Linux capability name (e.g. NET_ADMIN) or ALL";

/// The container's capability set (see the module docs for the rules).
pub fn capabilities(c: &ContainerSpec) -> Result<HashSet<Capability>, SpecError> {
    const ADD: &str = "capabilities.add_capabilities";
    const DROP: &str = "capabilities.drop_capabilities";
    // Names are checked even where they end up ignored, so a typo is
    // reported rather than silently doing nothing.
    let add = c
        .add_capabilities
        .iter()
        .filter(|n| !is_all(n))
        .map(|n| checked_capability(ADD, n))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = c
        .drop_capabilities
        .iter()
        .filter(|n| !is_all(n))
        .map(|n| checked_capability(DROP, n))
        .collect::<Result<Vec<_>, _>>()?;
    if c.privileged {
        return Ok(ALL_CAPABILITIES.iter().copied().collect());
    }
    let mut caps: HashSet<Capability> = DEFAULT_CAPABILITIES.iter().copied().collect();
    if c.add_capabilities.iter().any(|n| is_all(n)) {
        caps.extend(ALL_CAPABILITIES.iter().copied());
    }
    if c.drop_capabilities.iter().any(|n| is_all(n)) {
        caps.clear();
    }
    caps.extend(add);
    for cap in drop {
        caps.remove(&cap);
    }
    // An ambient capability must also be permitted and inheritable.
    caps.extend(ambient_capabilities(c)?);
    Ok(caps)
}

/// The ambient (and so inheritable) set: CRI `add_ambient_capabilities`.
pub fn ambient_capabilities(c: &ContainerSpec) -> Result<HashSet<Capability>, SpecError> {
    c.add_ambient_capabilities
        .iter()
        .map(|n| checked_capability("capabilities.add_ambient_capabilities", n))
        .collect()
}

fn linux_capabilities(
    caps: HashSet<Capability>,
    ambient: HashSet<Capability>,
) -> LinuxCapabilities {
    // Not the builder: its defaults are oci-spec's example set, ambient
    // and inheritable included.
    let mut out = LinuxCapabilities::default();
    let ambient = (!ambient.is_empty()).then_some(ambient);
    out.set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(ambient.clone())
        .set_ambient(ambient);
    out
}

/// `linux.seccomp` for the container (see the module docs).
fn linux_seccomp(
    c: &ContainerSpec,
    caps: &HashSet<Capability>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if c.privileged {
        return Ok(None);
    }
    Ok(match &c.seccomp {
        SeccompProfile::Unconfined => None,
        SeccompProfile::RuntimeDefault => Some(seccomp::runtime_default(caps)?),
        SeccompProfile::Localhost(path) => Some(seccomp::localhost(path, caps)?),
    })
}

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(p) => b.path(p).build()?,
        None => b.build()?,
    })
}

/// The namespaces of the spec: mount (new), net/ipc/uts (pod's or node's),
/// pid per [`PidMode`].
pub fn namespaces(n: &PodNamespaces) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut out = Vec::new();
    if let Some(user) = &n.user {
        out.push(ns(LinuxNamespaceType::User, Some(&user.path))?);
    }
    out.push(ns(LinuxNamespaceType::Mount, None)?);
    for (typ, shared) in [
        (LinuxNamespaceType::Network, &n.network),
        (LinuxNamespaceType::Ipc, &n.ipc),
        (LinuxNamespaceType::Uts, &n.uts),
    ] {
        if let SharedNamespace::Pod(p) = shared {
            out.push(ns(typ, Some(p))?);
        }
    }
    match &n.pid {
        PidMode::Pod(p) | PidMode::Target(p) => out.push(ns(LinuxNamespaceType::Pid, Some(p))?),
        PidMode::Container => out.push(ns(LinuxNamespaceType::Pid, None)?),
        PidMode::Node => {}
    }
    Ok(out)
}

/// The spec's record of the pod user namespace's mappings (what the init
/// joins is the namespace itself).
fn id_mappings(
    n: &PodNamespaces,
    kind: impl Fn(&proto::monitor::UserNamespaceMappings) -> proto::monitor::IdMapping,
) -> Result<Option<Vec<LinuxIdMapping>>, SpecError> {
    let Some(user) = &n.user else {
        return Ok(None);
    };
    let mapping = kind(&user.mappings);
    Ok(Some(vec![
        LinuxIdMappingBuilder::default()
            .container_id(mapping.container_id)
            .host_id(mapping.host_id)
            .size(mapping.length)
            .build()?,
    ]))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .build()?)
}

/// containerd's default mounts for a CRI container.
pub fn default_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ])
}

/// Whether `p` is absolute and has no `..` (what a mount path must be).
pub fn is_clean_absolute(p: &Path) -> bool {
    p.is_absolute() && !p.components().any(|c| c == Component::ParentDir)
}

/// A path that stays beneath whatever it is joined to: relative, with no
/// '..' and no NUL (empty is the directory itself).
pub fn is_clean_relative(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    !p.as_os_str().as_bytes().contains(&0)
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

fn check_abs(field: &'static str, p: &Path) -> Result<(), SpecError> {
    if !is_clean_absolute(p) {
        return Err(SpecError::Invalid {
            field,
            value: p.display().to_string(),
            reason: "must be an absolute path without '..'".into(),
        });
    }
    Ok(())
}

/// Depth of a destination (containerd's `orderedMounts`).
fn depth(p: &Path) -> usize {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

/// All mounts: defaults, then pod files and CRI mounts (sorted by depth).
/// Returns the mounts and the `rootfsPropagation` they need.
pub fn mounts(c: &ContainerSpec) -> Result<(Vec<Mount>, Option<&'static str>), SpecError> {
    let mut binds: Vec<MountSpec> = Vec::new();
    for m in &c.mounts {
        check_abs("mounts.container_path", &m.container_path)?;
        check_abs("mounts.host_path", &m.host_path)?;
        if m.recursive_read_only && !m.readonly {
            return Err(SpecError::Invalid {
                field: "mounts.recursive_read_only",
                value: m.host_path.display().to_string(),
                reason: "recursive read-only conflicts with a read-write mount".into(),
            });
        }
        if m.recursive_read_only && m.propagation != Propagation::Private {
            return Err(SpecError::Invalid {
                field: "mounts.recursive_read_only",
                value: m.host_path.display().to_string(),
                reason: format!("needs private propagation, got {:?}", m.propagation),
            });
        }
        binds.push(m.clone());
    }
    let clean = |p: &Path| p.components().collect::<PathBuf>();
    // Sets, not lists: each default and pod file is looked up in them.
    let cri_dests: HashSet<PathBuf> = binds.iter().map(|m| clean(&m.container_path)).collect();
    let pod = &c.pod_files;
    let ro_etc = c.readonly_rootfs;
    for (dest, src, readonly) in [
        ("/etc/hosts", &pod.hosts, ro_etc),
        ("/etc/resolv.conf", &pod.resolv_conf, ro_etc),
        ("/etc/hostname", &pod.hostname, ro_etc),
        ("/dev/shm", &pod.shm, false),
    ] {
        if let Some(src) = src
            && !cri_dests.contains(Path::new(dest))
        {
            check_abs("pod file", src)?;
            binds.push(MountSpec {
                container_path: dest.into(),
                host_path: src.clone(),
                readonly,
                propagation: Propagation::Private,
                recursive_read_only: false,
                idmapped: false,
            });
        }
    }
    binds.sort_by_key(|m| depth(&m.container_path));
    let bind_dests: HashSet<PathBuf> = binds.iter().map(|m| clean(&m.container_path)).collect();
    let dev_given = cri_dests.contains(Path::new("/dev"));

    let mut out: Vec<Mount> = default_mounts(c.privileged)?
        .into_iter()
        .filter(|m| {
            let d = clean(m.destination());
            let under_given_dev = dev_given && d.starts_with("/dev") && d != Path::new("/dev");
            !bind_dests.contains(&d) && !under_given_dev
        })
        .collect();
    let mut rootfs_propagation = None;
    for m in &binds {
        let prop = match m.propagation {
            Propagation::Private => "rprivate",
            Propagation::RSlave => {
                if rootfs_propagation != Some("rshared") {
                    rootfs_propagation = Some("rslave");
                }
                "rslave"
            }
            Propagation::RShared => {
                rootfs_propagation = Some("rshared");
                "rshared"
            }
        };
        let mode = match (m.readonly, m.recursive_read_only) {
            (true, true) => "rro",
            (true, false) => "ro",
            (false, _) => "rw",
        };
        out.push(
            MountBuilder::default()
                .destination(&m.container_path)
                .typ("bind")
                .source(&m.host_path)
                .options(vec!["rbind".to_owned(), prop.to_owned(), mode.to_owned()])
                .build()?,
        );
    }
    Ok((out, rootfs_propagation))
}

/// RLIMIT_NOFILE (soft, hard) of every container's processes: systemd's
/// default for services since v240 (soft 1024 for select(2)-era programs,
/// a hard limit programs may raise to). crid raises its own soft limit, and
/// containerd 1.x containers inheriting such a raise is a known pain point.
/// host::fit_to_host lowers the hard limit to crid's own where that is less.
pub const NOFILE_LIMITS: (u64, u64) = (1024, 524_288);

fn nofile_limit() -> Result<PosixRlimit, SpecError> {
    Ok(PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(NOFILE_LIMITS.0)
        .hard(NOFILE_LIMITS.1)
        .build()?)
}

/// The kernel's name of an OCI rlimit.
pub fn rlimit_resource(typ: PosixRlimitType) -> Resource {
    match typ {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// (allow, type, major, minor (None: any), access)
type DeviceRule = (
    bool,
    LinuxDeviceType,
    Option<i64>,
    Option<i64>,
    &'static str,
);

/// The device cgroup rules (runc's defaults, which containerd's spec
/// relies on): a privileged container may use every device; any other one
/// none but those of its default `/dev`, though it may `mknod` any node
/// (CAP_MKNOD is a default capability; the node is useless without access).
const DEVICE_RULES: &[DeviceRule] = &[
    (false, LinuxDeviceType::A, None, None, "rwm"),
    (true, LinuxDeviceType::C, None, None, "m"),
    (true, LinuxDeviceType::B, None, None, "m"),
    (true, LinuxDeviceType::C, Some(1), Some(3), "rwm"), // null
    (true, LinuxDeviceType::C, Some(1), Some(5), "rwm"), // zero
    (true, LinuxDeviceType::C, Some(1), Some(7), "rwm"), // full
    (true, LinuxDeviceType::C, Some(1), Some(8), "rwm"), // random
    (true, LinuxDeviceType::C, Some(1), Some(9), "rwm"), // urandom
    (true, LinuxDeviceType::C, Some(5), Some(0), "rwm"), // tty
    (true, LinuxDeviceType::C, Some(5), Some(1), "rwm"), // console
    (true, LinuxDeviceType::C, Some(5), Some(2), "rwm"), // ptmx
    (true, LinuxDeviceType::C, Some(136), None, "rwm"),  // pts/*
];

/// The device cgroup rules of a container, privileged or not.
pub fn device_rules(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let all = [(true, LinuxDeviceType::A, None, None, "rwm")];
    let rules = if privileged { &all[..] } else { DEVICE_RULES };
    rules
        .iter()
        .map(|&(allow, typ, major, minor, access)| {
            let mut rule = LinuxDeviceCgroupBuilder::default()
                .allow(allow)
                .typ(typ)
                .access(access)
                .build()?;
            rule.set_major(major).set_minor(minor);
            Ok(rule)
        })
        .collect()
}

fn resources(r: &Resources, privileged: bool) -> Result<LinuxResources, SpecError> {
    let mut b = LinuxResourcesBuilder::default().devices(device_rules(privileged)?);
    let mut cpu = LinuxCpuBuilder::default();
    let mut cpu_set = false;
    if let Some(v) = r.cpu_shares.filter(|&v| v != 0) {
        cpu = cpu.shares(v);
        cpu_set = true;
    }
    if let Some(v) = r.cpu_quota.filter(|&v| v != 0) {
        cpu = cpu.quota(v);
        cpu_set = true;
    }
    if let Some(v) = r.cpu_period.filter(|&v| v != 0) {
        cpu = cpu.period(v);
        cpu_set = true;
    }
    if let Some(v) = r.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
        cpu = cpu.cpus(v.clone());
        cpu_set = true;
    }
    if let Some(v) = r.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
        cpu = cpu.mems(v.clone());
        cpu_set = true;
    }
    if cpu_set {
        b = b.cpu(cpu.build()?);
    }
    let (limit, swap) = r.memory_and_swap();
    if limit.is_some() || swap.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(l) = limit {
            m = m.limit(l);
        }
        if let Some(s) = swap {
            m = m.swap(s);
        }
        b = b.memory(m.build()?);
    }
    if let Some(p) = r.pids_limit.filter(|&v| v != 0) {
        b = b.pids(LinuxPidsBuilder::default().limit(p).build()?);
    }
    if !r.hugepage_limits.is_empty() {
        let mut v = Vec::new();
        for (size, limit) in &r.hugepage_limits {
            v.push(
                LinuxHugepageLimitBuilder::default()
                    .page_size(size.clone())
                    .limit(*limit)
                    .build()?,
            );
        }
        b = b.hugepage_limits(v);
    }
    if !r.unified.is_empty() {
        b = b.unified(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    Ok(b.build()?)
}

/// Build the OCI runtime spec of a container.
///
/// `rootfs` becomes `root.path`; `resolved_user` comes from
/// [`resolve_user`] on the same rootfs.
pub fn build_spec(
    container: &ContainerSpec,
    image: &ImageConfigView,
    rootfs: &Path,
    resolved_user: &ResolvedUser,
) -> Result<Spec, SpecError> {
    let args = process_args(container, image)?;
    let env = process_env(container, image, resolved_user)?;
    let cwd = working_dir(container, image)?;
    let caps = capabilities(container)?;
    let ambient = ambient_capabilities(container)?;
    let seccomp = linux_seccomp(container, &caps)?;

    // oci-spec's builders fill every unset field from the struct's own
    // `Default`, which is youki's example config (hostname "youki",
    // capabilities, an RLIMIT_NOFILE, noNewPrivileges, TERM, masked paths,
    // a device cgroup list…). So every such field is set explicitly below.
    let mut user = UserBuilder::default()
        .uid(resolved_user.uid)
        .gid(resolved_user.gid)
        .additional_gids(resolved_user.additional_gids.clone())
        .build()?;
    user.set_username(resolved_user.username.clone());
    user.set_umask(None);

    let mut process = ProcessBuilder::default().build()?;
    process
        .set_terminal(Some(container.tty))
        .set_console_size(None)
        .set_user(user)
        .set_args(Some(args))
        .set_command_line(None)
        .set_env(Some(env))
        .set_cwd(cwd)
        .set_no_new_privileges(container.no_new_privileges.then_some(true))
        .set_oom_score_adj(container.resources.oom_score_adj)
        .set_rlimits(Some(vec![nofile_limit()?]))
        .set_capabilities(Some(linux_capabilities(caps, ambient)))
        .set_apparmor_profile(None)
        .set_selinux_label(None);

    let (mounts, rootfs_propagation) = mounts(container)?;

    let mut linux = LinuxBuilder::default().build()?;
    let requested_or = |requested: &[String], defaults: &[&str]| -> Vec<String> {
        if requested.is_empty() {
            defaults.iter().map(|s| (*s).to_owned()).collect()
        } else {
            requested.to_vec()
        }
    };
    let (masked, readonly) = if container.privileged {
        (None, None)
    } else {
        (
            Some(requested_or(&container.masked_paths, MASKED_PATHS)),
            Some(requested_or(&container.readonly_paths, READONLY_PATHS)),
        )
    };
    linux
        .set_namespaces(Some(namespaces(&container.namespaces)?))
        .set_masked_paths(masked)
        .set_readonly_paths(readonly)
        .set_rootfs_propagation(rootfs_propagation.map(str::to_owned))
        .set_cgroups_path(
            container
                .cgroups_path
                .as_ref()
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        )
        .set_resources(Some(resources(&container.resources, container.privileged)?))
        // Device nodes beyond the default /dev: a privileged container's
        // host devices, added by host::fit_to_host.
        .set_devices(None)
        .set_uid_mappings(id_mappings(&container.namespaces, |m| m.uids)?)
        .set_gid_mappings(id_mappings(&container.namespaces, |m| m.gids)?)
        .set_sysctl(None)
        .set_seccomp(seccomp);

    let hostname = (matches!(container.namespaces.uts, SharedNamespace::Pod(_))
        && !container.hostname.is_empty())
    .then(|| container.hostname.clone());
    let annotations = (!container.annotations.is_empty()).then(|| {
        container
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::HashMap<_, _>>()
    });
    let root = RootBuilder::default()
        .path(rootfs)
        .readonly(container.readonly_rootfs)
        .build()?;
    let mut spec = SpecBuilder::default().build()?;
    spec.set_version(OCI_VERSION.to_owned())
        .set_root(Some(root))
        .set_process(Some(process))
        .set_mounts(Some(mounts))
        .set_hostname(hostname)
        .set_domainname(None)
        .set_hooks(None)
        .set_annotations(annotations)
        .set_linux(Some(linux));
    Ok(spec)
}

/// The bundle's `config.json` bytes for `spec` (pretty, so it can be read).
pub fn to_config_json(spec: &Spec) -> Result<Vec<u8>, SpecError> {
    serde_json::to_vec_pretty(spec).map_err(|e| SpecError::Oci(e.to_string()))
}

#[cfg(test)]
mod tests;
