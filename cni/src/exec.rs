//! Running one plugin binary: environment, stdin, bounded stdout, timeout.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command as ProcessCommand;

use crate::error::{CniError, PluginCall, parse_plugin_error};

/// Results are a few KiB; anything near this is a broken plugin.
pub(crate) const STDOUT_LIMIT: usize = 1 << 20;
/// Only the tail of stderr goes into error messages.
const STDERR_LIMIT: usize = 8 << 10;
/// Used when crid itself has no PATH (plugins such as portmap run iptables).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CNI_* environment of one call.
pub(crate) struct PluginEnv<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub path: &'a str,
}

/// Runs `binary` with `stdin` and returns its stdout on success. A non-zero
/// exit becomes [`CniError::Plugin`] if stdout holds a CNI error object,
/// [`CniError::PluginExit`] otherwise.
pub(crate) async fn run_plugin(
    call: &PluginCall,
    binary: &Path,
    env: &PluginEnv<'_>,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, CniError> {
    let mut command = ProcessCommand::new(binary);
    // A clean environment: plugins see the CNI protocol and PATH, not
    // whatever crid was started with.
    command
        .env_clear()
        .env("CNI_COMMAND", call.command.as_str())
        .env("CNI_CONTAINERID", env.container_id)
        .env("CNI_NETNS", env.netns)
        .env("CNI_IFNAME", env.ifname)
        .env("CNI_ARGS", env.args)
        .env("CNI_PATH", env.path)
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH)),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout also kills what it spawned
        // (iptables, an IPAM plugin) instead of leaving them behind.
        .process_group(0)
        .kill_on_drop(true);

    let mut child = command.spawn().map_err(|source| CniError::Spawn {
        call: Box::new(call.clone()),
        binary: binary.to_path_buf(),
        source,
    })?;
    let pid = child.id();
    let (Some(mut child_stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(io_error(
            call,
            std::io::Error::other("plugin pipes missing"),
        ));
    };

    let exchange = async {
        let write = async {
            // A plugin may exit without reading its config (VERSION); a
            // broken pipe then is not our error, its exit status tells.
            let result = child_stdin.write_all(stdin).await;
            drop(child_stdin);
            match result {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e),
                _ => Ok(()),
            }
        };
        let (written, out, err) = tokio::join!(
            write,
            read_limited(stdout, STDOUT_LIMIT, Overflow::Stop),
            read_limited(stderr, STDERR_LIMIT, Overflow::KeepTail)
        );
        written?;
        let (out, out_truncated) = out?;
        let (err, _) = err?;
        Ok::<_, std::io::Error>((out, out_truncated, err))
    };

    let (stdout, stdout_truncated, stderr) = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            kill_group(pid, &mut child).await;
            return Err(io_error(call, e));
        }
        Err(_) => {
            kill_group(pid, &mut child).await;
            return Err(CniError::Timeout {
                call: Box::new(call.clone()),
                timeout,
            });
        }
    };
    if stdout_truncated {
        kill_group(pid, &mut child).await;
        return Err(CniError::OutputTooLarge {
            call: Box::new(call.clone()),
            limit: STDOUT_LIMIT,
        });
    }
    // Both pipes are closed; the exit follows at once, but stay bounded.
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|e| io_error(call, e))?,
        Err(_) => {
            kill_group(pid, &mut child).await;
            return Err(CniError::Timeout {
                call: Box::new(call.clone()),
                timeout,
            });
        }
    };
    if status.success() {
        return Ok(stdout);
    }
    if let Some((code, msg, details)) = parse_plugin_error(&stdout) {
        return Err(CniError::Plugin {
            call: Box::new(call.clone()),
            code,
            msg,
            details,
        });
    }
    Err(CniError::PluginExit {
        call: Box::new(call.clone()),
        status,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn io_error(call: &PluginCall, source: std::io::Error) -> CniError {
    CniError::Io {
        call: Box::new(call.clone()),
        source,
    }
}

/// SIGKILLs the plugin's process group, then reaps the plugin itself.
async fn kill_group(pid: Option<u32>, child: &mut tokio::process::Child) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // The group id is the plugin's pid (process_group(0)); it cannot
        // have been reused, the plugin is not reaped yet.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill().await;
}

/// Reads to EOF but keeps at most `limit` bytes; the flag says whether more
/// came. Oversized stdout is fatal; of stderr only the tail matters, and it
/// is drained so the plugin never blocks on a full pipe.
#[derive(PartialEq)]
enum Overflow {
    /// Stop reading (the caller kills the plugin).
    Stop,
    /// Keep reading, keep the last `limit` bytes.
    KeepTail,
}

async fn read_limited(
    mut reader: impl AsyncRead + Unpin,
    limit: usize,
    overflow: Overflow,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let mut truncated = false;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok((kept, truncated));
        }
        let room = limit.saturating_sub(kept.len());
        if n > room {
            truncated = true;
            if overflow == Overflow::Stop {
                kept.extend_from_slice(&buf[..room]);
                return Ok((kept, truncated));
            }
            kept.extend_from_slice(&buf[..n]);
            let excess = kept.len() - limit;
            kept.drain(..excess);
        } else {
            kept.extend_from_slice(&buf[..n]);
        }
    }
}

/// `CNI_PATH`: the bin dirs joined by `:`.
pub(crate) fn cni_path(bin_dirs: &[PathBuf]) -> String {
    bin_dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}
