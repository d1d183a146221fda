//! cri-bench: times the container hot paths through CRI, the way kubelet
//! drives them, against crid and/or a private containerd 1.6 (Debian's
//! `containerd` + `runc`), and prints medians and ratios. A benchmark, not a
//! test: it asserts nothing about time.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p e2e --bin cri-bench -- [--runtime crid|containerd|both]
//!     [--containerd] [--runs N] [--execs N] [--network pod|node]
//!     [--stream-execs N] [--forwards N] [--forward-mib MIB] [--only-streaming]
//!     [--density PODS [--containers-per-pod K] [--list-calls M]]
//! ```
//!
//! By default it times whole pod lifecycles (`--runs`), then streaming in
//! one pod with the e2e tests' SPDY/3.1 client (`e2e::spdy`): exec round
//! trips (Exec RPC, upgrade, streams, until the exit status arrives) and
//! port-forward pulls (PortForward RPC, upgrade, until the last byte of
//! a server in the pod's network namespace arrives). With `--density`
//! it instead starts PODS pods of K running containers each, then times
//! what kubelet asks of a full node (ListContainers, ListPodSandbox,
//! PodSandboxStatus, ContainerStatus, M times each; ListContainerStats,
//! ListPodSandboxStats and, on crid, a `/metrics` scrape 10 times each,
//! every one after the collector's freshness window, as kubelet's and
//! Prometheus's polls come) and reports what the
//! runtime's own per-pod processes weigh (PSS and private memory of
//! crid-monitor + pause, or containerd-shim + pause) and how much the
//! daemon grew.
//!
//! Everything is private and removed at the end: a docker-registry on
//! 127.0.0.1 holding a busybox image and a pause image built here, crid in an
//! `e2e::TestEnv`, containerd on its own root, state, socket, CNI network
//! and runc root under a temp dir. Every runtime gets the same pod and
//! container config and the same sequence of RPCs, over the same client
//! code; only the socket differs.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, ValueEnum};
use e2e::registry::{BUSYBOX, Blob, Layer, Registry, Schema, busybox_layer};
use e2e::spdy::{self, Streams};
use e2e::{TestEnv, bridge_conflist, connect_unix, processes_mentioning};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::cri;
use proto::cri::image_service_client::ImageServiceClient;
use proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Private bridges and subnets of the benchmark's own: no e2e test uses them
/// (tests use 10.250.x and 10.251.x), so a bench can run beside the suite.
const CRID_BRIDGE: (&str, &str) = ("cribench0", "10.231.7.0/24");
const CONTAINERD_BRIDGE: (&str, &str) = ("cribench1", "10.231.8.0/24");
/// The pods' cgroup parent (cgroupfs), as kubelet's `/kubepods/...`; removed
/// at the end.
const CGROUP_PARENT: &str = "cri-bench";
/// The container stops promptly on SIGTERM: a shell as PID 1 has no default
/// action for it, so it traps it. Its sleep outlasts any bench and is told
/// apart from containerd's sandbox (`sleep 2147483647`) by its argument.
const CONTAINER_COMMAND: &str = "trap 'exit 0' TERM; sleep 1000000 & wait";
/// The containers' own processes, as `process_command_line` shows them: not
/// the runtime's overhead.
const WORKLOAD_COMMAND_LINES: &[&str] = &[
    "sh -c trap 'exit 0' TERM; sleep 1000000 & wait",
    "sleep 1000000",
];
/// Applets the images link to busybox (the base layer has only `sh`).
const APPLETS: &[&str] = &[
    "cat", "echo", "env", "hostname", "id", "ip", "ls", "mkdir", "ps", "sleep", "true", "false",
    "wget",
];
const RPC_TIMEOUT_SECONDS: i64 = 10;
/// A hung runtime fails the bench instead of hanging it.
const RPC_DEADLINE: Duration = Duration::from_secs(120);
/// Upper bounds for daemons to start and stop, not expectations.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(about = "Time CRI hot paths on crid and containerd (run as root)")]
struct Args {
    /// Which runtime(s) to measure.
    #[arg(long, value_enum, default_value_t = Which::Crid)]
    runtime: Which,
    /// Same as `--runtime both`: measure containerd too and print ratios.
    #[arg(long)]
    containerd: bool,
    /// Timed runs per runtime (after one untimed warm-up run).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// ExecSync calls per run, each timed.
    #[arg(long, default_value_t = 5)]
    execs: usize,
    /// The pods' network namespace: their own with a CNI bridge, or the node's.
    #[arg(long, value_enum, default_value_t = Network::Pod)]
    network: Network,
    /// Run crid at debug level and print the medians of its pod and
    /// container steps (`<kind> step done`); slows every RPC a little.
    #[arg(long)]
    crid_steps: bool,
    /// Instead of lifecycle runs: keep this many pods running, time the
    /// List and Status calls on them and weigh the per-pod processes.
    #[arg(long, value_name = "PODS")]
    density: Option<usize>,
    /// Running containers per pod with `--density`.
    #[arg(long, default_value_t = 1)]
    containers_per_pod: usize,
    /// Timed calls of each List/Status RPC with `--density`.
    #[arg(long, default_value_t = 200)]
    list_calls: usize,
    /// Exec round trips over SPDY/3.1 timed per runtime (after one warm-up).
    #[arg(long, default_value_t = 20)]
    stream_execs: usize,
    /// Port-forward pulls timed per runtime (after one warm-up); they need
    /// `--network pod`.
    #[arg(long, default_value_t = 5)]
    forwards: usize,
    /// MiB each port-forward pull carries.
    #[arg(long, default_value_t = 64)]
    forward_mib: usize,
    /// Only the streaming part: no lifecycle runs.
    #[arg(long)]
    only_streaming: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    Crid,
    Containerd,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Network {
    Pod,
    Node,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    Crid,
    Containerd,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Crid => "crid",
            Runtime::Containerd => "containerd",
        }
    }
}

