//! Every RPC passes through `traced`: one tracing span per call carrying the
//! method and the pod/container id, and one log line with the outcome. Later,
//! operation metrics hook in here too.

use std::future::Future;
use std::time::Instant;

use proto::cri;
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, field};

use crate::error::CridError;

/// The ids a request carries, for its span.
pub trait RpcIds {
    fn pod_id(&self) -> Option<&str> {
        None
    }
    fn container_id(&self) -> Option<&str> {
        None
    }
}

macro_rules! rpc_ids {
    (pod: $($pod:ident),* ; container: $($container:ident),* ; none: $($none:ident),* $(,)?) => {
        $(impl RpcIds for cri::$pod {
            fn pod_id(&self) -> Option<&str> { Some(&self.pod_sandbox_id) }
        })*
        $(impl RpcIds for cri::$container {
            fn container_id(&self) -> Option<&str> { Some(&self.container_id) }
        })*
        $(impl RpcIds for cri::$none {})*
    };
}

rpc_ids! {
    pod: StopPodSandboxRequest, RemovePodSandboxRequest, PodSandboxStatusRequest,
        CreateContainerRequest, PortForwardRequest, PodSandboxStatsRequest,
        UpdatePodSandboxResourcesRequest;
    container: StartContainerRequest, StopContainerRequest, RemoveContainerRequest,
        ContainerStatusRequest, UpdateContainerResourcesRequest, ReopenContainerLogRequest,
        ExecSyncRequest, ExecRequest, AttachRequest, ContainerStatsRequest,
        CheckpointContainerRequest;
    none: VersionRequest, RunPodSandboxRequest, ListPodSandboxRequest, ListContainersRequest,
        ListContainerStatsRequest, ListPodSandboxStatsRequest, UpdateRuntimeConfigRequest,
        StatusRequest, GetEventsRequest, ListMetricDescriptorsRequest,
        ListPodSandboxMetricsRequest, RuntimeConfigRequest, ListImagesRequest,
        ImageStatusRequest, PullImageRequest, RemoveImageRequest, ImageFsInfoRequest,
        StreamPodSandboxesRequest, StreamContainersRequest, StreamContainerStatsRequest,
        StreamPodSandboxStatsRequest, StreamPodSandboxMetricsRequest, StreamImagesRequest,
}

/// Runs `handler` inside the RPC's span and logs how it ended.
pub async fn traced<Req, Resp, Fut>(
    method: &'static str,
    request: Request<Req>,
    handler: impl FnOnce(Req) -> Fut,
) -> Result<Response<Resp>, Status>
where
    Req: RpcIds,
    Fut: Future<Output = Result<Resp, CridError>>,
{
    let request = request.into_inner();
    let span = tracing::info_span!(
        "rpc",
        method,
        pod_id = field::Empty,
        container_id = field::Empty
    );
    if let Some(id) = request.pod_id().filter(|id| !id.is_empty()) {
        span.record("pod_id", id);
    }
    if let Some(id) = request.container_id().filter(|id| !id.is_empty()) {
        span.record("container_id", id);
    }
    async move {
        let started = Instant::now();
        let result = handler(request).await.map_err(Status::from);
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(_) => tracing::debug!(elapsed_ms, "ok"),
            Err(status) if matches!(status.code(), Code::Internal | Code::Unknown | Code::DataLoss) => {
                tracing::error!(elapsed_ms, code = ?status.code(), message = status.message(), "failed")
            }
            Err(status) => tracing::info!(elapsed_ms, code = ?status.code(), message = status.message(), "refused"),
        }
        result.map(Response::new)
    }
    .instrument(span)
    .await
}

/// Runs blocking work (the metadata store, filesystem checks) off the async
/// workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CridError> + Send + 'static,
) -> Result<T, CridError> {
    tokio::task::spawn_blocking(work).await?
}

/// Now, in nanoseconds since the epoch, as CRI timestamps are.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// The answer of every RPC whose issue has not landed yet.
pub async fn not_built<T>(method: &'static str) -> Result<T, CridError> {
    Err(CridError::NotImplemented(method))
}

