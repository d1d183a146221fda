use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;

use crate::config::CniConfigError;

/// A CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
}

impl Command {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which plugin call an error comes from; every plugin error carries one so
/// the log line names the plugin, the network and the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginCall {
    pub command: Command,
    pub plugin: String,
    pub network: String,
    /// Empty for calls that are not about one container (VERSION, STATUS).
    pub container_id: String,
}

impl fmt::Display for PluginCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CNI {} of plugin {:?} in network {:?}",
            self.command, self.plugin, self.network
        )?;
        if !self.container_id.is_empty() {
            write!(f, " for container {}", self.container_id)?;
        }
        Ok(())
    }
}

/// Errors of plugin execution and of the result cache.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Config(#[from] CniConfigError),

    /// The caller passed something that cannot be handed to a plugin safely
    /// (a container id that would escape the cache dir, a `;` in CNI_ARGS…).
    #[error("invalid CNI attachment: {field} {value:?}: {reason}")]
    InvalidAttachment {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    /// ADD and CHECK need every plugin; DEL skips missing ones instead.
    #[error("{call}: no executable of that name in any of {bin_dirs:?}")]
    PluginNotFound {
        call: Box<PluginCall>,
        bin_dirs: Vec<PathBuf>,
    },

    #[error("{call}: cannot run {binary}: {source}")]
    Spawn {
        call: Box<PluginCall>,
        binary: PathBuf,
        source: io::Error,
    },

    /// The plugin reported a CNI error (JSON on stdout, non-zero exit).
    #[error("{call}: plugin error {code}: {msg}{}", fmt_details(details))]
    Plugin {
        call: Box<PluginCall>,
        code: u64,
        msg: String,
        details: String,
    },

    /// The plugin failed without a CNI error object.
    #[error("{call}: plugin exited with {status}{}", fmt_stderr(stderr))]
    PluginExit {
        call: Box<PluginCall>,
        status: ExitStatus,
        stderr: String,
    },

    #[error("{call}: plugin did not finish within {timeout:?} and was killed")]
    Timeout {
        call: Box<PluginCall>,
        timeout: Duration,
    },

    #[error("{call}: plugin wrote more than {limit} bytes to stdout and was killed")]
    OutputTooLarge { call: Box<PluginCall>, limit: usize },

    #[error("{call}: cannot talk to the plugin: {source}")]
    Io {
        call: Box<PluginCall>,
        source: io::Error,
    },

    #[error("{call}: invalid result: {reason}")]
    InvalidResult {
        call: Box<PluginCall>,
        reason: String,
    },

    /// A result that could not be parsed outside a plugin call (the cache).
    #[error("invalid CNI result: {0}")]
    Result(String),

    #[error("CNI result cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },

    /// Blocking cache work run off the async workers panicked or was
    /// cancelled.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    /// CHECK needs the result of the ADD it checks.
    #[error(
        "CNI CHECK of network {network:?} for container {container_id}: no cached ADD result (was the pod attached by this crid?)"
    )]
    NotAttached {
        network: String,
        container_id: String,
    },

    /// ADD failed and so did the DEL that should have undone it; the cache
    /// entry is kept so that a later DEL tries again with the same config.
    #[error("{add}; rolling it back failed too: {rollback}")]
    RollbackFailed {
        add: Box<CniError>,
        rollback: Box<CniError>,
    },

    /// DEL ran every plugin it could; these failed. The cache entry is kept,
    /// so calling `del` again retries with the same config and result.
    #[error(
        "CNI DEL of network {network:?} for container {container_id}: {} plugin(s) failed: {}",
        failures.len(),
        join_errors(failures)
    )]
    Del {
        network: String,
        container_id: String,
        failures: Vec<CniError>,
    },
}

impl CniError {
    /// True if the error came from a plugin that ran and said no (as opposed
    /// to crid's own input, cache or spawning problems).
    pub fn is_plugin_failure(&self) -> bool {
        match self {
            CniError::Plugin { .. }
            | CniError::PluginExit { .. }
            | CniError::Timeout { .. }
            | CniError::OutputTooLarge { .. }
            | CniError::InvalidResult { .. } => true,
            CniError::Del { failures, .. } => failures.iter().any(CniError::is_plugin_failure),
            CniError::RollbackFailed { add, .. } => add.is_plugin_failure(),
            _ => false,
        }
    }

    /// The CNI error code the plugin reported, if it reported one.
    pub fn plugin_code(&self) -> Option<u64> {
        match self {
            CniError::Plugin { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn fmt_details(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

fn fmt_stderr(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(", stderr: {stderr}")
    }
}

fn join_errors(errors: &[CniError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why DEL did not run a plugin (or ran it without a netns). Not errors:
/// after a reboot or an upgrade these are expected, and refusing to go on
/// would leave the pod stuck terminating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelSkip {
    /// The plugin binary is in none of the bin dirs; it was not run.
    PluginMissing { plugin: String },
    /// The netns path is gone (or no longer a network namespace); plugins
    /// were run with an empty `CNI_NETNS` so they release what lives outside
    /// it (IPAM leases, iptables rules).
    NetnsMissing { netns: PathBuf },
}

/// What a successful DEL did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelOutcome {
    /// No cache entry and no network given: the pod was never attached.
    pub nothing_to_do: bool,
    /// Networks torn down, from the cache where there was an entry.
    pub networks: Vec<String>,
    pub skipped: Vec<DelSkip>,
}

/// Best-effort extraction of the CNI error object a failing plugin prints.
pub(crate) fn parse_plugin_error(stdout: &[u8]) -> Option<(u64, String, String)> {
    let value: Value = serde_json::from_slice(stdout).ok()?;
    let object = value.as_object()?;
    let code = object.get("code")?.as_u64()?;
    let msg = object
        .get("msg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let details = object
        .get("details")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Some((code, msg, details))
}