/// The timed RPCs, in the order of a run.
const RPCS: &[&str] = &[
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "ExecSync",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];
const POD_READY: &str = "pod ready";
/// What the streaming part times, in ms.
const EXEC_ROUND_TRIP: &str = "exec over SPDY";
/// What the streaming part measures in MB/s (10^6 bytes), not ms.
const FORWARD_THROUGHPUT: &str = "port-forward MB/s";
/// Where the pod's pull server listens, in its own network namespace.
const FORWARD_PORT: u16 = 8080;
/// What `--density` times on the full node, in the order of each round.
const LIST_RPCS: &[&str] = &[
    "ListContainers",
    "ListPodSandbox",
    "PodSandboxStatus",
    "ContainerStatus",
    "ListContainerStats",
    "ListPodSandboxStats",
    SCRAPE,
];
const SCRAPE: &str = "GET /metrics";
/// Stats calls with `--density`: each after a pause longer than crid's
/// collector keeps a sample (1 s), so each reads every container's files,
/// as kubelet's polls (10 s apart and more) do.
const STATS_CALLS: usize = 10;
const STATS_PAUSE: Duration = Duration::from_millis(1100);
/// What `--density` times while it fills the node (one sample per pod or
/// container), to see how starting scales with what already runs.
const FILL_RPCS: &[&str] = &["RunPodSandbox", "CreateContainer", "StartContainer"];

/// The images every runtime pulls from the private registry.
struct Images {
    /// busybox with applet links, running as root.
    busybox: String,
    /// busybox whose entrypoint sleeps forever: containerd's sandbox image
    /// (crid has its pause built in).
    pause: String,
}

