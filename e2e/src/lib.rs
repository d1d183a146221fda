//! The end-to-end harness: each test gets its own [`TestEnv`] (temporary
//! root, state dir, socket and CNI conf dir), starts the real `crid` binary in
//! it as a user would, talks CRI to it over the unix socket with tonic, and
//! when the env is dropped fails the test if any process, mount or file of
//! the test is left behind.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::cri::image_service_client::ImageServiceClient;
use proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

pub mod registry;
pub mod spdy;

/// Where Debian's containernetworking-plugins puts the CNI plugins.
pub const DEBIAN_CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Upper bounds for waits, not expectations: a slow CI machine must still pass.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `crid` binary under test: `$CRID_BIN`, else the one cargo built next
/// to this test executable (target/<profile>/crid).
pub fn crid_binary() -> PathBuf {
    match find_crid_binary() {
        Ok(binary) => binary,
        Err(error) => panic!("{error:#}"),
    }
}

/// [`crid_binary`] as a `Result`, for binaries (cri-bench) that report
/// rather than panic.
pub fn find_crid_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CRID_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("current executable")?;
    // Tests run from target/<profile>/deps/, binaries such as cri-bench from
    // target/<profile>/; crid is in target/<profile>/ either way.
    let mut profile_dir = exe
        .parent()
        .context("the executable lives in target/<profile>")?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir
            .parent()
            .context("test executable lives in target/<profile>/deps")?;
    }
    let binary = profile_dir.join("crid");
    if !binary.is_file() {
        let how = if profile_dir.ends_with("release") {
            "`cargo build --release --workspace --bins`"
        } else {
            "`cargo build --workspace --bins` (the test script does)"
        };
        bail!("{} is missing: build it first with {how}", binary.display());
    }
    Ok(binary)
}

/// A private world for one test.
pub struct TestEnv {
    dir: tempfile::TempDir,
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    /// Bridges this test's CNI network created; deleted when the env drops
    /// (the bridge plugin never deletes its bridge, by design).
    bridges: std::sync::Mutex<Vec<String>>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("crid-e2e-")
            .tempdir()
            .expect("create test dir");
        let env = TestEnv {
            dir,
            extra_config: String::new(),
            bridges: std::sync::Mutex::new(Vec::new()),
        };
        fs::create_dir_all(env.cni_conf_dir()).expect("create CNI conf dir");
        env
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }
    pub fn socket(&self) -> PathBuf {
        self.path().join("crid.sock")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.path().join("net.d")
    }
    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.path().join("crid.log")
    }

    /// The config file every start uses: this env's paths, Debian's CNI
    /// plugins, `/metrics` on a free port (crid logs which), then `extra_config`.
    pub fn write_config(&self) {
        let config = format!(
            "root = {root:?}\nstate = {state:?}\nlisten = {socket:?}\n{extra}\n[cni]\nconf_dir = {conf:?}\nbin_dirs = [{bin:?}]\n[metrics]\naddress = \"127.0.0.1:0\"\n",
            root = self.root(),
            state = self.state(),
            socket = self.socket(),
            conf = self.cni_conf_dir(),
            bin = DEBIAN_CNI_BIN_DIR,
            extra = self.extra_config,
        );
        fs::write(self.config_path(), config).expect("write config");
    }

    /// `crid --config <this env's config>` with the given extra arguments,
    /// for tests that run it as a command (errors at start).
    pub fn command(&self, args: &[&str]) -> Command {
        self.write_config();
        let mut command = Command::new(crid_binary());
        command.arg("--config").arg(self.config_path()).args(args);
        command
    }

    /// Runs crid to completion (it is expected to refuse to start) and
    /// returns its exit status and stderr.
    pub fn run_to_exit(&self, command: &mut Command) -> (ExitStatus, String) {
        let output = command.stdin(Stdio::null()).output().expect("run crid");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Starts crid with this env's config and waits until it answers CRI.
    pub async fn start(&self) -> Crid {
        self.start_at_log_level("debug").await
    }

    /// [`TestEnv::start`] at another log level: benchmarks use `info`, as
    /// debug logging costs time on every RPC.
    pub async fn start_at_log_level(&self, level: &str) -> Crid {
        self.start_with(self.command(&["--log-level", level]), self.socket())
            .await
    }

    /// [`TestEnv::start`], with crid killing itself at crash point `step`
    /// (debug builds; see pod_sandbox::fault).
    pub async fn start_crashing_at(&self, step: &str) -> Crid {
        let mut command = self.command(&["--log-level", "debug"]);
        command.env("CRID_TEST_CRASH_AT", step);
        self.start_with(command, self.socket()).await
    }

    /// Starts `command` and waits until crid answers on `socket`.
    pub async fn start_with(&self, mut command: Command, socket: PathBuf) -> Crid {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open crid log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn crid");
        let mut crid = Crid {
            child,
            socket,
            log_path: self.log_path(),
            stopped: false,
        };
        if let Err(error) = crid.wait_ready().await {
            crid.kill();
            panic!(
                "crid did not start: {error:#}\n--- crid log ---\n{}",
                crid.log()
            );
        }
        crid
    }

    /// Configures a bridge network of this test's own (bridge name at most 15
    /// characters, a private subnet no other test uses) and returns the
    /// directory where host-local keeps its leases.
    pub fn bridge_network(&self, bridge: &str, subnet: &str) -> PathBuf {
        let leases = self.path().join("leases");
        self.write_cni_config(
            "10-crid-e2e.conflist",
            &bridge_conflist(bridge, subnet, &leases),
        );
        self.bridges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bridge.to_string());
        leases
    }

    /// Writes a CNI network config file into this env's conf dir.
    pub fn write_cni_config(&self, file_name: &str, content: &str) {
        fs::write(self.cni_conf_dir().join(file_name), content).expect("write CNI config");
    }

    /// Everything this env left: processes that mention its directory,
    /// mounts under it, and files in the state dir other than crid's lock.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        let dir = self.path().to_string_lossy().into_owned();
        for pid in processes_mentioning(&dir) {
            leaks.push(format!(
                "process {pid} ({}) is still running",
                process_command_line(pid)
            ));
        }
        if let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") {
            for line in mountinfo.lines().filter(|line| line.contains(dir.as_str())) {
                leaks.push(format!("mount left: {line}"));
            }
        }
        if self.socket().exists() {
            leaks.push(format!("socket {} left", self.socket().display()));
        }
        if let Ok(entries) = fs::read_dir(self.state()) {
            for entry in entries
                .flatten()
                .filter(|entry| entry.file_name() != "crid.lock")
            {
                // The `pods` and `containers` dirs may stay, empty; anything
                // else is a leak.
                let empty_dir =
                    fs::read_dir(entry.path()).is_ok_and(|mut dir| dir.next().is_none());
                if !(empty_dir
                    && ["pods", "containers"].contains(&&*entry.file_name().to_string_lossy()))
                {
                    leaks.push(format!("state file left: {}", entry.path().display()));
                }
            }
        }
        // A container's writable layer lives under the root dir.
        if let Ok(entries) = fs::read_dir(self.root().join("containers")) {
            for entry in entries.flatten() {
                leaks.push(format!("container layer left: {}", entry.path().display()));
            }
        }
        leaks
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

