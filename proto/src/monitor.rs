//! crid ⇄ crid-monitor. crid writes a [`MonitorConfig`] into the pod's state
//! dir and starts `crid-monitor` in that dir (its argv names no path); the
//! monitor prints one [`MonitorStarted`] line (JSON) on stdout and detaches.
//! Afterwards crid talks to it over `<pod dir>/monitor.sock`: one
//! [`MonitorRequest`] per connection, answered by one [`MonitorResponse`]
//! (a create placed by crid adds `Place`/`Placed`; a `Subscribe` keeps the
//! connection for [`MonitorEvent`]s). Frames: `runtime::wire`.
//!
//! Versions: monitors outlive crid, so a crid talks to monitors started by
//! older crids. [`MonitorConfig::protocol`] records the version a monitor
//! was started with (absent: 1), and crid sends a monitor only requests of
//! that version or older ([`MonitorRequest::since`]). New fields are
//! `#[serde(default)]`, so either side may be the older one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// File names inside a pod's state dir that both sides use.
pub const CONFIG_FILE: &str = "monitor.json";
pub const SOCKET_FILE: &str = "monitor.sock";
/// `crid-monitor --probe-idmapped-layers DIR` tries, in a scratch dir
/// beneath DIR, what a create in a pod user namespace does (an overlay of
/// an idmapped layer) and exits 0 only if it works.
pub const PROBE_IDMAPPED_LAYERS: &str = "--probe-idmapped-layers";
/// Largest frame either side accepts (exec output travels in one).
pub const MAX_FRAME_BYTES: u32 = 64 * 1024 * 1024;

/// The protocol this crid and this monitor speak. 1: JSON frames, errors
/// as strings, bytes as JSON arrays. 2: adds `Hello`, `Subscribe` and its
/// events, typed errors, and frames with raw bytes attached. 3: a create
/// may come with the bundle's [`ENV_FILE`] ([`ContainerCreate::env_file`]).
pub const PROTOCOL_VERSION: u32 = 3;
/// The version of monitors whose `monitor.json` names none.
pub const FIRST_PROTOCOL_VERSION: u32 = 1;

fn first_protocol_version() -> u32 {
    FIRST_PROTOCOL_VERSION
}

/// Namespaces the pod's pause process creates (the others are the host's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewNamespaces {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
}

/// One contiguous range of ids: `container_id..container_id + length`
/// inside a user namespace is `host_id..host_id + length` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMapping {
    /// The line `/proc/<pid>/uid_map` (and `gid_map`) takes.
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }
}

/// The mappings of a pod's own user namespace (CRI `userns_options` in
/// mode POD): one range per kind, starting at container id 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespaceMappings {
    pub uids: IdMapping,
    pub gids: IdMapping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub pod_id: String,
    pub namespaces: NewNamespaces,
    /// A new user namespace with these mappings, made first: pause and
    /// every container of the pod run in it, and pause's other new
    /// namespaces belong to it. None: the host's. (Monitors older than
    /// the field ignore it; crid starts only the monitor it ships with.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<UserNamespaceMappings>,
    /// Set in the new UTS namespace.
    pub hostname: Option<String>,
    /// Namespaced sysctls written by pause inside the new namespaces, as
    /// (`net.ipv4.ip_forward`, `1`).
    pub sysctls: Vec<(String, String)>,
    /// Files the launcher joins by writing "0" before it forks (v1 `tasks`,
    /// v2 `cgroup.procs`), so the monitor and pause are born in the pod's
    /// cgroup (one migration per hierarchy instead of one per process).
    #[serde(default)]
    pub cgroup_procs: Vec<PathBuf>,
    /// The protocol of the monitor binary crid started (monitors of
    /// version 1 ignore the field; their configs lack it).
    #[serde(default = "first_protocol_version")]
    pub protocol: u32,
}