/// Milliseconds per RPC name, in the order the samples were taken.
#[derive(Default)]
struct Samples(HashMap<&'static str, Vec<f64>>);

impl Samples {
    fn add(&mut self, rpc: &'static str, elapsed: Duration) {
        self.0
            .entry(rpc)
            .or_default()
            .push(elapsed.as_secs_f64() * 1e3);
    }

    fn push(&mut self, line: &'static str, value: f64) {
        self.0.entry(line).or_default().push(value);
    }

    fn get(&self, rpc: &str) -> &[f64] {
        self.0.get(rpc).map(Vec::as_slice).unwrap_or(&[])
    }
}

struct Report {
    runtime: Runtime,
    /// What the runtime's Version RPC says, plus its OCI runtime if separate.
    version: String,
    samples: Samples,
    /// With `--density`: what the full node weighs.
    density: Option<Density>,
}

/// Memory of a node full of pods, from `/proc/<pid>/smaps_rollup`.
struct Density {
    pods: usize,
    containers: usize,
    /// The runtime's processes beside the containers' own (crid-monitor,
    /// pause, holders; containerd-shim, pause), summed over the node.
    overhead: Memory,
    overhead_processes: usize,
    /// The daemon (crid or containerd) before the pods and with them.
    daemon_before: Memory,
    daemon_after: Memory,
}

/// Kibibytes, as smaps_rollup counts them.
#[derive(Clone, Copy, Default)]
struct Memory {
    rss: u64,
    pss: u64,
    /// Private_Clean + Private_Dirty: what the process alone pays for.
    private: u64,
}

impl Memory {
    fn of(pid: i32) -> Result<Memory> {
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .with_context(|| format!("read /proc/{pid}/smaps_rollup"))?;
        let mut memory = Memory::default();
        for line in rollup.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(kib) = value.parse::<u64>() else {
                continue;
            };
            match key {
                "Rss:" => memory.rss += kib,
                "Pss:" => memory.pss += kib,
                "Private_Clean:" | "Private_Dirty:" => memory.private += kib,
                _ => {}
            }
        }
        Ok(memory)
    }

    fn add(&mut self, other: Memory) {
        self.rss += other.rss;
        self.pss += other.pss;
        self.private += other.private;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("cri-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false) when a runtime failed (its error already printed), so that the
/// other runtime's numbers are still shown.
fn run(args: &Args) -> Result<bool> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "run as root: the runtimes create namespaces, mounts and cgroups"
    );
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(
        !args.only_streaming || args.density.is_none(),
        "--only-streaming and --density are different modes"
    );
    let runtimes = match (args.runtime, args.containerd) {
        (Which::Crid, false) => vec![Runtime::Crid],
        (Which::Containerd, false) => vec![Runtime::Containerd],
        _ => vec![Runtime::Crid, Runtime::Containerd],
    };
    print_environment(args);
    // Two workers: the client is light, and the runtimes need the cores more.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;

    let registry = Registry::start();
    let images = tokio.block_on(push_images(&registry))?;
    let cgroups_before = cgroup_dirs();
    let mut reports = Vec::new();
    let mut ok = true;
    for runtime in runtimes {
        println!("\n== {} ==", runtime.name());
        let result = match runtime {
            Runtime::Crid => tokio.block_on(bench_crid(args, &registry, &images)),
            Runtime::Containerd => tokio.block_on(bench_containerd(args, &registry, &images)),
        };
        match result {
            Ok(report) => {
                print_report(&report, args);
                reports.push(report);
            }
            Err(error) => {
                eprintln!("cri-bench: {} failed: {error:#}", runtime.name());
                ok = false;
            }
        }
    }
    remove_cgroup_parent();
    let left: Vec<String> = cgroup_dirs().difference(&cgroups_before).cloned().collect();
    if !left.is_empty() {
        eprintln!("cri-bench: cgroups left behind:\n  {}", left.join("\n  "));
        ok = false;
    }
    if let [crid, containerd] = &reports[..] {
        print_comparison(crid, containerd, args);
    }
    Ok(ok)
}

fn print_environment(args: &Args) {
    let command: Vec<String> = std::env::args().collect();
    println!("command: {}", command.join(" "));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    };
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "environment: kernel {}, {cores} cores ({cpu}), cgroup {cgroup}, load {}",
        kernel.trim(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    match args.density {
        Some(pods) => println!(
            "config: {pods} pods of {} running containers, {} calls of each List/Status RPC, network {:?}",
            args.containers_per_pod, args.list_calls, args.network
        ),
        None => {
            if !args.only_streaming {
                println!(
                    "config: {} timed runs + 1 warm-up per runtime, {} ExecSync per run, network {:?}",
                    args.runs, args.execs, args.network
                );
            }
            println!(
                "config: streaming: {} exec round trips and {} port-forward pulls of {} MiB (+1 warm-up each)",
                args.stream_execs, args.forwards, args.forward_mib
            );
        }
    }
}

/// busybox with the applets the container and exec use, and the pause image
/// built from it (containerd needs a pause *image*; this one sleeps, and
/// containerd stops sandboxes with SIGKILL).
async fn push_images(registry: &Registry) -> Result<Images> {
    fs::metadata(BUSYBOX)
        .with_context(|| format!("{BUSYBOX}: install the Debian package `busybox-static`"))?;
    let mut applets = Layer::new();
    applets.dir("bin/");
    for applet in APPLETS {
        applets.symlink(&format!("bin/{applet}"), "busybox");
    }
    for dir in ["dev/", "proc/", "sys/", "root/", "run/", "var/"] {
        applets.dir(dir);
    }
    let layers: [Blob; 2] = [busybox_layer(), applets.gzip()];
    let config = |entrypoint: &[&str]| {
        serde_json::json!({
            "User": "0:0",
            "Env": ["PATH=/bin"],
            "Entrypoint": entrypoint,
            "Cmd": if entrypoint.is_empty() { vec!["sh"] } else { vec![] },
            "WorkingDir": "/",
        })
    };
    let pusher = registry.pusher();
    let busybox = pusher
        .image_with("bench/busybox", "1", &config(&[]), &layers, Schema::Oci)
        .await;
    let pause = pusher
        .image_with(
            "bench/pause",
            "1",
            &config(&["/bin/sleep", "2147483647"]),
            &layers,
            Schema::Oci,
        )
        .await;
    Ok(Images {
        busybox: busybox.reference,
        pause: pause.reference,
    })
}

async fn bench_crid(args: &Args, registry: &Registry, images: &Images) -> Result<Report> {
    let crid = e2e::find_crid_binary()?;
    let monitor = crid.with_file_name("crid-monitor");
    ensure!(
        monitor.is_file(),
        "{} is missing: build it beside crid with `cargo build --release --workspace --bins`",
        monitor.display()
    );
    // A debug crid would make the comparison meaningless.
    if !cfg!(debug_assertions) && !crid.parent().is_some_and(|dir| dir.ends_with("release")) {
        eprintln!(
            "cri-bench: warning: {} is not a release build",
            crid.display()
        );
    }
    let mut env = TestEnv::new();
    // The streaming server where the bench's client may dial (crid's
    // default, said here as containerd's config says it).
    env.extra_config = format!(
        "{}\n[streaming]\naddress = \"127.0.0.1:0\"\n",
        registry.crid_config()
    );
    if args.network == Network::Pod {
        env.bridge_network(CRID_BRIDGE.0, CRID_BRIDGE.1);
    }
    // Debug logging costs time on every RPC; info is what a node runs.
    let level = if args.crid_steps { "debug" } else { "info" };
    let mut daemon = env.start_at_log_level(level).await;
    let channel = connect_unix(&env.socket()).await?;
    let result = bench(
        Runtime::Crid,
        channel.clone(),
        args,
        images,
        env.path(),
        daemon.pid(),
        daemon.metrics_address(),
    )
    .await;
    let cleanup = remove_everything(channel).await;
    let status = daemon.stop_with(Signal::SIGTERM).await;
    // The env checks on drop that no process, mount or state file is left
    // (and panics naming them if one is), so a failure is said first.
    for error in [result.as_ref().err(), cleanup.as_ref().err()]
        .into_iter()
        .flatten()
    {
        eprintln!("cri-bench: crid: {error:#}");
    }
    if result.is_err() || cleanup.is_err() {
        let log = daemon.log();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "cri-bench: the end of crid's log:\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        );
    }
    let report = result?;
    cleanup?;
    if args.crid_steps {
        print_step_medians(&daemon.log());
    }
    ensure!(
        status.success(),
        "crid exited with {status} after SIGTERM; its log:\n{}",
        daemon.log()
    );
    Ok(report)
}

async fn bench_containerd(args: &Args, registry: &Registry, images: &Images) -> Result<Report> {
    let mut containerd = Containerd::start(registry, &images.pause)?;
    let result = async {
        let channel = containerd.wait_ready().await?;
        let pid = containerd.pid()?;
        let report = bench(
            Runtime::Containerd,
            channel.clone(),
            args,
            images,
            containerd.dir.path(),
            pid,
            None,
        )
        .await;
        let cleanup = remove_everything(channel).await;
        let mut report = report?;
        cleanup?;
        report.version.push_str(&format!(", {}", runc_version()));
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    let shutdown = containerd.shutdown();
    match (result, shutdown) {
        (Ok(report), Ok(())) => Ok(report),
        (Err(error), shutdown) => {
            if let Err(shutdown) = shutdown {
                eprintln!("cri-bench: containerd cleanup: {shutdown:#}");
            }
            Err(error)
        }
        (Ok(report), Err(shutdown)) => {
            // The numbers stand; the leak still fails the bench.
            print_report(&report, args);
            Err(shutdown)
        }
    }
}

fn runc_version() -> String {
    Command::new("runc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "runc (version unknown)".to_string())
}

/// Pulls, warms up, then times `args.runs` runs (or fills the node, with
/// `--density`). The same code for every runtime: only `channel` differs;
/// `dir` holds everything of the runtime's and `daemon` is its pid;
/// `metrics` is where it serves Prometheus metrics, if it does (crid).
async fn bench(
    runtime: Runtime,
    channel: Channel,
    args: &Args,
    images: &Images,
    dir: &Path,
    daemon: i32,
    metrics: Option<String>,
) -> Result<Report> {
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut images_client = ImageServiceClient::new(channel);
    let version = rt
        .version(cri::VersionRequest::default())
        .await
        .context("Version")?
        .into_inner();
    let version = format!("{} {}", version.runtime_name, version.runtime_version);
    println!("runtime: {version}");

    // Pulls are not what is measured here: pull everything first, so that
    // containerd's RunPodSandbox does not fetch its sandbox image.
    let mut to_pull = vec![images.busybox.as_str()];
    if runtime == Runtime::Containerd {
        to_pull.push(&images.pause);
    }
    let mut image_ref = String::new();
    for image in to_pull {
        let response = images_client
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("PullImage {image}"))?
            .into_inner();
        if image == images.busybox {
            image_ref = response.image_ref;
        }
    }

    let logs = dir.join("pod-logs");
    if let Some(pods) = args.density {
        // One whole pod's life first, untimed, as before the lifecycle
        // runs: the code pages, caches and lazily made dirs that any pod
        // touches once are then in the daemon's "before", and its growth
        // is what the pods themselves keep.
        one_run(&mut rt, 0, args, &image_ref, &logs, &mut Samples::default())
            .await
            .context("warm-up run")?;
        let (mut samples, density) =
            fill_node(&mut rt, pods, args, &image_ref, &logs, dir, daemon).await?;
        time_stats(
            &mut rt,
            &mut samples,
            density.containers,
            metrics.as_deref(),
        )
        .await?;
        return Ok(Report {
            runtime,
            version,
            samples,
            density: Some(density),
        });
    }
    let mut samples = Samples::default();
    let runs = if args.only_streaming {
        0
    } else {
        args.runs + 1
    };
    for run in 0..runs {
        let mut this_run = Samples::default();
        one_run(&mut rt, run, args, &image_ref, &logs, &mut this_run)
            .await
            .with_context(|| format!("run {run}"))?;
        // Run 0 is the warm-up: caches, lazily created dirs, first CNI ADD.
        if run > 0 {
            let ready: f64 = ["RunPodSandbox", "CreateContainer", "StartContainer"]
                .iter()
                .map(|rpc| this_run.get(rpc).iter().sum::<f64>())
                .sum();
            for (rpc, values) in this_run.0 {
                samples.0.entry(rpc).or_default().extend(values);
            }
            samples.push(POD_READY, ready);
        }
    }
    time_streaming(&mut rt, args, &image_ref, &logs, &mut samples)
        .await
        .context("streaming")?;
    Ok(Report {
        runtime,
        version,
        samples,
        density: None,
    })
}

/// `--density`: starts `pods` pods of `args.containers_per_pod` running
/// containers, weighs the processes, then times the List and Status calls
/// kubelet makes on a full node. The caller removes everything afterwards.
async fn fill_node(
    rt: &mut RuntimeServiceClient<Channel>,
    pods: usize,
    args: &Args,
    image_ref: &str,
    logs: &Path,
    dir: &Path,
    daemon: i32,
) -> Result<(Samples, Density)> {
    ensure!(pods > 0, "--density must be at least 1");
    ensure!(
        args.containers_per_pod > 0,
        "--containers-per-pod must be at least 1"
    );
    // Settled before the first pod: pulls, the first calls and the
    // caller's warm-up pod are done.
    let daemon_before = Memory::of(daemon)?;
    let mut samples = Samples::default();
    let mut pod_ids = Vec::with_capacity(pods);
    let mut container_ids = Vec::with_capacity(pods * args.containers_per_pod);
    for pod in 0..pods {
        let uid = format!("cri-bench-{}-density-{pod}", std::process::id());
        let log_dir = logs.join(&uid);
        fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
        let config = pod_config(&uid, pod, args.network, &log_dir);
        let pod_id = timed(
            &mut samples,
            "RunPodSandbox",
            rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            }),
        )
        .await
        .with_context(|| format!("pod {pod}"))?
        .pod_sandbox_id;
        for container in 0..args.containers_per_pod {
            let container_id = timed(
                &mut samples,
                "CreateContainer",
                rt.create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod_id.clone(),
                    config: Some(container_config(
                        &format!("bench-{container}"),
                        image_ref,
                        args.network,
                    )),
                    sandbox_config: Some(config.clone()),
                }),
            )
            .await
            .with_context(|| format!("pod {pod} container {container}"))?
            .container_id;
            timed(
                &mut samples,
                "StartContainer",
                rt.start_container(cri::StartContainerRequest {
                    container_id: container_id.clone(),
                }),
            )
            .await
            .with_context(|| format!("pod {pod} container {container}"))?;
            container_ids.push(container_id);
        }
        pod_ids.push(pod_id);
    }

    let mut overhead = Memory::default();
    let mut overhead_processes = 0;
    for pid in runtime_processes(dir, daemon) {
        let command_line = e2e::process_command_line(pid);
        if WORKLOAD_COMMAND_LINES.contains(&command_line.as_str()) {
            continue;
        }
        // A process that ended since the scan weighs nothing.
        if let Ok(memory) = Memory::of(pid) {
            overhead.add(memory);
            overhead_processes += 1;
        }
    }
    let daemon_after = Memory::of(daemon)?;

    for call in 0..args.list_calls {
        let listed = timed(
            &mut samples,
            "ListContainers",
            rt.list_containers(cri::ListContainersRequest::default()),
        )
        .await?;
        ensure!(
            listed.containers.len() == container_ids.len(),
            "ListContainers shows {} containers, {} were started",
            listed.containers.len(),
            container_ids.len()
        );
        let listed = timed(
            &mut samples,
            "ListPodSandbox",
            rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()),
        )
        .await?;
        ensure!(
            listed.items.len() == pod_ids.len(),
            "ListPodSandbox shows {} pods, {} were started",
            listed.items.len(),
            pod_ids.len()
        );
        timed(
            &mut samples,
            "PodSandboxStatus",
            rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_ids[call % pod_ids.len()].clone(),
                verbose: false,
            }),
        )
        .await?;
        let status = timed(
            &mut samples,
            "ContainerStatus",
            rt.container_status(cri::ContainerStatusRequest {
                container_id: container_ids[call % container_ids.len()].clone(),
                verbose: false,
            }),
        )
        .await?;
        let state = status.status.map(|status| status.state);
        ensure!(
            state == Some(cri::ContainerState::ContainerRunning.into()),
            "container {} is not running: state {state:?}",
            container_ids[call % container_ids.len()]
        );
    }
    Ok((
        samples,
        Density {
            pods,
            containers: container_ids.len(),
            overhead,
            overhead_processes,
            daemon_before,
            daemon_after,
        },
    ))
}

