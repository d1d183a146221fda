//! The daemon's lifecycle and wiring: claim the root, state dir and socket,
//! open the metadata store, build the stores, the controllers over them and
//! the CRI services over those, serve CRI until told to stop, then clean up.
//!
//! The layers, each using only those below it: stores (`records`, `store`,
//! `live`, `objects`) → controllers (`images`, `containers`, `pods`) →
//! services (`runtime_service`, `image_service`) → this wiring.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use proto::cri::image_service_server::ImageServiceServer;
use proto::cri::runtime_service_server::RuntimeServiceServer;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::container_events::{Emitter, EventHub};
use crate::containers::{ContainerController, ContainerDeps};
use crate::image_service::ImageApi;
use crate::images::ImageController;
use crate::instance::{BoundSocket, DirLock, InstanceError, ensure_dir};
use crate::limits::MAX_MESSAGE_BYTES;
use crate::live::{Change, LiveStates};
use crate::locks::KeyedLocks;
use crate::objects::Stores;
use crate::pods::PodController;
use crate::runtime_service::RuntimeApi;
use crate::store::{MetadataStore, PodCidr, StoreError};

/// How long in-flight RPCs may finish after SIGTERM before crid exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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

/// What the daemon is made of: the controllers, and what the services
/// need besides them. Built once by [`start`].
pub struct Daemon {
    pub config: Arc<Config>,
    pub stores: Stores,
    pub pod_cidr: Arc<PodCidr>,
    pub images: Arc<ImageController>,
    pub containers: Arc<ContainerController>,
    pub pods: Arc<PodController>,
    /// The pods' locks and live states the controllers share.
    pub pod_locks: Arc<KeyedLocks>,
    pub live: Arc<LiveStates>,
    /// The stats RPCs and /metrics, over one collector.
    pub stats: Arc<crate::stats::Stats>,
    /// GetContainerEvents' subscribers.
    pub events: Arc<EventHub>,
}

/// A daemon that holds its directories and socket, ready to serve.
pub struct Started {
    daemon: Daemon,
    socket: BoundSocket,
    /// The streaming server's socket, and what serves Exec, Attach and
    /// PortForward through it.
    streaming_listener: std::net::TcpListener,
    streaming: Arc<crate::streaming::Streaming>,
    metrics_listener: tokio::net::TcpListener,
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
    let image_store = image::ImageStore::open(
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
    let mut sandboxes =
        pod_sandbox::PodManager::new(&config.state, monitor_binary()?, network, cgroups)?;
    sandboxes.probe_user_namespaces(&config.root);
    let metrics_listener = metrics::exposition::bind(config.metrics.address)
        .await
        .map_err(|error| DaemonError::Setup(format!("[metrics] address: {error}")))?;
    let socket = BoundSocket::bind(&config.listen)?;
    let (streaming_listener, requests) = streaming::bind(config.streaming.address)
        .map_err(|error| DaemonError::Setup(format!("[streaming] address: {error}")))?;
    let daemon = Daemon::wire(config, store, image_store, sandboxes)?;
    let streaming = Arc::new(crate::streaming::Streaming::new(
        Arc::new(requests),
        daemon.pods.clone(),
        daemon.containers.clone(),
    ));
    Ok(Started {
        daemon,
        socket,
        streaming_listener,
        streaming,
        metrics_listener,
        _locks: locks,
    })
}

impl Daemon {
    /// Loads the stores from `store` and builds the controllers over them
    /// and the libraries given. Blocking (see [`Stores::load`]); in a
    /// Tokio runtime (it starts the controllers' own tasks).
    pub fn wire(
        config: Config,
        store: Arc<MetadataStore>,
        image_store: image::ImageStore,
        sandboxes: pod_sandbox::PodManager,
    ) -> Result<Daemon, StoreError> {
        let stores = Stores::load(store.clone())?;
        let collector = metrics::Collector::new(
            sandboxes.cgroups().hierarchy().clone(),
            metrics::Options::default(),
        );
        let pod_cidr = Arc::new(PodCidr::load(store)?);
        let sandboxes = Arc::new(sandboxes);
        let (deaths_tx, deaths) = tokio::sync::mpsc::unbounded_channel();
        let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
        let live = Arc::new(LiveStates::reporting_deaths(deaths_tx).reporting_changes(changes_tx));
        // One lock per pod id, taken by every pod and container operation
        // that changes a pod or one of its containers (CNI ADD/DEL must not
        // interleave; no container is created into a pod being removed).
        let pod_locks = Arc::new(KeyedLocks::default());
        let images = Arc::new(ImageController::new(
            stores.images.clone(),
            stores.containers.clone(),
            image_store,
        ));
        let containers = Arc::new(ContainerController::new(ContainerDeps {
            records: stores.containers.clone(),
            pods: stores.pods.clone(),
            images: images.clone(),
            sandboxes: sandboxes.clone(),
            live: live.clone(),
            pod_locks: pod_locks.clone(),
            lists: stores.lists.clone(),
            state: config.state.clone(),
            root: config.root.clone(),
        }));
        // Pods whose monitor died are ended by the container controller.
        tokio::spawn(containers.clone().follow_monitor_deaths(deaths));
        let pods = Arc::new(PodController::new(
            stores.pods.clone(),
            sandboxes,
            containers.clone(),
            live.clone(),
            pod_locks.clone(),
            stores.lists.clone(),
        ));
        // The containers' changes become the CRI container events.
        let events = Arc::new(EventHub::default());
        let emitter = Emitter::new(
            events.clone(),
            stores.pods.clone(),
            &stores.containers,
            pods.clone(),
            containers.clone(),
        );
        tokio::spawn(emitter.run(changes));
        let config = Arc::new(config);
        let stats = Arc::new(crate::stats::Stats::new(
            config.clone(),
            stores.pods.clone(),
            stores.containers.clone(),
            live.clone(),
            collector,
            crate::stats::Controllers {
                pods: pods.clone(),
                containers: containers.clone(),
                images: images.clone(),
                started_at: crate::rpc::now_nanos(),
            },
        ));
        Ok(Daemon {
            config,
            stores,
            pod_cidr,
            images,
            containers,
            pods,
            pod_locks,
            live,
            stats,
            events,
        })
    }

