//! crid's side of the monitor: start one for a pod, then talk to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::monitor::{
    CONFIG_FILE, MonitorConfig, MonitorRequest, MonitorResponse, MonitorStarted, SOCKET_FILE,
};
use tokio::net::UnixStream;

use crate::wire::{read_frame_async, short_path, write_frame_async};

/// Bounds, not expectations: a monitor that takes longer is broken.
const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot start crid-monitor {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("crid-monitor for {pod_dir} failed: {message}")]
    Failed { pod_dir: PathBuf, message: String },
    #[error("crid-monitor for {pod_dir} did not answer within {timeout:?}")]
    Timeout { pod_dir: PathBuf, timeout: Duration },
    #[error("crid-monitor for {pod_dir} is unreachable: {source}")]
    Unreachable {
        pod_dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Config {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a started monitor reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedMonitor {
    pub monitor_pid: i32,
    pub pause_pid: i32,
}

/// Talks to the monitor of the pod whose state dir is `pod_dir`.
#[derive(Debug, Clone)]
pub struct MonitorClient {
    pod_dir: PathBuf,
}

impl MonitorClient {
    pub fn new(pod_dir: &Path) -> MonitorClient {
        MonitorClient {
            pod_dir: pod_dir.to_path_buf(),
        }
    }

    /// Writes the monitor's config into the pod dir and starts
    /// `binary <pod dir>`, returning once pause runs in its namespaces. The
    /// launcher process exits (and is reaped here); the monitor detaches.
    pub async fn start(
        &self,
        binary: &Path,
        config: &MonitorConfig,
    ) -> Result<StartedMonitor, MonitorError> {
        let config_path = self.pod_dir.join(CONFIG_FILE);
        let json = serde_json::to_vec(config).map_err(|e| MonitorError::Config {
            path: config_path.clone(),
            source: std::io::Error::other(e),
        })?;
        tokio::fs::write(&config_path, json)
            .await
            .map_err(|source| MonitorError::Config {
                path: config_path.clone(),
                source,
            })?;
        let launcher = tokio::process::Command::new(binary)
            .arg(&self.pod_dir)
            // Nothing of crid's environment is the monitor's business, and
            // pause, a fork that never execs, shows the monitor's
            // environment in /proc/<pid>/environ to its pod.
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| MonitorError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let output = tokio::time::timeout(START_TIMEOUT, launcher.wait_with_output())
            .await
            .map_err(|_| MonitorError::Timeout {
                pod_dir: self.pod_dir.clone(),
                timeout: START_TIMEOUT,
            })?
            .map_err(|source| MonitorError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        match serde_json::from_str::<MonitorStarted>(stdout.trim()) {
            Ok(MonitorStarted::Ready {
                monitor_pid,
                pause_pid,
            }) => Ok(StartedMonitor {
                monitor_pid,
                pause_pid,
            }),
            Ok(MonitorStarted::Failed { message }) => Err(self.failed(message)),
            Err(_) => Err(self.failed(format!(
                "exit {}, stdout {stdout:?}, stderr {:?}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))),
        }
    }

    fn failed(&self, message: String) -> MonitorError {
        MonitorError::Failed {
            pod_dir: self.pod_dir.clone(),
            message,
        }
    }

    /// A request the monitor may answer with `Place` first (a
    /// CreateContainer with `placed_by_crid`): `place` gets the pids to put
    /// into the container's cgroup. Its error is returned inside once the
    /// monitor has ended that create (it reaps the unplaced init).
    pub async fn request_placing<E>(
        &self,
        request: &MonitorRequest,
        place: impl AsyncFnOnce(Vec<i32>) -> Result<(), E>,
    ) -> Result<Result<MonitorResponse, E>, MonitorError> {
        let exchange = async {
            let (_dir, socket) = short_path(&self.pod_dir, SOCKET_FILE)?;
            let mut stream = UnixStream::connect(socket).await?;
            write_frame_async(&mut stream, request).await?;
            let response = read_frame_async::<MonitorResponse>(&mut stream).await?;
            let MonitorResponse::Place { pids } = response else {
                return Ok(Ok(response));
            };
            match place(pids).await {
                Ok(()) => {
                    write_frame_async(&mut stream, &MonitorRequest::Placed).await?;
                    read_frame_async::<MonitorResponse>(&mut stream)
                        .await
                        .map(Ok)
                }
                Err(error) => {
                    // EOF instead of Placed; its answer says the init is gone.
                    tokio::io::AsyncWriteExt::shutdown(&mut stream).await?;
                    let _ = read_frame_async::<MonitorResponse>(&mut stream).await;
                    Ok(Err(error))
                }
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Err(_) => Err(MonitorError::Timeout {
                pod_dir: self.pod_dir.clone(),
                timeout: REQUEST_TIMEOUT,
            }),
            Ok(Err(source)) => Err(MonitorError::Unreachable {
                pod_dir: self.pod_dir.clone(),
                source,
            }),
            Ok(Ok(Ok(MonitorResponse::Error { message }))) => Err(self.failed(message)),
            Ok(Ok(result)) => Ok(result),
        }
    }

    pub async fn request(&self, request: &MonitorRequest) -> Result<MonitorResponse, MonitorError> {
        self.request_within(request, REQUEST_TIMEOUT).await
    }

    /// A request the monitor answers later (Wait, Exec): `timeout` bounds
    /// the whole exchange.
    pub async fn request_within(
        &self,
        request: &MonitorRequest,
        timeout: Duration,
    ) -> Result<MonitorResponse, MonitorError> {
        let exchange = async {
            let (_dir, socket) = short_path(&self.pod_dir, SOCKET_FILE)?;
            let mut stream = UnixStream::connect(socket).await?;
            write_frame_async(&mut stream, request).await?;
            read_frame_async::<MonitorResponse>(&mut stream).await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(MonitorError::Timeout {
                pod_dir: self.pod_dir.clone(),
                timeout,
            }),
            Ok(Err(source)) => Err(MonitorError::Unreachable {
                pod_dir: self.pod_dir.clone(),
                source,
            }),
            Ok(Ok(MonitorResponse::Error { message })) => Err(self.failed(message)),
            Ok(Ok(response)) => Ok(response),
        }
    }
}