/// The stats RPCs (and crid's `/metrics`) on the full node, each call
/// after [`STATS_PAUSE`].
async fn time_stats(
    rt: &mut RuntimeServiceClient<Channel>,
    samples: &mut Samples,
    containers: usize,
    metrics: Option<&str>,
) -> Result<()> {
    for _ in 0..STATS_CALLS {
        tokio::time::sleep(STATS_PAUSE).await;
        let listed = timed(
            samples,
            "ListContainerStats",
            rt.list_container_stats(cri::ListContainerStatsRequest::default()),
        )
        .await?;
        ensure!(
            listed.stats.len() == containers,
            "ListContainerStats shows {} containers, {containers} run",
            listed.stats.len()
        );
        timed(
            samples,
            "ListPodSandboxStats",
            rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default()),
        )
        .await?;
    }
    let Some(address) = metrics else {
        return Ok(());
    };
    for _ in 0..STATS_CALLS {
        tokio::time::sleep(STATS_PAUSE).await;
        let start = Instant::now();
        let body = scrape(address).await?;
        samples.add(SCRAPE, start.elapsed());
        ensure!(
            body.contains("container_cpu_usage_seconds_total"),
            "/metrics shows no container"
        );
    }
    Ok(())
}

/// One plain HTTP/1.0 GET of `/metrics`: its body.
async fn scrape(address: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connect to /metrics at {address}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: crid\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("/metrics: not an HTTP response")?;
    ensure!(head.starts_with("HTTP/1.0 200"), "/metrics: {head}");
    Ok(body.to_owned())
}