/// The one line the monitor prints once the pod's pause process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorStarted {
    Ready {
        monitor_pid: i32,
        pause_pid: i32,
    },
    Failed {
        message: String,
        /// The pod's sysctl the pod's namespaces refused (its key): the
        /// request's fault, not the node's. Older monitors never set it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sysctl: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorRequest {
    /// Is pause still running?
    Status,
    /// Kill pause (and everything else of the pod), reap, and exit.
    Shutdown,
    /// Set up a container's init (namespaces, cgroup, rootfs, pivot_root)
    /// and leave it waiting for `StartContainer`. Answered by `Created`;
    /// with `placed_by_crid`, first by `Place`, on the same connection.
    CreateContainer(ContainerCreate),
    /// crid's answer to `Place`: the init is in its cgroup now. Anything
    /// else (or a closed connection) ends the create with an error.
    Placed,
    /// Let a created container's init exec its command. Answered by
    /// `Started`, or `Error` with why the exec failed.
    StartContainer { id: String },
    /// Send `signal` to a running container's init. Answered by `Done`.
    Signal { id: String, signal: i32 },
    /// Answered by `Exited` once the container's init has ended, or by
    /// `StillRunning` after `timeout_ms`.
    Wait { id: String, timeout_ms: u64 },
    /// Kill the container if it runs, reap it, and forget it. Answered by
    /// `Done` (also for an unknown id).
    RemoveContainer { id: String },
    /// Every container the monitor knows. Answered by `Containers`.
    Containers,
    /// Reopen the container's log file (after kubelet renamed it).
    ReopenLog { id: String },
    /// Run `args` in the running container (its namespaces, cgroup, user,
    /// env, cwd), collecting output. `timeout_ms` 0 means none. Answered by
    /// `ExecResult`.
    Exec {
        id: String,
        args: Vec<String>,
        timeout_ms: u64,
    },
    /// (v2) Run `args` in the running container as `Exec` does, but hand
    /// its stdio to crid: answered by `ExecStarted` with the descriptors
    /// crid keeps attached (SCM_RIGHTS), then, on the same connection, by
    /// `ExecEnded` once it ends. crid closing the connection first kills
    /// it. A version 2 monitor from before this request answers
    /// `Error { kind: InvalidRequest }`.
    ExecAttached(ExecAttached),
    /// (v2) Attach to a running container's stdio: answered by
    /// `Attached`, then the monitor pushes `AttachOutput` frames (output
    /// from now on; the log keeps being written) and a last `AttachEnded`
    /// when the container exits. crid sends `AttachInput`,
    /// `AttachCloseStdin` and `AttachResize` on the same connection and
    /// detaches by closing it. Several attachers share one container.
    Attach { id: String },
    /// (v2) Bytes for the attached container's stdin (dropped when it
    /// has none, or when its stdin does not take them now).
    AttachInput { data: Vec<u8> },
    /// (v2) The attacher's stdin ended: the container's stdin is closed
    /// if it is `stdin_once`.
    AttachCloseStdin,
    /// (v2) The attached container's terminal size.
    AttachResize { width: u16, height: u16 },
    /// (v2) Answered by `Hello` with the monitor's protocol version.
    Hello,
    /// (v2) Answered by `Subscribed` (everything `Status` and `Containers`
    /// say), after which the monitor pushes a [`MonitorEvent`] frame on the
    /// same connection whenever something happens, until either side
    /// closes it. A subscriber that does not read falls behind and is
    /// disconnected; it subscribes again and gets a fresh snapshot.
    Subscribe,
}

impl MonitorRequest {
    /// The first protocol version that knows the request: a monitor of an
    /// older one drops the connection on it.
    pub fn since(&self) -> u32 {
        match self {
            MonitorRequest::Hello | MonitorRequest::Subscribe | MonitorRequest::ExecAttached(_) => {
                2
            }
            // An older monitor would run the container with config.json's
            // lossy strings instead.
            MonitorRequest::CreateContainer(create) if create.env_file => ENV_FILE_SINCE,
            _ => FIRST_PROTOCOL_VERSION,
        }
    }

    /// The request's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            MonitorRequest::Status => "Status",
            MonitorRequest::Shutdown => "Shutdown",
            MonitorRequest::CreateContainer(_) => "CreateContainer",
            MonitorRequest::Placed => "Placed",
            MonitorRequest::StartContainer { .. } => "StartContainer",
            MonitorRequest::Signal { .. } => "Signal",
            MonitorRequest::Wait { .. } => "Wait",
            MonitorRequest::RemoveContainer { .. } => "RemoveContainer",
            MonitorRequest::Containers => "Containers",
            MonitorRequest::ReopenLog { .. } => "ReopenLog",
            MonitorRequest::Exec { .. } => "Exec",
            MonitorRequest::ExecAttached(_) => "ExecAttached",
            MonitorRequest::Attach { .. } => "Attach",
            MonitorRequest::AttachInput { .. } => "AttachInput",
            MonitorRequest::AttachCloseStdin => "AttachCloseStdin",
            MonitorRequest::AttachResize { .. } => "AttachResize",
            MonitorRequest::Hello => "Hello",
            MonitorRequest::Subscribe => "Subscribe",
        }
    }
}

