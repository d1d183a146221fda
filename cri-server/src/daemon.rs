//! The daemon's lifecycle: claim the root, state dir and socket, open the
//! metadata store, serve CRI until told to stop, then clean up.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use proto::cri::image_service_server::ImageServiceServer;
use proto::cri::runtime_service_server::RuntimeServiceServer;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::containers::ContainerRecord;
use crate::image_service::ImageApi;
use crate::images::ImageRecord;
use crate::instance::{BoundSocket, DirLock, InstanceError, ensure_dir};
use crate::limits::{LIST_BUDGET_BYTES, ListBudget, MAX_MESSAGE_BYTES};
use crate::live::LiveStates;
use crate::locks::KeyedLocks;
use crate::pods::PodRecord;
use crate::records::RecordStore;
use crate::runtime_service::RuntimeApi;
use crate::store::{MetadataStore, StoreError};

/// How long in-flight RPCs may finish after SIGTERM before crid exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const POD_CIDR_SETTING: &str = "pod_cidr";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("serving CRI: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("image store: {0}")]
    Images(#[from] image::ImageError),
    #[error("pods: {0}")]
    Pods(#[from] pod_sandbox::PodError),
    #[error("{0}")]
    Setup(String),
}

/// What every handler shares.
pub struct Daemon {
    pub config: Config,
    /// redb itself: node settings and compaction. Records go through the
    /// stores below, which write through to it.
    pub store: Arc<MetadataStore>,
    pub pod_records: RecordStore<PodRecord>,
    pub container_records: RecordStore<ContainerRecord>,
    pub image_records: RecordStore<ImageRecord>,
    pub images: image::ImageStore,
    pub pods: pod_sandbox::PodManager,
    /// What runs in each pod, as its monitor pushes it: List and Status
    /// read it and ask no monitor.
    pub live: LiveStates,
    /// Serialises the operations on one pod and its containers, keyed by
    /// the pod id: every pod and container operation that changes a pod or
    /// one of its containers holds its pod's lock (CNI ADD/DEL must not
    /// interleave; no container is created into a pod being removed).
    pub pod_locks: KeyedLocks,
    /// Serialises image record updates against image GC.
    pub image_lock: tokio::sync::Mutex<()>,
    /// What the pods and containers weigh in List answers.
    pub lists: ListBudget,
    /// Exec/Attach/PortForward requests waiting for their clients.
    pub streaming: Arc<streaming::Requests>,
    pod_cidr: RwLock<String>,
}

impl Daemon {
    pub fn pod_cidr(&self) -> String {
        self.pod_cidr
            .read()
            .map(|cidr| cidr.clone())
            .unwrap_or_default()
    }

    /// Persists first, so what kubelet was told is kept survives a restart.
    pub fn set_pod_cidr(&self, cidr: String) -> Result<(), StoreError> {
        self.store.put_setting(POD_CIDR_SETTING, &cidr)?;
        if let Ok(mut current) = self.pod_cidr.write() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            *current = cidr;
        }
        Ok(())
    }
}

/// A daemon that holds its directories and socket, ready to serve.
pub struct Started {
    daemon: Arc<Daemon>,
    socket: BoundSocket,
    streaming: std::net::TcpListener,
    _locks: Vec<DirLock>,
}

/// Claims root, state and socket (refusing if another crid has them),
/// opens the store and reaches the cgroup driver (systemd, if configured).
/// Mostly blocking; runs once at start.
pub async fn start(config: Config) -> Result<Started, DaemonError> {
    ensure_dir(&config.root, 0o700)?;
    ensure_dir(&config.state, 0o711)?;
    let mut locks = vec![DirLock::acquire(&config.root)?];
    if config.state != config.root {
        locks.push(DirLock::acquire(&config.state)?);
    }
    let store = Arc::new(MetadataStore::open(&config.root)?);
    // Every record is read and decoded here, once.
    let pod_records = RecordStore::<PodRecord>::load(store.clone())?;
    let container_records = RecordStore::<ContainerRecord>::load(store.clone())?;
    let image_records = RecordStore::<ImageRecord>::load(store.clone())?;
    let lists = ListBudget::new(LIST_BUDGET_BYTES);
    pod_records.charge_loaded(&lists);
    container_records.charge_loaded(&lists);
    let pod_cidr = store
        .get_setting::<String>(POD_CIDR_SETTING)?
        .unwrap_or_default();
    let images = image::ImageStore::open(
        &config.root.join("images"),
        config.registries.clone(),
        config.images.pull_limits(),
    )?;
    let network = pod_sandbox::NetworkSetup {
        conf_dir: config.cni.conf_dir.clone(),
        runner: cni::CniRunner::new(config.cni.bin_dirs.clone(), config.root.join("cni-cache")),
    };
    let driver = match config.runtime.cgroup_driver {
        crate::config::CgroupDriver::Cgroupfs => runtime::cgroup::Driver::Cgroupfs,
        crate::config::CgroupDriver::Systemd => runtime::cgroup::Driver::Systemd,
    };
    // A driver that cannot work here stops crid at once, with the reason,
    // rather than failing every pod later.
    let cgroups = runtime::cgroup::Cgroups::new(driver)
        .await
        .map_err(|error| DaemonError::Setup(format!("[runtime] cgroup_driver: {error}")))?;
    let pods = pod_sandbox::PodManager::new(&config.state, monitor_binary()?, network, cgroups)?;
    let socket = BoundSocket::bind(&config.listen)?;
    let (streaming, streaming_requests) = streaming::bind(config.streaming.address)
        .map_err(|error| DaemonError::Setup(format!("[streaming] address: {error}")))?;
    let daemon = Arc::new(Daemon {
        config,
        store,
        pod_records,
        container_records,
        image_records,
        images,
        pods,
        live: LiveStates::default(),
        pod_locks: KeyedLocks::default(),
        image_lock: tokio::sync::Mutex::new(()),
        lists,
        streaming: Arc::new(streaming_requests),
        pod_cidr: RwLock::new(pod_cidr),
    });
    Ok(Started {
        daemon,
        socket,
        streaming,
        _locks: locks,
    })
}