/// Times `call` into `samples` under `rpc`; the error names the RPC.
async fn timed<T>(
    samples: &mut Samples,
    rpc: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    let start = Instant::now();
    let response = tokio::time::timeout(RPC_DEADLINE, call).await;
    let elapsed = start.elapsed();
    let response = response
        .map_err(|_| anyhow::anyhow!("no answer within {RPC_DEADLINE:?}"))
        .and_then(|response| response.map_err(anyhow::Error::from))
        .with_context(|| rpc.to_string())?;
    samples.add(rpc, elapsed);
    Ok(response.into_inner())
}

async fn one_run(
    rt: &mut RuntimeServiceClient<Channel>,
    run: usize,
    args: &Args,
    image_ref: &str,
    logs: &Path,
    samples: &mut Samples,
) -> Result<()> {
    let uid = format!("cri-bench-{}-{run}", std::process::id());
    // kubelet creates the pod's log directory before RunPodSandbox.
    let log_dir = logs.join(&uid);
    fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let pod = pod_config(&uid, run, args.network, &log_dir);
    let pod_id = timed(
        samples,
        "RunPodSandbox",
        rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        }),
    )
    .await?
    .pod_sandbox_id;
    let container_id = timed(
        samples,
        "CreateContainer",
        rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config("bench", image_ref, args.network)),
            sandbox_config: Some(pod),
        }),
    )
    .await?
    .container_id;
    timed(
        samples,
        "StartContainer",
        rt.start_container(cri::StartContainerRequest {
            container_id: container_id.clone(),
        }),
    )
    .await?;
    for _ in 0..args.execs {
        let response = timed(
            samples,
            "ExecSync",
            rt.exec_sync(cri::ExecSyncRequest {
                container_id: container_id.clone(),
                cmd: vec!["true".into()],
                timeout: RPC_TIMEOUT_SECONDS,
            }),
        )
        .await?;
        ensure!(
            response.exit_code == 0,
            "ExecSync `true` exited {}: {}",
            response.exit_code,
            String::from_utf8_lossy(&response.stderr)
        );
    }
    timed(
        samples,
        "StopContainer",
        rt.stop_container(cri::StopContainerRequest {
            container_id: container_id.clone(),
            timeout: RPC_TIMEOUT_SECONDS,
        }),
    )
    .await?;
    timed(
        samples,
        "RemoveContainer",
        rt.remove_container(cri::RemoveContainerRequest { container_id }),
    )
    .await?;
    timed(
        samples,
        "StopPodSandbox",
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        }),
    )
    .await?;
    timed(
        samples,
        "RemovePodSandbox",
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        }),
    )
    .await?;
    fs::remove_dir_all(&log_dir).with_context(|| format!("remove {}", log_dir.display()))?;
    Ok(())
}

/// Exec round trips and port-forward pulls in one pod of their own, with
/// the e2e tests' SPDY client. The caller's `remove_everything` removes the
/// pod.
async fn time_streaming(
    rt: &mut RuntimeServiceClient<Channel>,
    args: &Args,
    image_ref: &str,
    logs: &Path,
    samples: &mut Samples,
) -> Result<()> {
    let forwards = if args.network == Network::Pod {
        args.forwards
    } else {
        println!("port-forward skipped: it needs the pod's own network (--network pod)");
        0
    };
    if args.stream_execs == 0 && forwards == 0 {
        return Ok(());
    }
    let uid = format!("cri-bench-{}-streaming", std::process::id());
    let log_dir = logs.join(&uid);
    fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let pod = pod_config(&uid, args.runs + 1, args.network, &log_dir);
    let pod_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    let bytes = args.forward_mib * 1024 * 1024;
    // Each connection gets `bytes` zeros, then the server closes it
    // (-ll: a fresh `dd` per connection). dd's 1 MiB writes, not `head -c`
    // (small writes, ~300 MB/s here): the runtime's relay, not the
    // server, should be what limits.
    let server_command = [
        "busybox".to_string(),
        "nc".into(),
        "-ll".into(),
        "-p".into(),
        FORWARD_PORT.to_string(),
        "-e".into(),
        "/bin/busybox".into(),
        "dd".into(),
        "if=/dev/zero".into(),
        "bs=1048576".into(),
        format!("count={}", args.forward_mib),
    ];
    let mut containers = Vec::new();
    for (name, command) in [
        (
            "bench",
            vec!["sh".to_string(), "-c".into(), CONTAINER_COMMAND.into()],
        ),
        ("server", server_command.to_vec()),
    ] {
        let mut config = container_config(name, image_ref, args.network);
        config.command = command;
        let container_id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .with_context(|| format!("CreateContainer {name}"))?
            .into_inner()
            .container_id;
        rt.start_container(cri::StartContainerRequest {
            container_id: container_id.clone(),
        })
        .await
        .with_context(|| format!("StartContainer {name}"))?;
        containers.push(container_id);
    }
    let (bench, server) = (&containers[0], &containers[1]);

    // Run 0 is the warm-up, as in the lifecycle runs.
    let exec_runs = if args.stream_execs > 0 {
        args.stream_execs + 1
    } else {
        0
    };
    for run in 0..exec_runs {
        let start = Instant::now();
        let status = tokio::time::timeout(RPC_DEADLINE, exec_true(rt, bench))
            .await
            .map_err(|_| anyhow::anyhow!("exec: no exit status within {RPC_DEADLINE:?}"))?
            .with_context(|| format!("exec {run}"))?;
        let elapsed = start.elapsed();
        ensure!(
            status["status"] == "Success",
            "exec {run} of `true`: {status}"
        );
        if run > 0 {
            samples.add(EXEC_ROUND_TRIP, elapsed);
        }
    }

    if forwards == 0 {
        return Ok(());
    }
    server_listening(rt, server).await?;
    for run in 0..=forwards {
        let start = Instant::now();
        let last_byte = tokio::time::timeout(RPC_DEADLINE, pull(rt, &pod_id, bytes))
            .await
            .map_err(|_| anyhow::anyhow!("port-forward: not done within {RPC_DEADLINE:?}"))?
            .with_context(|| format!("port-forward {run}"))?;
        let elapsed = last_byte - start;
        if run > 0 {
            samples.push(
                FORWARD_THROUGHPUT,
                bytes as f64 / elapsed.as_secs_f64() / 1e6,
            );
        }
    }
    Ok(())
}