/// An exec whose stdio crid relays (streaming Exec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecAttached {
    pub id: String,
    pub args: Vec<String>,
    /// A pty: the one descriptor sent is its master.
    pub tty: bool,
    /// Without a tty: a stdin pipe, whose write end is sent first
    /// (else stdin is `/dev/null`). Then stdout's and stderr's read ends.
    pub stdin: bool,
}

/// Everything the monitor needs to create a container. The bundle holds
/// `config.json` (the OCI spec the init follows) and `rootfs/` (the mounted
/// overlay); the monitor writes [`EXIT_FILE`] there when the init ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCreate {
    pub id: String,
    pub bundle: PathBuf,
    /// (v3) The bundle holds [`ENV_FILE`]: the init and every exec get that
    /// environment instead of `config.json`'s.
    #[serde(default)]
    pub env_file: bool,
    /// Files the init (and every exec) joins the container's cgroup
    /// through by writing "0", one per hierarchy (v1 `tasks`, v2
    /// `cgroup.procs`).
    pub cgroup_procs: Vec<PathBuf>,
    /// crid puts the init into its cgroup (the systemd driver: a scope can
    /// only be made with a process in it). The monitor then answers `Place`
    /// with the init's pid as soon as it is forked, and the init waits, before
    /// it joins any cgroup or namespace, until crid says `Placed`.
    #[serde(default)]
    pub placed_by_crid: bool,
    /// The file whose `oom_kill` counter says the kernel OOM-killed in the
    /// container's cgroup (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_events: Option<PathBuf>,
    /// What `/sys/fs/cgroup` shows inside the container.
    pub cgroup_view: CgroupView,
    /// The CRI log file; none: output is dropped. Resolved beneath its
    /// directory, so nothing in the directory can send it elsewhere.
    #[serde(default)]
    pub log: Option<LogFile>,
    /// `log`, joined: what monitors older than `log` open (as given). crid
    /// still sends it so that a monitor started by an older crid, which
    /// outlives the upgrade, keeps writing logs; newer monitors ignore it
    /// when `log` is present.
    pub log_path: Option<PathBuf>,
    /// Keep a stdin pipe open for the container (attach, later).
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
}

/// Where a container's CRI log goes: `relative` (kubelet's
/// `<container name>/<restart count>.log`) beneath the pod's
/// `log_directory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFile {
    /// Absolute: the pod's `log_directory`.
    pub directory: PathBuf,
    /// Relative, without `..`: crid's CreateContainer refuses anything else
    /// and the monitor cannot resolve it outside `directory` anyway.
    pub relative: PathBuf,
}

impl LogFile {
    /// The file's path as CRI reports it (`ContainerStatus.log_path`).
    pub fn path(&self) -> PathBuf {
        self.directory.join(&self.relative)
    }
}

/// The container's read-only view of its own cgroup at `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupView {
    /// v1: a tmpfs at `/sys/fs/cgroup` holding, per hierarchy, a read-only
    /// bind of the container's own cgroup dir, as runc does.
    V1 { hierarchies: Vec<CgroupV1Mount> },
    /// v2: a cgroup namespace rooted at the container's cgroup and a
    /// read-only cgroup2 mount.
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupV1Mount {
    /// Name under `/sys/fs/cgroup` (`memory`, `cpu,cpuacct`).
    pub name: String,
    /// The container's cgroup dir on the host in that hierarchy.
    pub host_dir: PathBuf,
    /// Symlinks beside it for co-mounted controllers (`cpu` → `cpu,cpuacct`).
    pub aliases: Vec<String>,
}

/// What the monitor knows about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// Host pid of the init.
    pub pid: i32,
    /// Nanoseconds since the epoch; 0 until started.
    pub started_at: i64,
    pub exit: Option<ContainerExit>,
}

/// How a container's init ended; also the content of [`EXIT_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerExit {
    pub status: ExitStatus,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
    pub oom_killed: bool,
}

/// Written (atomically, synced) into the bundle when the init ends, so
/// the exit survives crid restarts and crashes.
pub const EXIT_FILE: &str = "exit.json";