/// The record named by a full id or a unique prefix of one (crictl passes
/// prefixes); `field` names the request field in errors.
pub async fn find_by_id_or_prefix<T>(
    daemon: &std::sync::Arc<crate::daemon::Daemon>,
    table: crate::store::Table,
    field: &'static str,
    id: &str,
) -> Result<Option<T>, CridError>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    if id.is_empty() {
        return Err(CridError::invalid(field, id, "is required"));
    }
    let (daemon, id) = (daemon.clone(), id.to_string());
    blocking(move || {
        if let Some(record) = daemon.store.get(table, &id)? {
            return Ok(Some(record));
        }
        let mut matches: Vec<T> = daemon
            .store
            .list::<T>(table)?
            .into_iter()
            .filter(|(key, _)| key.starts_with(&id))
            .map(|(_, record)| record)
            .collect();
        match matches.len() {
            0 | 1 => Ok(matches.pop()),
            _ => Err(CridError::invalid(
                field,
                id,
                "prefix matches more than one record",
            )),
        }
    })
    .await
}

/// A pod's or a container's metadata record: kept in its own table under
/// its id, with the name it reserves.
pub trait Record: serde::Serialize + Clone + Send + Sync + 'static {
    const TABLE: crate::store::Table;
    fn id(&self) -> &str;
    fn reserved_name(&self) -> &str;
    /// What the record weighs in the node's List answers
    /// ([`crate::limits::entry_charge`] of its List entry).
    fn list_charge(&self) -> u64;
}

/// Reserves the record's name and writes the record, in one transaction,
/// if the node's List answers have room for it (else ResourceExhausted).
/// Charge, write and refund happen on one blocking thread, so a cancelled
/// RPC cannot leave the budget charged for a record that was not written.
pub async fn insert_reserving<R: Record>(
    daemon: &std::sync::Arc<crate::daemon::Daemon>,
    record: &R,
) -> Result<(), CridError> {
    let (daemon, record) = (daemon.clone(), record.clone());
    blocking(move || {
        let charge = record.list_charge();
        daemon.lists.charge(R::TABLE, charge)?;
        let written =
            daemon
                .store
                .insert_reserving(R::TABLE, record.reserved_name(), record.id(), &record);
        if written.is_err() {
            daemon.lists.refund(R::TABLE, charge);
        }
        Ok(written?)
    })
    .await
}

/// Writes the record over its previous version.
pub async fn save<R: Record>(
    daemon: &std::sync::Arc<crate::daemon::Daemon>,
    record: &R,
) -> Result<(), CridError> {
    let (daemon, record) = (daemon.clone(), record.clone());
    blocking(move || Ok(daemon.store.put(R::TABLE, record.id(), &record)?)).await
}

/// Removes the record and releases its name, in one transaction.
pub async fn forget<R: Record>(
    daemon: &std::sync::Arc<crate::daemon::Daemon>,
    record: &R,
) -> Result<(), CridError> {
    let (store_daemon, record) = (daemon.clone(), record.clone());
    blocking(move || {
        let removed =
            store_daemon
                .store
                .remove_releasing(R::TABLE, record.reserved_name(), record.id())?;
        // Only what was there was charged (a second forget finds nothing).
        if removed {
            store_daemon.lists.refund(R::TABLE, record.list_charge());
        }
        Ok(())
    })
    .await?;
    compact_store_if_due(daemon);
    Ok(())
}

/// Compacts the metadata store once enough was removed, on a blocking
/// thread of its own: the removal that crossed the threshold answers
/// without waiting for it, and the async workers never wait at all.
pub fn compact_store_if_due(daemon: &std::sync::Arc<crate::daemon::Daemon>) {
    if !daemon.store.compaction_due() {
        return;
    }
    let daemon = daemon.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        match daemon.store.compact_if_due() {
            Ok(Some(sizes)) => tracing::info!(
                before_bytes = sizes.before,
                after_bytes = sizes.after,
                elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                "metadata store compacted"
            ),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot compact the metadata store"),
        }
    });
}