/// One exec round trip as `kubectl exec POD -- true`: the Exec RPC, the
/// upgrade, the streams; the status from the error stream.
async fn exec_true(
    rt: &mut RuntimeServiceClient<Channel>,
    container_id: &str,
) -> Result<serde_json::Value> {
    let url = rt
        .exec(cri::ExecRequest {
            container_id: container_id.into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .await
        .context("Exec")?
        .into_inner()
        .url;
    let session = spdy::remotecommand(&url, Streams::default()).await?;
    session.status().await
}

/// One port-forward pull as `kubectl port-forward` relays a connection:
/// the PortForward RPC, the upgrade, an error and a data stream; `bytes`
/// from the pod's server. When the last byte arrived.
async fn pull(
    rt: &mut RuntimeServiceClient<Channel>,
    pod_id: &str,
    bytes: usize,
) -> Result<Instant> {
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod_id.into(),
            port: vec![i32::from(FORWARD_PORT)],
        })
        .await
        .context("PortForward")?
        .into_inner()
        .url;
    let spdy = spdy::port_forward(&url).await?;
    let (error, data) = spdy.open_forward_counting(FORWARD_PORT, 0).await?;
    // Counted, not awaited to its end: containerd ends the data stream
    // only once the client's side is closed too (or a second later).
    let received = spdy
        .until(data, |r| r.len >= bytes || r.fin || r.reset)
        .await?;
    let last_byte = Instant::now();
    ensure!(
        received.len == bytes,
        "pulled {} of {bytes} bytes (fin {}, reset {}); error stream: {:?}",
        received.len,
        received.fin,
        received.reset,
        String::from_utf8_lossy(&spdy.until(error, |_| true).await?.data)
    );
    // Our side's end, as kubectl's when its local connection closes.
    spdy.send(data, b"", true).await?;
    let error = spdy.ended(error).await?;
    ensure!(
        error.data.is_empty(),
        "error stream: {}",
        String::from_utf8_lossy(&error.data)
    );
    Ok(last_byte)
}

/// Waits until the pod's server listens (ExecSync'd netstat in its
/// network namespace).
async fn server_listening(
    rt: &mut RuntimeServiceClient<Channel>,
    container_id: &str,
) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let table = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: container_id.into(),
                cmd: vec!["busybox".into(), "netstat".into(), "-ltn".into()],
                timeout: RPC_TIMEOUT_SECONDS,
            })
            .await
            .context("ExecSync netstat")?
            .into_inner()
            .stdout;
        if String::from_utf8_lossy(&table).contains(&format!(":{FORWARD_PORT} ")) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the pod's server never listened on {FORWARD_PORT}: {}",
            String::from_utf8_lossy(&table)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn namespace_options(network: Network) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: match network {
            Network::Pod => cri::NamespaceMode::Pod,
            Network::Node => cri::NamespaceMode::Node,
        }
        .into(),
        pid: cri::NamespaceMode::Container.into(),
        ipc: cri::NamespaceMode::Pod.into(),
        ..Default::default()
    }
}

/// What kubelet sends for a plain best-effort pod.
fn pod_config(uid: &str, run: usize, network: Network, log_dir: &Path) -> cri::PodSandboxConfig {
    let name = format!("bench-{run}");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.into(),
            namespace: "cri-bench".into(),
            attempt: 0,
        }),
        // As kubelet: a host-network pod has the node's UTS namespace, and
        // runc refuses to set a hostname there.
        hostname: match network {
            Network::Pod => name.clone(),
            Network::Node => String::new(),
        },
        log_directory: log_dir.to_string_lossy().into_owned(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["cri-bench.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: HashMap::from([("app".to_string(), "cri-bench".to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/{CGROUP_PARENT}/pod{uid}"),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(network)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, image_ref: &str, network: Network) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image_ref.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), CONTAINER_COMMAND.into()],
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("app".to_string(), "cri-bench".to_string())]),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options(network)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Stops and removes every container and pod the runtime has, so that a
/// failed run leaves nothing for the daemon's shutdown to trip over.
async fn remove_everything(channel: Channel) -> Result<()> {
    let mut rt = RuntimeServiceClient::new(channel);
    match rt
        .list_containers(cri::ListContainersRequest::default())
        .await
    {
        Ok(response) => {
            for container in response.into_inner().containers {
                let container_id = container.id;
                rt.stop_container(cri::StopContainerRequest {
                    container_id: container_id.clone(),
                    timeout: 0,
                })
                .await
                .with_context(|| format!("StopContainer {container_id}"))?;
                rt.remove_container(cri::RemoveContainerRequest {
                    container_id: container_id.clone(),
                })
                .await
                .with_context(|| format!("RemoveContainer {container_id}"))?;
            }
        }
        // A runtime without containers yet still has pods to remove.
        Err(status) if status.code() == tonic::Code::Unimplemented => {}
        Err(status) => return Err(status).context("ListContainers"),
    }
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .context("ListPodSandbox")?
        .into_inner()
        .items;
    for pod in pods {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .with_context(|| format!("StopPodSandbox {}", pod.id))?;
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .await
        .with_context(|| format!("RemovePodSandbox {}", pod.id))?;
    }
    Ok(())
}

/// A private containerd with its CRI plugin, everything under one temp dir.
struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    socket: PathBuf,
    /// Host paths containerd 1.6 uses whatever its config says, with what
    /// was in them before it started.
    host_paths: Vec<(PathBuf, Option<BTreeSet<String>>)>,
}

/// Places outside its root and state that containerd 1.6 and its CNI library
/// write to: shim sockets, pod netns bind mounts, the CNI result cache.
const CONTAINERD_HOST_PATHS: &[&str] = &[
    "/run/containerd",
    "/run/containerd/s",
    "/run/netns",
    "/var/run/netns",
    "/var/lib/cni",
    "/var/lib/cni/results",
];