/// The container's environment byte for byte, written by crid into the
/// bundle when `config.json` cannot carry it (OCI's `process.env` is
/// strings; a CRI env value is bytes and need not be UTF-8): each
/// `KEY=value` entry followed by a NUL, as `/proc/<pid>/environ` shows it.
pub const ENV_FILE: &str = "env";
/// The first protocol version whose monitors read [`ENV_FILE`].
pub const ENV_FILE_SINCE: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorResponse {
    Status {
        pause_pid: i32,
        pause_exit: Option<ExitStatus>,
    },
    ShuttingDown,
    Error {
        /// Absent from version 1 monitors: `Unknown`.
        #[serde(default)]
        kind: ErrorKind,
        message: String,
    },
    Created {
        pid: i32,
    },
    /// Put these processes into the container's cgroup, then answer
    /// `Placed` (see `ContainerCreate::placed_by_crid`): the freshly forked
    /// init, and a holder that keeps the cgroup populated until the monitor
    /// has read the container's OOM count after its exit.
    Place {
        pids: Vec<i32>,
    },
    Started {
        started_at: i64,
    },
    Exited(ContainerExit),
    StillRunning,
    Containers(Vec<ContainerState>),
    ExecResult {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        /// None when the exec timed out (and was killed).
        exit: Option<ExitStatus>,
    },
    Done,
    /// (v2) `ExecAttached` runs as `pid`; its descriptors came with this
    /// frame.
    ExecStarted {
        pid: i32,
    },
    /// (v2) How an `ExecAttached` process ended.
    ExecEnded {
        exit: ExitStatus,
    },
    /// (v2) The answer to `Attach`.
    Attached {
        tty: bool,
    },
    /// (v2) Output of an attached container (stdout only with a tty).
    AttachOutput {
        stderr: bool,
        data: Vec<u8>,
    },
    /// (v2) The attached container exited; nothing follows.
    AttachEnded {
        exit: ExitStatus,
    },
    /// (v2) The answer to `Hello`.
    Hello {
        version: u32,
    },
    /// (v2) The answer to `Subscribe`: where things stand when the events
    /// begin.
    Subscribed(Snapshot),
}

/// Why the monitor refused a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No such container.
    NotFound,
    /// A container of that id exists already.
    AlreadyExists,
    /// The container is not in a state for it (not started, exited,
    /// started already).
    NotRunning,
    /// The request makes no sense (no command, not a signal, unknown
    /// request).
    InvalidRequest,
    /// The container could not be created (spec, rootfs, namespaces).
    CreateFailed,
    /// The container's command could not be run.
    StartFailed,
    /// The exec'd command could not be run.
    ExecFailed,
    /// The monitor's own failure.
    Internal,
    /// A version 1 monitor (errors without a kind), or a kind newer than
    /// this crid.
    #[default]
    #[serde(other)]
    Unknown,
}

/// Where a pod stands, as a subscription begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The monitor's protocol version.
    pub version: u32,
    pub pause_pid: i32,
    pub pause_exit: Option<ExitStatus>,
    pub containers: Vec<ContainerState>,
}

/// What a monitor pushes to its subscribers, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorEvent {
    ContainerStarted {
        id: String,
        started_at: i64,
    },
    /// Sent once the exit is durable in the bundle's [`EXIT_FILE`].
    ContainerExited {
        id: String,
        exit: ContainerExit,
    },
    PauseExited {
        status: ExitStatus,
    },
}

/// How a process ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The exit code CRI reports, as a shell does: the process's own code,
    /// or 128 + the signal that killed it.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            // Saturating: the status may come from an exit file on disk.
            ExitStatus::Signaled(signal) => 128_i32.saturating_add(signal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_the_code_or_128_plus_the_signal() {
        assert_eq!(ExitStatus::Exited(0).code(), 0);
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(ExitStatus::Signaled(15).code(), 143);
        assert_eq!(ExitStatus::Signaled(i32::MAX).code(), i32::MAX);
    }

    #[test]
    fn a_start_failure_names_its_sysctl_only_when_there_is_one() {
        // What a monitor older than the field reports still reads.
        let old: MonitorStarted =
            serde_json::from_str(r#"{"failed":{"message":"pause: x"}}"#).expect("old report");
        assert_eq!(
            old,
            MonitorStarted::Failed {
                message: "pause: x".into(),
                sysctl: None
            }
        );
        let plain = MonitorStarted::Failed {
            message: "m".into(),
            sysctl: None,
        };
        let json = serde_json::to_string(&plain).expect("json");
        assert_eq!(json, r#"{"failed":{"message":"m"}}"#);
        let refused = MonitorStarted::Failed {
            message: "m".into(),
            sysctl: Some("kernel.msgmni".into()),
        };
        let json = serde_json::to_string(&refused).expect("json");
        assert_eq!(
            serde_json::from_str::<MonitorStarted>(&json).ok(),
            Some(refused)
        );
    }
}
