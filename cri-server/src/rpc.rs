//! Every RPC passes through `traced`: one tracing span per call carrying the
//! method and the pod/container id, and one log line with the outcome. Later,
//! operation metrics hook in here too.

use std::future::Future;
use std::time::Instant;

use proto::cri;
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, field};

// The handlers' clock, as CRI timestamps count.
pub use runtime::now_nanos;

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
        let elapsed = started.elapsed().as_secs_f64();
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        metrics::own::observe_rpc(method, &format!("{code:?}"), elapsed);
        let elapsed_ms = elapsed * 1000.0;
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
/// workers: `spawn_blocking(work).await?`, as every crate spells it (each
/// error type takes a JoinError by From), with the closure's error fixed to
/// CridError so the handlers' closures need no annotation.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CridError> + Send + 'static,
) -> Result<T, CridError> {
    tokio::task::spawn_blocking(work).await?
}

/// The answer of every RPC whose issue has not landed yet.
pub async fn not_built<T>(method: &'static str) -> Result<T, CridError> {
    Err(CridError::NotImplemented(method))
}