impl Containerd {
    fn start(registry: &Registry, pause: &str) -> Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix("cri-bench-containerd-")
            .tempdir()
            .context("create containerd's temp dir")?;
        let d = dir.path();
        let socket = d.join("containerd.sock");
        let net_d = d.join("net.d");
        fs::create_dir_all(&net_d)?;
        fs::write(
            net_d.join("10-cri-bench.conflist"),
            bridge_conflist(CONTAINERD_BRIDGE.0, CONTAINERD_BRIDGE.1, &d.join("leases")),
        )?;
        // Plain HTTP to the private registry, for images and the sandbox image.
        let certs = d.join("certs.d");
        let host_dir = certs.join(registry.host());
        fs::create_dir_all(&host_dir)?;
        fs::write(
            host_dir.join("hosts.toml"),
            format!(
                "server = \"{url}\"\n\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n",
                url = registry.url()
            ),
        )?;
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = []

[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[{cri}]
  sandbox_image = "{pause}"
  # root here lacks CAP_SYS_RESOURCE: never lower a container's oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{runc_root}"
[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = "{net_d}"
[{cri}.registry]
  config_path = "{certs}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            opt = d.join("opt").display(),
            runc_root = d.join("runc").display(),
            cni_bin = e2e::DEBIAN_CNI_BIN_DIR,
            net_d = net_d.display(),
            certs = certs.display(),
        );
        fs::write(d.join("config.toml"), config)?;
        let host_paths = CONTAINERD_HOST_PATHS
            .iter()
            .map(|path| (PathBuf::from(path), dir_entries(Path::new(path))))
            .collect();
        let log = fs::File::create(d.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn containerd (apt-get install containerd runc)")?;
        Ok(Containerd {
            dir,
            child: Some(child),
            socket,
            host_paths,
        })
    }

    fn pid(&self) -> Result<i32> {
        let child = self.child.as_ref().context("containerd is not running")?;
        i32::try_from(child.id()).context("pid fits i32")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until the CRI plugin answers Version (not only containerd).
    async fn wait_ready(&mut self) -> Result<Channel> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_error = String::new();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "containerd exited at start with {status}; its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(channel) = connect_unix(&self.socket).await {
                match RuntimeServiceClient::new(channel.clone())
                    .version(cri::VersionRequest::default())
                    .await
                {
                    Ok(_) => return Ok(channel),
                    Err(status) => last_error = status.to_string(),
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd's CRI did not answer Version within {START_TIMEOUT:?} ({last_error}); its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then removes whatever containerd and its shims left (after
    /// `remove_everything` there should be nothing); errors name the leaks.
    fn shutdown(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).context("pid fits i32")?);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    problems.push(format!("containerd ignored SIGTERM for {STOP_TIMEOUT:?}"));
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        // Shims exit once their pod's tasks are deleted; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_mentioning(&dir).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in processes_mentioning(&dir) {
            problems.push(format!(
                "process {pid} left ({}); killed",
                e2e::process_command_line(pid)
            ));
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for mount in mounts_under(self.dir.path()) {
            problems.push(format!("mount left: {}; unmounted", mount.display()));
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
        // Deepest first, so a dir is empty by the time its parent is cleaned.
        for (path, before) in self.host_paths.iter().rev() {
            problems.extend(self.clean_host_path(path, before.as_ref()));
        }
        let bridge = CONTAINERD_BRIDGE.0;
        if Path::new("/sys/class/net").join(bridge).exists() {
            // The bridge plugin never deletes its bridge, by design.
            let status = Command::new("ip")
                .args(["link", "del", bridge])
                .status()
                .context("ip link del (iproute2)")?;
            if !status.success() {
                problems.push(format!("cannot delete bridge {bridge}"));
            }
        }
        let veths = Command::new("ip")
            .args(["-o", "link", "show", "master", bridge])
            .stderr(Stdio::null())
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default();
        if !veths.is_empty() {
            problems.push(format!("links left on {bridge}: {veths}"));
        }
        ensure!(
            problems.is_empty(),
            "containerd left things behind (log in {}):\n  {}",
            self.dir.path().join("containerd.log").display(),
            problems.join("\n  ")
        );
        Ok(())
    }

    /// Removes what appeared in a host path while containerd ran: empty dirs
    /// it created, netns bind mounts of pods it did not remove. Returns what
    /// was left, for the report (empty dirs it created are not leaks of
    /// note, but are removed so the host looks as before).
    fn clean_host_path(&self, path: &Path, before: Option<&BTreeSet<String>>) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(now) = dir_entries(path) else {
            return problems;
        };
        let new: Vec<&String> = now
            .iter()
            .filter(|entry| before.is_none_or(|before| !before.contains(*entry)))
            .collect();
        for entry in new {
            let full = path.join(entry);
            if full.is_dir() && CONTAINERD_HOST_PATHS.contains(&full.to_string_lossy().as_ref()) {
                // Cleaned as a watched path of its own.
                continue;
            }
            problems.push(format!("{} left; removed", full.display()));
            let _ = nix::mount::umount2(&full, nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_file(&full).or_else(|_| fs::remove_dir(&full));
        }
        if before.is_none() {
            let _ = fs::remove_dir(path);
        }
        problems
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Only on early exits (a panic): shutdown() has taken the child.
        if self.child.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// The processes the runtime started beside its daemon: those that name
/// `dir` (crid-monitor and its forks; containerd-shim) and everything
/// below them (pause, holders, the containers' processes, which the caller
/// tells apart). A pivoted container shows `/` as its root, so descent is
/// what finds pause and the containers.
fn runtime_processes(dir: &Path, daemon: i32) -> BTreeSet<i32> {
    let parents: Vec<(i32, i32)> = fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|pid| Some((pid, parent_of(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found: BTreeSet<i32> = processes_mentioning(&dir.to_string_lossy())
        .into_iter()
        .filter(|&pid| pid != daemon)
        .collect();
    loop {
        let children: Vec<i32> = parents
            .iter()
            .filter(|(pid, parent)| found.contains(parent) && !found.contains(pid))
            .map(|&(pid, _)| pid)
            .collect();
        if children.is_empty() {
            return found;
        }
        found.extend(children);
    }
}

/// The parent pid from `/proc/<pid>/stat` (after the parenthesised name,
/// which may itself hold spaces and parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Names in `dir`, or None if it does not exist.
fn dir_entries(dir: &Path) -> Option<BTreeSet<String>> {
    let entries = fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect(),
    )
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|mount| mount.starts_with(dir))
        .collect();
    mounts.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
    mounts
}

/// Every cgroup directory in the v1 hierarchies (and the v2 one), as
/// `<hierarchy>/<path>`, to find what a run left.
fn cgroup_dirs() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = Path::new("/sys/fs/cgroup");
    let Ok(hierarchies) = fs::read_dir(root) else {
        return out;
    };
    for hierarchy in hierarchies.flatten() {
        let mut stack = vec![hierarchy.path()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    let path = entry.path();
                    if let Ok(relative) = path.strip_prefix(root) {
                        out.insert(relative.to_string_lossy().into_owned());
                    }
                    stack.push(path);
                }
            }
        }
    }
    out
}

/// Removes the pods' cgroup parent in every hierarchy: runtimes remove their
/// pods' leaves, and kubelet (here, the bench) its own parents.
fn remove_cgroup_parent() {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let parent = hierarchy.path().join(CGROUP_PARENT);
        let Ok(pods) = fs::read_dir(&parent) else {
            continue;
        };
        for pod in pods.flatten() {
            if pod.file_type().is_ok_and(|kind| kind.is_dir()) {
                // Fails (and is reported as left) if a runtime left a leaf.
                let _ = fs::remove_dir(pod.path());
            }
        }
        let _ = fs::remove_dir(&parent);
    }
}

struct Stats {
    median: f64,
    p90: f64,
    min: f64,
    max: f64,
    count: usize,
}

fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    // Nearest rank: the smallest value at or above 90 % of the samples.
    let p90 = sorted[(n * 9).div_ceil(10).max(1) - 1];
    Some(Stats {
        median,
        p90,
        min: sorted[0],
        max: sorted[n - 1],
        count: n,
    })
}