    pub fn runtime_api(&self) -> RuntimeApi {
        RuntimeApi::new(
            self.config.clone(),
            self.pod_cidr.clone(),
            self.pods.clone(),
            self.containers.clone(),
            self.stats.clone(),
            self.events.clone(),
        )
    }

    pub fn image_api(&self) -> ImageApi {
        ImageApi::new(self.images.clone())
    }
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
            streaming_listener,
            streaming,
            metrics_listener,
            _locks,
        } = self;
        // Before serving: kubelet must never see a half-made pod.
        daemon.pods.recover().await;
        daemon.containers.recover().await;
        // Every pod's monitor is followed again; its snapshot catches up
        // with what ended while crid was down.
        daemon.pods.watch_all().await;
        // What ended while crid was down gets its STOPPED event (held for
        // the first subscriber: kubelet, once it is back).
        daemon.live.report(Change::Recovered);
        // Layers of pulls a crash interrupted go now; serving need not wait.
        let collector = daemon.images.clone();
        tokio::spawn(async move {
            if let Err(error) = collector.collect_garbage().await {
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

        let requests = streaming.requests();
        tracing::info!(url = requests.base_url(), "streaming server listening");
        let limits = streaming::Limits {
            idle_timeout: daemon.config.streaming.idle_timeout,
            max_sessions: daemon.config.streaming.max_sessions,
        };
        let streaming_server = tokio::spawn(streaming::serve(
            streaming_listener,
            requests,
            streaming.clone(),
            limits,
        ));
        if let Ok(address) = metrics_listener.local_addr() {
            tracing::info!(%address, "serving /metrics");
        }
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let refresher = tokio::spawn(crate::stats::refresh_for_metrics(daemon.stats.clone()));
        tokio::spawn(metrics::exposition::serve(
            metrics_listener,
            crate::stats::metrics_source(daemon.stats.clone()),
            async {
                let _ = metrics_stopped.await;
            },
        ));
        let runtime = RuntimeServiceServer::new(daemon.runtime_api().with_streaming(streaming))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let images = ImageServiceServer::new(daemon.image_api())
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
                // Event streams never end by themselves: the server's
                // graceful stop would wait for them.
                daemon.events.close();
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
        let _ = stop_metrics.send(());
        refresher.abort();
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
