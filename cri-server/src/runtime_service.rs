//! CRI RuntimeService. Handlers validate, translate and delegate; RPCs whose
//! issue has not landed answer `Unimplemented`, naming themselves.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use proto::cri::runtime_service_server::RuntimeService;
use proto::cri::*;
use tonic::{Request, Response, Status};

use crate::containers;
use crate::daemon::Daemon;
use crate::error::CridError;
use crate::pods;
use crate::rpc::{blocking, not_built, traced};
use crate::status;

/// The CRI API version crid speaks, and the kubelet-facing version string
/// every CRI runtime reports.
const RUNTIME_API_VERSION: &str = "v1";
const KUBELET_API_VERSION: &str = "0.1.0";
pub const RUNTIME_NAME: &str = "crid";

/// The answer of a server-streaming RPC.
type ResponseStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
pub struct RuntimeApi {
    daemon: Arc<Daemon>,
}

impl RuntimeApi {
    pub fn new(daemon: Arc<Daemon>) -> RuntimeApi {
        RuntimeApi { daemon }
    }
}

type RpcResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(&self, request: Request<VersionRequest>) -> RpcResult<VersionResponse> {
        traced("Version", request, |_| async {
            Ok(VersionResponse {
                version: KUBELET_API_VERSION.into(),
                runtime_name: RUNTIME_NAME.into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime_api_version: RUNTIME_API_VERSION.into(),
            })
        })
        .await
    }

    async fn status(&self, request: Request<StatusRequest>) -> RpcResult<StatusResponse> {
        let daemon = self.daemon.clone();
        traced("Status", request, |request| async move {
            // Filesystem checks block: keep them off the async workers.
            blocking(move || daemon_status(&daemon, request.verbose)).await
        })
        .await
    }

    async fn runtime_config(
        &self,
        request: Request<RuntimeConfigRequest>,
    ) -> RpcResult<RuntimeConfigResponse> {
        let driver = match self.daemon.config.runtime.cgroup_driver {
            crate::config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
            crate::config::CgroupDriver::Systemd => CgroupDriver::Systemd,
        };
        traced("RuntimeConfig", request, |_| async move {
            Ok(RuntimeConfigResponse {
                linux: Some(LinuxRuntimeConfiguration {
                    cgroup_driver: driver.into(),
                }),
            })
        })
        .await
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> RpcResult<UpdateRuntimeConfigResponse> {
        let daemon = self.daemon.clone();
        traced("UpdateRuntimeConfig", request, |request| async move {
            let network = request
                .runtime_config
                .ok_or_else(|| CridError::invalid("runtime_config", "<unset>", "is required"))?
                .network_config
                .ok_or_else(|| {
                    CridError::invalid("runtime_config.network_config", "<unset>", "is required")
                })?;
            // An empty CIDR means kubelet has none to give: keep what we have.
            if !network.pod_cidr.is_empty() {
                validate_pod_cidrs(&network.pod_cidr)?;
                blocking(move || Ok(daemon.set_pod_cidr(network.pod_cidr)?)).await?;
            }
            Ok(UpdateRuntimeConfigResponse {})
        })
        .await
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> RpcResult<RunPodSandboxResponse> {
        let daemon = self.daemon.clone();
        traced("RunPodSandbox", request, |request| async move {
            let pod_sandbox_id = pods::run(daemon, request).await?;
            Ok(RunPodSandboxResponse { pod_sandbox_id })
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> RpcResult<StopPodSandboxResponse> {
        let daemon = self.daemon.clone();
        traced("StopPodSandbox", request, |request| async move {
            pods::stop(daemon, &request.pod_sandbox_id).await?;
            Ok(StopPodSandboxResponse {})
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> RpcResult<RemovePodSandboxResponse> {
        let daemon = self.daemon.clone();
        traced("RemovePodSandbox", request, |request| async move {
            pods::remove(daemon, &request.pod_sandbox_id).await?;
            Ok(RemovePodSandboxResponse {})
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> RpcResult<PodSandboxStatusResponse> {
        let daemon = self.daemon.clone();
        traced("PodSandboxStatus", request, |request| {
            pods::status(daemon, request)
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> RpcResult<ListPodSandboxResponse> {
        let daemon = self.daemon.clone();
        traced("ListPodSandbox", request, |request| {
            pods::list(daemon, request)
        })
        .await
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> RpcResult<CreateContainerResponse> {
        let daemon = self.daemon.clone();
        traced("CreateContainer", request, |request| async move {
            let container_id = containers::create(daemon, request).await?;
            Ok(CreateContainerResponse { container_id })
        })
        .await
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> RpcResult<StartContainerResponse> {
        let daemon = self.daemon.clone();
        traced("StartContainer", request, |request| async move {
            containers::start(daemon, &request.container_id).await?;
            Ok(StartContainerResponse {})
        })
        .await
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> RpcResult<StopContainerResponse> {
        let daemon = self.daemon.clone();
        traced("StopContainer", request, |request| async move {
            containers::stop(daemon, &request.container_id, request.timeout).await?;
            Ok(StopContainerResponse {})
        })
        .await
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> RpcResult<RemoveContainerResponse> {
        let daemon = self.daemon.clone();
        traced("RemoveContainer", request, |request| async move {
            containers::remove(daemon, &request.container_id).await?;
            Ok(RemoveContainerResponse {})
        })
        .await
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> RpcResult<ListContainersResponse> {
        let daemon = self.daemon.clone();
        traced("ListContainers", request, |request| async move {
            containers::list(daemon, request).await
        })
        .await
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> RpcResult<ContainerStatusResponse> {
        let daemon = self.daemon.clone();
        traced("ContainerStatus", request, |request| async move {
            containers::status(daemon, request).await
        })
        .await
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> RpcResult<UpdateContainerResourcesResponse> {
        let daemon = self.daemon.clone();
        traced("UpdateContainerResources", request, |request| async move {
            containers::update_resources(daemon, request).await?;
            Ok(UpdateContainerResourcesResponse {})
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> RpcResult<ReopenContainerLogResponse> {
        let daemon = self.daemon.clone();
        traced("ReopenContainerLog", request, |request| async move {
            containers::reopen_log(daemon, &request.container_id).await?;
            Ok(ReopenContainerLogResponse {})
        })
        .await
    }

    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> RpcResult<ExecSyncResponse> {
        let daemon = self.daemon.clone();
        traced("ExecSync", request, |request| async move {
            containers::exec_sync(daemon, request).await
        })
        .await
    }

    async fn exec(&self, request: Request<ExecRequest>) -> RpcResult<ExecResponse> {
        let daemon = self.daemon.clone();
        traced("Exec", request, |request| {
            crate::streaming::exec(daemon, request)
        })
        .await
    }

    async fn attach(&self, request: Request<AttachRequest>) -> RpcResult<AttachResponse> {
        let daemon = self.daemon.clone();
        traced("Attach", request, |request| {
            crate::streaming::attach(daemon, request)
        })
        .await
    }

    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> RpcResult<PortForwardResponse> {
        let daemon = self.daemon.clone();
        traced("PortForward", request, |request| {
            crate::streaming::port_forward(daemon, request)
        })
        .await
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> RpcResult<ContainerStatsResponse> {
        traced("ContainerStats", request, |_| not_built("ContainerStats")).await
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> RpcResult<ListContainerStatsResponse> {
        traced("ListContainerStats", request, |_| {
            not_built("ListContainerStats")
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> RpcResult<PodSandboxStatsResponse> {
        traced("PodSandboxStats", request, |_| not_built("PodSandboxStats")).await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> RpcResult<ListPodSandboxStatsResponse> {
        traced("ListPodSandboxStats", request, |_| {
            not_built("ListPodSandboxStats")
        })
        .await
    }

    async fn checkpoint_container(
        &self,
        request: Request<CheckpointContainerRequest>,
    ) -> RpcResult<CheckpointContainerResponse> {
        traced("CheckpointContainer", request, |_| {
            not_built("CheckpointContainer")
        })
        .await
    }

    type GetContainerEventsStream = ResponseStream<ContainerEventResponse>;

    async fn get_container_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> RpcResult<Self::GetContainerEventsStream> {
        traced("GetContainerEvents", request, |_| {
            not_built("GetContainerEvents")
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        request: Request<ListMetricDescriptorsRequest>,
    ) -> RpcResult<ListMetricDescriptorsResponse> {
        traced("ListMetricDescriptors", request, |_| {
            not_built("ListMetricDescriptors")
        })
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        request: Request<ListPodSandboxMetricsRequest>,
    ) -> RpcResult<ListPodSandboxMetricsResponse> {
        traced("ListPodSandboxMetrics", request, |_| {
            not_built("ListPodSandboxMetrics")
        })
        .await
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<UpdatePodSandboxResourcesRequest>,
    ) -> RpcResult<UpdatePodSandboxResourcesResponse> {
        traced("UpdatePodSandboxResources", request, |_| {
            not_built("UpdatePodSandboxResources")
        })
        .await
    }

    // The Stream* RPCs (1.36) are the List RPCs in pieces; kubelet uses the
    // List ones when these answer Unimplemented.

    type StreamPodSandboxesStream = ResponseStream<StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        request: Request<StreamPodSandboxesRequest>,
    ) -> RpcResult<Self::StreamPodSandboxesStream> {
        traced("StreamPodSandboxes", request, |_| {
            not_built("StreamPodSandboxes")
        })
        .await
    }

    type StreamContainersStream = ResponseStream<StreamContainersResponse>;

    async fn stream_containers(
        &self,
        request: Request<StreamContainersRequest>,
    ) -> RpcResult<Self::StreamContainersStream> {
        traced("StreamContainers", request, |_| {
            not_built("StreamContainers")
        })
        .await
    }

    type StreamContainerStatsStream = ResponseStream<StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        request: Request<StreamContainerStatsRequest>,
    ) -> RpcResult<Self::StreamContainerStatsStream> {
        traced("StreamContainerStats", request, |_| {
            not_built("StreamContainerStats")
        })
        .await
    }

    type StreamPodSandboxStatsStream = ResponseStream<StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<StreamPodSandboxStatsRequest>,
    ) -> RpcResult<Self::StreamPodSandboxStatsStream> {
        traced("StreamPodSandboxStats", request, |_| {
            not_built("StreamPodSandboxStats")
        })
        .await
    }

    type StreamPodSandboxMetricsStream = ResponseStream<StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        request: Request<StreamPodSandboxMetricsRequest>,
    ) -> RpcResult<Self::StreamPodSandboxMetricsStream> {
        traced("StreamPodSandboxMetrics", request, |_| {
            not_built("StreamPodSandboxMetrics")
        })
        .await
    }
}

fn daemon_status(daemon: &Daemon, verbose: bool) -> Result<StatusResponse, CridError> {
    let network = cni::load_network(&daemon.config.cni.conf_dir, &daemon.config.cni.bin_dirs);
    let conditions = vec![
        status::runtime_condition(&daemon.config),
        status::network_condition(&network),
    ];
    let mut info = std::collections::HashMap::new();
    if verbose {
        let cni_info = match &network {
            Ok(network) => serde_json::json!({ "path": network.path, "network": network.raw }),
            Err(error) => serde_json::json!({ "error": error.to_string() }),
        };
        let entries = [
            ("config", serde_json::to_value(&daemon.config)),
            ("cniconfig", Ok(cni_info)),
            ("podCIDR", Ok(serde_json::Value::String(daemon.pod_cidr()))),
            // crid writes no /proc/<pid>/attr: say which LSM it leaves alone.
            ("lsm", Ok(serde_json::Value::from(status::host_lsm()))),
        ];
        for (key, value) in entries {
            let value = value.map_err(|e| CridError::invalid("verbose", key, e.to_string()))?;
            info.insert(key.to_string(), value.to_string());
        }
    }
    Ok(StatusResponse {
        status: Some(RuntimeStatus { conditions }),
        info,
        // The default handler. kubelet refuses pods needing a feature
        // reported false, so each is true only where it really works (and
        // an e2e test uses it: e2e/tests/api_level.rs).
        runtime_handlers: vec![RuntimeHandler {
            name: String::new(),
            features: Some(RuntimeHandlerFeatures {
                recursive_read_only_mounts: status::recursive_read_only_mounts(),
                // User namespaces are not built yet.
                user_namespaces: false,
            }),
        }],
        features: Some(RuntimeFeatures {
            // Strict and Merge are resolved by crid itself from the image's
            // /etc/group: nothing the node must have.
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
        }),
    })
}

/// kubelet sends one CIDR, or two comma-separated ones on dual-stack nodes.
fn validate_pod_cidrs(value: &str) -> Result<(), CridError> {
    const FIELD: &str = "runtime_config.network_config.pod_cidr";
    let invalid = |reason: &str| CridError::invalid(FIELD, value, reason);
    let cidrs: Vec<&str> = value.split(',').map(str::trim).collect();
    if cidrs.len() > 2 {
        return Err(invalid("at most two CIDRs (one per IP family)"));
    }
    let mut families = Vec::new();
    for cidr in cidrs {
        let (address, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| invalid("a CIDR is ADDRESS/PREFIX"))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| invalid("not an IP address before '/'"))?;
        let max_prefix = if address.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(prefix) if prefix <= max_prefix => {}
            _ => return Err(invalid("prefix length out of range")),
        }
        if families.contains(&address.is_ipv4()) {
            return Err(invalid("two CIDRs of the same IP family"));
        }
        families.push(address.is_ipv4());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidr_validation() {
        for good in [
            "10.88.0.0/16",
            "10.244.1.0/24,fd00:10:244:1::/64",
            "fd00::/64",
            "0.0.0.0/0",
        ] {
            validate_pod_cidrs(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "10.88.0.0",
            "10.88.0.0/33",
            "fd00::/129",
            "x/8",
            "10.0.0.0/8,10.1.0.0/16",
            "a,b,c",
            "",
        ] {
            let error = validate_pod_cidrs(bad).expect_err(bad).to_string();
            assert!(error.contains("pod_cidr"), "{error}");
        }
    }
}