impl TestEnv {
    /// After a failed test: container processes (which do not mention this
    /// env's dir) die with their pod's and containers' cgroups, wherever
    /// their `cgroup_parent` put them (crid names each cgroup by its pod's
    /// or container's id), and mounts under the dir go.
    fn sweep_failed_pods(&self) {
        let ids: BTreeSet<std::ffi::OsString> = ["pods", "containers"]
            .into_iter()
            .flat_map(|kind| {
                fs::read_dir(self.state().join(kind))
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect();
        // v1: every hierarchy; v2: the one tree.
        let hierarchies: Vec<PathBuf> = if cgroup_v2() {
            vec![PathBuf::from(CGROUP_ROOT)]
        } else {
            fs::read_dir(CGROUP_ROOT)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        if !ids.is_empty() {
            for hierarchy in &hierarchies {
                kill_cgroups_named(hierarchy, &ids, 8);
            }
        }
        let dir = self.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|mount_point| mount_point.starts_with(dir.as_str()))
            .map(str::to_string)
            .collect();
        // Deepest first.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount_point in mounts {
            let _ = nix::mount::umount2(mount_point.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The node's cgroup mount point.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether the node has a pure cgroup v2 hierarchy (cgroup2 on
/// /sys/fs/cgroup, as scripts/vm-lane's VM has), not v1's per-controller
/// mounts (or a v1 hybrid, as this project's CI host has).
pub fn cgroup_v2() -> bool {
    Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
}

/// The dir of `cgroup` (a cgroupfs path such as `/crid/<pod>`): in the v1
/// hierarchy of `controller`, or in the one v2 tree.
pub fn cgroup_dir(controller: &str, cgroup: &str) -> PathBuf {
    let relative = cgroup.trim_start_matches('/');
    if cgroup_v2() {
        Path::new(CGROUP_ROOT).join(relative)
    } else {
        Path::new(CGROUP_ROOT).join(controller).join(relative)
    }
}

/// Kills the processes of every cgroup below `dir` (at most `depth` levels
/// down) whose name is one of `names`, and removes those cgroups.
fn kill_cgroups_named(dir: &Path, names: &BTreeSet<std::ffi::OsString>, depth: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten().filter(|e| e.path().is_dir()) {
        if names.contains(&entry.file_name()) {
            kill_cgroup_tree(&entry.path());
        } else if depth > 0 {
            kill_cgroups_named(&entry.path(), names, depth - 1);
        }
    }
}

/// Kills every process in a cgroup and below, then removes the cgroups.
fn kill_cgroup_tree(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten().filter(|e| e.path().is_dir()) {
        kill_cgroup_tree(&entry.path());
    }
    for _ in 0..200 {
        let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let leaks = self.leaks();
        // Never leave anything for the next test, whatever happened.
        for pid in processes_mentioning(&self.path().to_string_lossy()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.sweep_failed_pods();
        for bridge in self
            .bridges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(Stdio::null())
                .status();
        }
        if !leaks.is_empty() && !std::thread::panicking() {
            panic!("the test left things behind:\n  {}", leaks.join("\n  "));
        }
    }
}

/// A running crid.
pub struct Crid {
    child: Child,
    socket: PathBuf,
    log_path: PathBuf,
    stopped: bool,
}

impl Crid {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("crid exited early with {status}");
            }
            // Until crid binds it, the path may be absent or a stale socket.
            if let Ok(mut client) = self.runtime().await
                && client
                    .version(proto::cri::VersionRequest::default())
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "crid did not answer Version on {} within {START_TIMEOUT:?}",
                    self.socket.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn channel(&self) -> Result<Channel> {
        connect_unix(&self.socket).await
    }

    pub async fn runtime(&self) -> Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    pub async fn images(&self) -> Result<ImageServiceClient<Channel>> {
        Ok(ImageServiceClient::new(self.channel().await?))
    }

    /// Sends `signal` and waits for crid to exit; returns its exit status.
    /// Async so the test's own clients keep running and can answer crid's
    /// GOAWAY while it drains connections.
    pub async fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        kill(Pid::from_raw(self.pid()), signal).expect("signal crid");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for crid") {
                self.stopped = true;
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "crid did not exit within {STOP_TIMEOUT:?} of {signal}\n--- crid log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The clean stop every test ends with: SIGTERM, exit status 0.
    pub async fn stop(&mut self) {
        let status = self.stop_with(Signal::SIGTERM).await;
        assert!(
            status.success(),
            "crid exited with {status} after SIGTERM\n--- crid log ---\n{}",
            self.log()
        );
    }

    pub fn kill(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.stopped = true;
        }
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Where crid serves `/metrics`: the address it logged at start (the
    /// harness asks for a free port).
    pub fn metrics_address(&self) -> Option<String> {
        let log = self.log();
        let line = log.lines().find(|line| line.contains("serving /metrics"))?;
        let rest = line.split("address=").nth(1)?;
        Some(rest.split_whitespace().next()?.trim_matches('"').to_owned())
    }
}

impl Drop for Crid {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `command` inside namespaces of process `pid` (`flag`: `-n` net,
/// `-u` uts, `-i` ipc, …) with util-linux's nsenter; its trimmed stdout.
pub fn nsenter(pid: impl std::fmt::Display, flag: &str, command: &[&str]) -> String {
    let output = Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .arg(flag)
        .args(command)
        .output()
        .expect("nsenter (util-linux)");
    assert!(
        output.status.success(),
        "nsenter {flag} {command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A tonic channel over a unix socket (the URI is required but unused).
pub async fn connect_unix(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::1]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .with_context(|| "connect to crid's socket")
}

/// The command line of process `pid`, arguments joined by spaces (empty if gone).
pub fn process_command_line(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            String::from_utf8_lossy(&bytes)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The field `key` (`CapEff`, `NSpid`, …) of a `/proc/<pid>/status` text,
/// trimmed. Panics if there is none: the kernel always shows the fields
/// the tests ask for.
pub fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
        .to_string()
}

/// Processes (other than this test process) whose command line, working
/// directory, root, executable or an open file mentions `needle`, and the
/// members of the sessions such a process leads. A pod's monitor shows its
/// pod dir only through its log (stderr) once started, as its argv names
/// no path; pause and the monitor's other forks are in its session.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|pid| pid != me))
        .collect();
    let mentions = |link: PathBuf| {
        fs::read_link(link).is_ok_and(|target| target.to_string_lossy().contains(needle))
    };
    let found: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&pid| {
            ["cwd", "root", "exe"]
                .iter()
                .any(|link| mentions(format!("/proc/{pid}/{link}").into()))
                || fs::read_dir(format!("/proc/{pid}/fd"))
                    .is_ok_and(|fds| fds.flatten().any(|fd| mentions(fd.path())))
                || process_command_line(pid).contains(needle)
        })
        .collect();
    let leaders: Vec<i32> = found
        .iter()
        .copied()
        .filter(|&pid| session_of(pid) == Some(pid))
        .collect();
    pids.into_iter()
        .filter(|pid| {
            found.contains(pid) || session_of(*pid).is_some_and(|sid| leaders.contains(&sid))
        })
        .collect()
}

/// The session id of `pid` (as this process's PID namespace sees it).
fn session_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(") ")?;
    // state, ppid, pgrp, session
    fields.split_whitespace().nth(3)?.parse().ok()
}

/// A bridge + host-local + loopback network using Debian's plugins, on a
/// bridge and subnet of the test's own, with host-local's leases in
/// `lease_dir`. `isGateway` stays off so the host's `ip_forward` is never
/// changed by a test.
pub fn bridge_conflist(bridge: &str, subnet: &str, lease_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("{bridge}-net"),
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet }]],
                    "dataDir": lease_dir,
                }
            },
            { "type": "loopback" }
        ]
    })
    .to_string()
}

/// Alive and not a zombie.
pub fn running(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits (30 s at most, then panics naming `what`) until `condition`.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