/// The report's lines: what the mode timed.
fn lines(args: &Args) -> Vec<&'static str> {
    if args.density.is_some() {
        LIST_RPCS.iter().chain(FILL_RPCS).copied().collect()
    } else {
        RPCS.iter()
            .copied()
            .chain([POD_READY, EXEC_ROUND_TRIP])
            .collect()
    }
}

fn print_report(report: &Report, args: &Args) {
    println!(
        "\n{} ({}), network {:?}, times in ms at the client",
        report.runtime.name(),
        report.version,
        args.network
    );
    println!(
        "  {:<18} {:>9} {:>9} {:>9} {:>9} {:>5}",
        "", "median", "p90", "min", "max", "n"
    );
    for line in lines(args) {
        if let Some(s) = stats(report.samples.get(line)) {
            println!(
                "  {line:<18} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>5}",
                s.median, s.p90, s.min, s.max, s.count
            );
        }
    }
    if let Some(s) = stats(report.samples.get(FORWARD_THROUGHPUT)) {
        println!(
            "  {FORWARD_THROUGHPUT:<18} {:>9.1} {:>9} {:>9.1} {:>9.1} {:>5}  (pulls of {} MiB)",
            s.median, "", s.min, s.max, s.count, args.forward_mib
        );
    }
    if let Some(density) = &report.density {
        print_density(density);
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_density(density: &Density) {
    let pods = density.pods as f64;
    println!(
        "
  {} pods, {} containers running; the runtime's per-pod processes ({} in all, the containers' own not counted):",
        density.pods, density.containers, density.overhead_processes
    );
    println!(
        "    per pod: PSS {:.3} MiB, private {:.3} MiB, RSS {:.3} MiB",
        mib(density.overhead.pss) / pods,
        mib(density.overhead.private) / pods,
        mib(density.overhead.rss) / pods
    );
    let growth = |after: u64, before: u64| (after as f64 - before as f64) / 1024.0;
    println!(
        "    daemon: PSS {:.1} -> {:.1} MiB ({:+.1} MiB, {:+.3} MiB per pod), RSS {:.1} -> {:.1} MiB",
        mib(density.daemon_before.pss),
        mib(density.daemon_after.pss),
        growth(density.daemon_after.pss, density.daemon_before.pss),
        growth(density.daemon_after.pss, density.daemon_before.pss) / pods,
        mib(density.daemon_before.rss),
        mib(density.daemon_after.rss)
    );
}

fn print_comparison(crid: &Report, containerd: &Report, args: &Args) {
    println!("\nmedians in ms, and containerd/crid (above 1: crid is faster)");
    println!(
        "  {:<18} {:>10} {:>11} {:>16}",
        "", "crid", "containerd", "containerd/crid"
    );
    for line in lines(args) {
        if let (Some(a), Some(b)) = (
            stats(crid.samples.get(line)),
            stats(containerd.samples.get(line)),
        ) {
            println!(
                "  {line:<18} {:>10.2} {:>11.2} {:>16.2}",
                a.median,
                b.median,
                b.median / a.median
            );
        }
    }
    if let (Some(a), Some(b)) = (
        stats(crid.samples.get(FORWARD_THROUGHPUT)),
        stats(containerd.samples.get(FORWARD_THROUGHPUT)),
    ) {
        println!("\nmedian MB/s, and crid/containerd (above 1: crid is faster)");
        println!(
            "  {FORWARD_THROUGHPUT:<18} {:>10.1} {:>11.1} {:>16.2}",
            a.median,
            b.median,
            a.median / b.median
        );
    }
    if let (Some(a), Some(b)) = (&crid.density, &containerd.density) {
        let per_pod = |kib: u64, density: &Density| mib(kib) / density.pods as f64;
        let growth = |density: &Density| {
            (density.daemon_after.pss as f64 - density.daemon_before.pss as f64)
                / 1024.0
                / density.pods as f64
        };
        println!("\nper pod, MiB, and containerd/crid (above 1: crid is lighter)");
        for (line, a, b) in [
            (
                "PSS",
                per_pod(a.overhead.pss, a),
                per_pod(b.overhead.pss, b),
            ),
            (
                "private",
                per_pod(a.overhead.private, a),
                per_pod(b.overhead.private, b),
            ),
            ("daemon PSS growth", growth(a), growth(b)),
        ] {
            println!("  {line:<18} {a:>10.3} {b:>11.3} {:>16.2}", b / a);
        }
    }
}

/// Medians of crid's `step done` debug lines, per step, in log order.
fn print_step_medians(log: &str) {
    let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
    for line in log.lines().filter(|l| l.contains("step done")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_string())
        };
        let (Some(step), Some(ms)) = (field("step="), field("elapsed_ms=")) else {
            continue;
        };
        let Ok(ms) = ms.parse::<f64>() else { continue };
        match steps.iter_mut().find(|(name, _)| *name == step) {
            Some((_, samples)) => samples.push(ms),
            None => steps.push((step, vec![ms])),
        }
    }
    println!("\ncrid steps (debug log), median ms");
    for (step, mut samples) in steps {
        samples.sort_by(f64::total_cmp);
        println!(
            "  {step:28} {:8.2}  n={}",
            samples[samples.len() / 2],
            samples.len()
        );
    }
}