/// crid-monitor is installed beside crid.
fn monitor_binary() -> Result<std::path::PathBuf, DaemonError> {
    let exe = std::env::current_exe()
        .map_err(|e| DaemonError::Setup(format!("cannot find crid's own path: {e}")))?;
    let monitor = exe.with_file_name("crid-monitor");
    if monitor.is_file() {
        Ok(monitor)
    } else {
        Err(DaemonError::Setup(format!(
            "{} is missing: install crid-monitor beside crid",
            monitor.display()
        )))
    }
}

impl Started {
    /// Serves CRI until `shutdown` resolves, then lets in-flight RPCs finish
    /// (bounded) and removes the socket.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = &'static str>,
    ) -> Result<(), DaemonError> {
        let Started {
            daemon,
            socket,
            streaming,
            _locks,
        } = self;
        // Before serving: kubelet must never see a half-made pod.
        crate::pods::recover(&daemon).await;
        crate::containers::recover(&daemon).await;
        // Every pod's monitor is followed again; its snapshot catches up
        // with what ended while crid was down.
        crate::pods::watch_all(&daemon).await;
        // Layers of pulls a crash interrupted go now; serving need not wait.
        let collector = daemon.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::images::collect_garbage(&collector).await {
                tracing::warn!(%error, "image garbage collection at start failed");
            }
        });
        let listener =
            tokio::net::UnixListener::from_std(socket.listener.try_clone().map_err(|source| {
                InstanceError::Io {
                    what: "cannot use socket",
                    path: socket.path().to_path_buf(),
                    source,
                }
            })?)
            .map_err(|source| InstanceError::Io {
                what: "cannot use socket",
                path: socket.path().to_path_buf(),
                source,
            })?;

        let sessions = Arc::new(crate::streaming::Sessions::new(daemon.clone()));
        tracing::info!(
            url = daemon.streaming.base_url(),
            "streaming server listening"
        );
        let limits = streaming::Limits {
            idle_timeout: daemon.config.streaming.idle_timeout,
            max_sessions: daemon.config.streaming.max_sessions,
        };
        let streaming_server = tokio::spawn(streaming::serve(
            streaming,
            daemon.streaming.clone(),
            sessions,
            limits,
        ));
        let runtime = RuntimeServiceServer::new(RuntimeApi::new(daemon.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let images = ImageServiceServer::new(ImageApi::new(daemon.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .layer(tower::util::MapResponseLayer::new(
                crate::limits::size_refusal_as_resource_exhausted,
            ))
            .add_service(runtime)
            .add_service(images)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            });
        tokio::pin!(server);
        tracing::info!(
            socket = %socket.path().display(),
            root = %daemon.config.root.display(),
            state = %daemon.config.state.display(),
            version = env!("CARGO_PKG_VERSION"),
            "crid serving CRI"
        );
        // Under systemd (Type=notify): the unit is up once kubelet can connect.
        notify_systemd(sd_notify::NotifyState::Ready);

        let result = tokio::select! {
            result = &mut server => result,
            signal = shutdown => {
                tracing::info!(signal, "shutting down");
                notify_systemd(sd_notify::NotifyState::Stopping);
                // New clients get ENOENT rather than a server that is leaving.
                socket.remove_file();
                let _ = stop_tx.send(());
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight RPCs did not finish; exiting anyway");
                        Ok(())
                    }
                }
            }
        };
        socket.remove_file();
        streaming_server.abort();
        result?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Tells systemd how crid is doing, when systemd started it with a
/// notification socket (`$NOTIFY_SOCKET`); nothing otherwise. crid's
/// children never see the variable: each is started with a cleared
/// environment.
fn notify_systemd(state: sd_notify::NotifyState) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(false, &[state]) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
