//! The `crid` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cri_server::config::{Config, Overrides};
use tokio::signal::unix::{SignalKind, signal};

/// `crid --version`: what is running, from which commit, speaking which CRI.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CRID_COMMIT"),
    // proto::CRI_API_LEVEL, as a literal for concat! (a test keeps them equal).
    ", CRI v1 at the Kubernetes ",
    "1.36",
    " level)"
);

#[derive(Parser)]
#[command(name = "crid", version = LONG_VERSION, about = "A Kubernetes CRI container runtime")]
struct Cli {
    /// Config file [default: /etc/crid/config.toml, if present]
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Persistent data directory (overrides `root`)
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state directory (overrides `state`)
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// CRI socket path (overrides `listen`)
    #[arg(long, value_name = "SOCKET")]
    listen: Option<PathBuf>,
    /// Log verbosity
    #[arg(long, value_name = "LEVEL", default_value = "info",
          value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
    /// Log lines as text, or one JSON object per line (for log shippers)
    #[arg(long, value_name = "FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Check this node as `Status` would, and say it for a person: kernel,
    /// cgroups, directories, the CNI network. Exit 0 only if a pod could run.
    Check,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the complete TOML config with every default
    Default,
    /// Print the effective config: defaults, the config file, its drop-ins
    /// (config.d/*.toml, in name order) and the command line, merged
    Dump,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crid: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = Overrides {
        root: cli.root,
        state: cli.state,
        listen: cli.listen,
    };
    match cli.command {
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => {
            print!("{}", Config::default().to_toml()?);
            return Ok(());
        }
        Some(Command::Config {
            action: ConfigAction::Dump,
        }) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            print!("{}", config.to_toml()?);
            return Ok(());
        }
        Some(Command::Check) => {
            let config = Config::load(cli.config.as_deref(), &overrides)?;
            return if check(&config) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("this node cannot run pods yet (see above)"))
            };
        }
        None => {}
    }
    // The transport crates' debug output is per HTTP/2 frame: only at trace.
    let filter = match cli.log_level.as_str() {
        "trace" => "trace".to_string(),
        level => format!("{level},h2=info,hyper=info,hyper_util=info,tower=info,tonic=info"),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }

    let config = Config::load(cli.config.as_deref(), &overrides)?;
    raise_open_file_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

/// `crid check`: one line per thing a pod needs, `ok` or what is wrong.
fn check(config: &Config) -> bool {
    use cri_server::status;
    let mut ready = true;
    let mut line = |ok: bool, what: &str, detail: String| {
        ready &= ok;
        println!("{:<4} {what:<12} {detail}", if ok { "ok" } else { "FAIL" });
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let missing = status::missing_kernel_features();
    line(
        missing.is_empty(),
        "kernel",
        if missing.is_empty() {
            format!("Linux {} has what crid needs", kernel.trim())
        } else {
            missing.join("; ")
        },
    );
    match runtime::cgroup::Hierarchy::detect() {
        Ok(hierarchy) => line(
            true,
            "cgroups",
            format!(
                "{}, driver {} ([runtime] cgroup_driver; kubelet's cgroupDriver must match)",
                match hierarchy {
                    runtime::cgroup::Hierarchy::V1 { .. } => "v1",
                    runtime::cgroup::Hierarchy::V2 { .. } => "v2",
                },
                match config.runtime.cgroup_driver {
                    cri_server::config::CgroupDriver::Cgroupfs => "cgroupfs",
                    cri_server::config::CgroupDriver::Systemd => "systemd",
                }
            ),
        ),
        Err(error) => line(false, "cgroups", error.to_string()),
    }
    for (name, dir) in [("root", &config.root), ("state", &config.state)] {
        match status::dir_usable(dir) {
            Ok(()) => line(true, name, format!("{} is usable", dir.display())),
            // crid makes its directories at start, if it can.
            Err(_) if !dir.exists() => {
                let parent = dir.ancestors().skip(1).find(|ancestor| ancestor.exists());
                match parent.map(status::dir_usable) {
                    Some(Ok(())) => line(
                        true,
                        name,
                        format!("{} will be created at start", dir.display()),
                    ),
                    Some(Err(problem)) => line(
                        false,
                        name,
                        format!("{}: cannot be created: {problem}", dir.display()),
                    ),
                    None => line(false, name, format!("{}: no parent exists", dir.display())),
                }
            }
            Err(problem) => line(false, name, format!("{}: {problem}", dir.display())),
        }
    }
    match cni::load_network(&config.cni.conf_dir, &config.cni.bin_dirs) {
        Ok(network) => line(
            true,
            "network",
            format!(
                "{} ({}): plugins {}",
                network.name,
                network.path.display(),
                network
                    .plugins
                    .iter()
                    .map(|plugin| plugin.plugin_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Err(error) => line(
            false,
            "network",
            format!("{error} (host-network pods still run)"),
        ),
    }
    ready
}

/// Every pod and container holds a few of crid's descriptors (monitor
/// sockets, log and event files): the soft file limit goes up to the hard
/// one, as Go does for containerd. Containers do not inherit it: their
/// spec sets their own (runtime::spec::NOFILE_LIMITS).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let raised = getrlimit(Resource::RLIMIT_NOFILE)
        .and_then(|(_, hard)| setrlimit(Resource::RLIMIT_NOFILE, hard, hard));
    if let Err(error) = raised {
        tracing::warn!(%error, "cannot raise the open file limit; keeping it");
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives while starting must not kill
    // crid before it can remove what it created.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let started = cri_server::daemon::start(config).await?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        }
    };
    started.serve(shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_names_the_cri_level_proto_has() {
        assert!(
            super::LONG_VERSION.contains(&format!("Kubernetes {} level", proto::CRI_API_LEVEL)),
            "{}",
            super::LONG_VERSION
        );
    }
}
