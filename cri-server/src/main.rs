//! The `crid` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cri_server::config::{Config, Overrides};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(name = "crid", version, about = "A Kubernetes CRI container runtime")]
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
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the complete TOML config with every default
    Default,
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
    if let Some(Command::Config {
        action: ConfigAction::Default,
    }) = cli.command
    {
        print!("{}", Config::default().to_toml()?);
        return Ok(());
    }
    // The transport crates' debug output is per HTTP/2 frame: only at trace.
    let filter = match cli.log_level.as_str() {
        "trace" => "trace".to_string(),
        level => format!("{level},h2=info,hyper=info,hyper_util=info,tower=info,tonic=info"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    let overrides = Overrides {
        root: cli.root,
        state: cli.state,
        listen: cli.listen,
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    raise_open_file_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
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
