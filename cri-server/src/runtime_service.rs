//! CRI RuntimeService. Handlers validate, translate and delegate to the pod
//! and container controllers; RPCs whose issue has not landed answer
//! `Unimplemented`, naming themselves.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use proto::cri::runtime_service_server::RuntimeService;
use proto::cri::*;
use tonic::{Request, Response, Status};

use crate::config::Config;
use crate::container_config;
use crate::container_events::EventHub;
use crate::containers::ContainerController;
use crate::error::CridError;
use crate::object_status::{container_status_of, sandbox_status};
use crate::objects::sandbox_state;
use crate::pods::PodController;
use crate::rpc::{blocking, not_built, now_nanos, traced};
use crate::status;
use crate::store::PodCidr;

/// The CRI API version crid speaks, and the kubelet-facing version string
/// every CRI runtime reports.
const RUNTIME_API_VERSION: &str = "v1";
const KUBELET_API_VERSION: &str = "0.1.0";
pub const RUNTIME_NAME: &str = "crid";

/// The answer of a server-streaming RPC.
type ResponseStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
pub struct RuntimeApi {
    config: Arc<Config>,
    pod_cidr: Arc<PodCidr>,
    pods: Arc<PodController>,
    containers: Arc<ContainerController>,
    /// Exec/Attach/PortForward; none: they answer Unimplemented.
    streaming: Option<Arc<crate::streaming::Streaming>>,
    stats: Arc<crate::stats::Stats>,
    events: Arc<EventHub>,
}

impl RuntimeApi {
    pub fn new(
        config: Arc<Config>,
        pod_cidr: Arc<PodCidr>,
        pods: Arc<PodController>,
        containers: Arc<ContainerController>,
        stats: Arc<crate::stats::Stats>,
        events: Arc<EventHub>,
    ) -> RuntimeApi {
        RuntimeApi {
            config,
            pod_cidr,
            pods,
            containers,
            streaming: None,
            stats,
            events,
        }
    }

    /// The service with Exec, Attach and PortForward served by `streaming`.
    pub fn with_streaming(mut self, streaming: Arc<crate::streaming::Streaming>) -> RuntimeApi {
        self.streaming = Some(streaming);
        self
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
        let (config, pod_cidr) = (self.config.clone(), self.pod_cidr.clone());
        let user_namespaces = self.pods.user_namespaces().is_ok();
        traced("Status", request, |request| async move {
            // Filesystem checks block: keep them off the async workers.
            blocking(move || runtime_status(&config, &pod_cidr, request.verbose, user_namespaces))
                .await
        })
        .await
    }

    async fn runtime_config(
        &self,
        request: Request<RuntimeConfigRequest>,
    ) -> RpcResult<RuntimeConfigResponse> {
        let driver = match self.config.runtime.cgroup_driver {
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
        let pod_cidr = self.pod_cidr.clone();
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
                blocking(move || Ok(pod_cidr.set(network.pod_cidr)?)).await?;
            }
            Ok(UpdateRuntimeConfigResponse {})
        })
        .await
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> RpcResult<RunPodSandboxResponse> {
        let (config, pods) = (self.config.clone(), self.pods.clone());
        traced("RunPodSandbox", request, |request| async move {
            let (pod_config, runtime_handler) = checked_pod_request(&config, request)?;
            let pod_sandbox_id = pods.run(pod_config, runtime_handler).await?;
            Ok(RunPodSandboxResponse { pod_sandbox_id })
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> RpcResult<StopPodSandboxResponse> {
        let pods = self.pods.clone();
        traced("StopPodSandbox", request, |request| async move {
            pods.stop(&request.pod_sandbox_id).await?;
            Ok(StopPodSandboxResponse {})
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> RpcResult<RemovePodSandboxResponse> {
        let pods = self.pods.clone();
        traced("RemovePodSandbox", request, |request| async move {
            pods.remove(&request.pod_sandbox_id).await?;
            Ok(RemovePodSandboxResponse {})
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> RpcResult<PodSandboxStatusResponse> {
        let pods = self.pods.clone();
        traced("PodSandboxStatus", request, |request| async move {
            pod_sandbox_status(&pods, request).await
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> RpcResult<ListPodSandboxResponse> {
        let pods = self.pods.clone();
        traced("ListPodSandbox", request, |request| async move {
            list_pod_sandbox(&pods, request).await
        })
        .await
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> RpcResult<CreateContainerResponse> {
        let (config, containers) = (self.config.clone(), self.containers.clone());
        traced("CreateContainer", request, |request| async move {
            let container_config = checked_container_config(&config, request.config)?;
            let container_id = containers
                .create(&request.pod_sandbox_id, container_config)
                .await?;
            Ok(CreateContainerResponse { container_id })
        })
        .await
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> RpcResult<StartContainerResponse> {
        let containers = self.containers.clone();
        traced("StartContainer", request, |request| async move {
            containers.start(&request.container_id).await?;
            Ok(StartContainerResponse {})
        })
        .await
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> RpcResult<StopContainerResponse> {
        let containers = self.containers.clone();
        traced("StopContainer", request, |request| async move {
            containers
                .stop(&request.container_id, request.timeout)
                .await?;
            Ok(StopContainerResponse {})
        })
        .await
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> RpcResult<RemoveContainerResponse> {
        let containers = self.containers.clone();
        traced("RemoveContainer", request, |request| async move {
            containers.remove(&request.container_id).await?;
            Ok(RemoveContainerResponse {})
        })
        .await
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> RpcResult<ListContainersResponse> {
        let containers = self.containers.clone();
        traced("ListContainers", request, |request| async move {
            list_containers(&containers, request).await
        })
        .await
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> RpcResult<ContainerStatusResponse> {
        let containers = self.containers.clone();
        traced("ContainerStatus", request, |request| async move {
            container_status(&containers, request).await
        })
        .await
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> RpcResult<UpdateContainerResourcesResponse> {
        let containers = self.containers.clone();
        traced("UpdateContainerResources", request, |request| async move {
            let resources = request
                .linux
                .as_ref()
                .map(container_config::resources)
                .transpose()?;
            containers
                .update_resources(&request.container_id, resources)
                .await?;
            Ok(UpdateContainerResourcesResponse {})
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> RpcResult<ReopenContainerLogResponse> {
        let containers = self.containers.clone();
        traced("ReopenContainerLog", request, |request| async move {
            containers.reopen_log(&request.container_id).await?;
            Ok(ReopenContainerLogResponse {})
        })
        .await
    }

    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> RpcResult<ExecSyncResponse> {
        let containers = self.containers.clone();
        traced("ExecSync", request, |request| async move {
            if request.cmd.is_empty() {
                return Err(CridError::invalid("cmd", "[]", "a command is required"));
            }
            containers
                .exec_sync(&request.container_id, request.cmd, request.timeout)
                .await
        })
        .await
    }

    async fn exec(&self, request: Request<ExecRequest>) -> RpcResult<ExecResponse> {
        let streaming = self.streaming.clone();
        traced("Exec", request, |request| async move {
            match streaming {
                Some(streaming) => streaming.exec(request).await,
                None => not_built("Exec").await,
            }
        })
        .await
    }

    async fn attach(&self, request: Request<AttachRequest>) -> RpcResult<AttachResponse> {
        let streaming = self.streaming.clone();
        traced("Attach", request, |request| async move {
            match streaming {
                Some(streaming) => streaming.attach(request).await,
                None => not_built("Attach").await,
            }
        })
        .await
    }

    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> RpcResult<PortForwardResponse> {
        let streaming = self.streaming.clone();
        traced("PortForward", request, |request| async move {
            match streaming {
                Some(streaming) => streaming.port_forward(request).await,
                None => not_built("PortForward").await,
            }
        })
        .await
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> RpcResult<ContainerStatsResponse> {
        let stats = self.stats.clone();
        traced("ContainerStats", request, |request| {
            crate::stats::container_stats(stats, request)
        })
        .await
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> RpcResult<ListContainerStatsResponse> {
        let stats = self.stats.clone();
        traced("ListContainerStats", request, |request| {
            crate::stats::list_container_stats(stats, request)
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> RpcResult<PodSandboxStatsResponse> {
        let stats = self.stats.clone();
        traced("PodSandboxStats", request, |request| {
            crate::stats::pod_sandbox_stats(stats, request)
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> RpcResult<ListPodSandboxStatsResponse> {
        let stats = self.stats.clone();
        traced("ListPodSandboxStats", request, |request| {
            crate::stats::list_pod_sandbox_stats(stats, request)
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
        let events = self.events.clone();
        // The request has nothing to check. The stream lives on after this
        // answer; it ends when the client goes (dropped), falls behind or
        // crid stops.
        traced("GetContainerEvents", request, |_| async move {
            let stream: Self::GetContainerEventsStream = Box::pin(events.subscribe());
            Ok(stream)
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        request: Request<ListMetricDescriptorsRequest>,
    ) -> RpcResult<ListMetricDescriptorsResponse> {
        traced("ListMetricDescriptors", request, |_| async {
            Ok(crate::stats::list_metric_descriptors())
        })
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        request: Request<ListPodSandboxMetricsRequest>,
    ) -> RpcResult<ListPodSandboxMetricsResponse> {
        let stats = self.stats.clone();
        traced("ListPodSandboxMetrics", request, |_| {
            crate::stats::list_pod_sandbox_metrics(stats)
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

fn runtime_status(
    config: &Config,
    pod_cidr: &PodCidr,
    verbose: bool,
    user_namespaces: bool,
) -> Result<StatusResponse, CridError> {
    let network = cni::load_network(&config.cni.conf_dir, &config.cni.bin_dirs);
    let conditions = vec![
        status::runtime_condition(config),
        status::network_condition(&network),
    ];
    let mut info = std::collections::HashMap::new();
    if verbose {
        let cni_info = match &network {
            Ok(network) => serde_json::json!({ "path": network.path, "network": network.raw }),
            Err(error) => serde_json::json!({ "error": error.to_string() }),
        };
        let entries = [
            ("config", serde_json::to_value(config)),
            ("cniconfig", Ok(cni_info)),
            ("podCIDR", Ok(serde_json::Value::String(pod_cidr.get()))),
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
                // Probed at start: the kernel and the layers' filesystem
                // take idmapped overlayfs layers.
                user_namespaces,
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

/// RunPodSandbox's request, checked: its config and runtime handler.
fn checked_pod_request(
    config: &Config,
    request: RunPodSandboxRequest,
) -> Result<(PodSandboxConfig, String), CridError> {
    let pod_config = request
        .config
        .ok_or_else(|| CridError::invalid("config", "<unset>", "is required"))?;
    crate::limits::check_labels_and_annotations(
        "pod sandbox",
        &pod_config.labels,
        &pod_config.annotations,
        config.runtime.max_labels_annotations_bytes,
    )?;
    if !request.runtime_handler.is_empty() {
        return Err(CridError::invalid(
            "runtime_handler",
            &request.runtime_handler,
            "crid has only the default handler \"\"",
        ));
    }
    Ok((pod_config, request.runtime_handler))
}

/// CreateContainer's config, checked for what needs no pod or image.
fn checked_container_config(
    config: &Config,
    container_config: Option<ContainerConfig>,
) -> Result<ContainerConfig, CridError> {
    let container_config =
        container_config.ok_or_else(|| CridError::invalid("config", "<unset>", "is required"))?;
    crate::limits::check_labels_and_annotations(
        "container",
        &container_config.labels,
        &container_config.annotations,
        config.runtime.max_labels_annotations_bytes,
    )?;
    if container_config
        .image
        .as_ref()
        .is_none_or(|image| image.image.is_empty())
    {
        return Err(CridError::invalid("config.image.image", "", "is required"));
    }
    Ok(container_config)
}

async fn pod_sandbox_status(
    pods: &PodController,
    request: PodSandboxStatusRequest,
) -> Result<PodSandboxStatusResponse, CridError> {
    let record = pods.find(&request.pod_sandbox_id)?.ok_or_else(|| {
        CridError::NotFound(format!(
            "pod sandbox {:?} not found",
            request.pod_sandbox_id
        ))
    })?;
    let ready = pods.is_ready(&record).await;
    let mut info = std::collections::HashMap::new();
    if request.verbose {
        let details = serde_json::json!({
            "pid": record.sandbox.pause_pid,
            "monitorPid": record.sandbox.monitor_pid,
            "podDir": pods.pod_dir(&record.id),
            "netns": record.sandbox.netns,
            "cgroup": record.sandbox.cgroup,
            "config": record.config,
        });
        info.insert("info".to_string(), details.to_string());
    }
    Ok(PodSandboxStatusResponse {
        status: Some(sandbox_status(&record, ready)),
        info,
        containers_statuses: Vec::new(),
        timestamp: now_nanos(),
    })
}

async fn list_pod_sandbox(
    pods: &PodController,
    request: ListPodSandboxRequest,
) -> Result<ListPodSandboxResponse, CridError> {
    let filter = request.filter.unwrap_or_default();
    let pods = pods
        .list(|record| {
            record.id.starts_with(&filter.id)
                && filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| record.config.labels.get(k) == Some(v))
        })
        .await;
    let items = pods
        .into_iter()
        .map(|(record, ready)| (record, sandbox_state(ready)))
        .filter(|(_, state)| {
            filter
                .state
                .as_ref()
                .is_none_or(|wanted| wanted.state == *state)
        })
        .map(|(record, state)| record.list_entry(state))
        .collect();
    Ok(ListPodSandboxResponse { items })
}

async fn container_status(
    containers: &ContainerController,
    request: ContainerStatusRequest,
) -> Result<ContainerStatusResponse, CridError> {
    let record = containers.find_existing(&request.container_id)?;
    let observed = containers.observe_one(&record).await;
    let mut info = std::collections::HashMap::new();
    if request.verbose {
        let (bundle, spec) = containers.runtime_spec(&record).await?;
        let lsm = blocking(|| Ok(status::host_lsm())).await?;
        let security = spec
            .as_ref()
            .map(|spec| security_info(spec, record.spec.privileged, lsm));
        let details = serde_json::json!({
            "pid": record.pid,
            "sandboxID": record.pod_id,
            "bundle": bundle,
            "cgroup": record.cgroup,
            "runtimeSpec": spec,
            "security": security,
            "user": record.user.as_ref().map(|u| serde_json::json!({
                "uid": u.uid, "gid": u.gid, "additionalGids": u.additional_gids, "username": u.username,
            })),
        });
        info.insert("info".to_string(), details.to_string());
    }
    Ok(ContainerStatusResponse {
        status: Some(container_status_of(&record, &observed)),
        info,
    })
}

/// What the container runs under, read from its runtime spec (the one
/// source of truth for what the init applied) for `crictl inspect`.
fn security_info(spec: &serde_json::Value, privileged: bool, lsm: &str) -> serde_json::Value {
    let process = &spec["process"];
    let linux = &spec["linux"];
    let list = |value: &serde_json::Value| value.as_array().cloned().unwrap_or_default();
    let seccomp = match linux.get("seccomp") {
        None | Some(serde_json::Value::Null) => serde_json::json!("unconfined"),
        Some(profile) => serde_json::json!({
            "defaultAction": profile["defaultAction"],
            "architectures": profile["architectures"],
            "syscallRules": list(&profile["syscalls"]).len(),
        }),
    };
    serde_json::json!({
        "privileged": privileged,
        "capabilities": {
            "effective": list(&process["capabilities"]["effective"]),
            "bounding": list(&process["capabilities"]["bounding"]),
        },
        "noNewPrivileges": process["noNewPrivileges"].as_bool().unwrap_or(false),
        "maskedPaths": list(&linux["maskedPaths"]),
        "readonlyPaths": list(&linux["readonlyPaths"]),
        "readonlyRootfs": spec["root"]["readonly"].as_bool().unwrap_or(false),
        "seccomp": seccomp,
        "rlimits": list(&process["rlimits"]),
        "deviceRules": list(&linux["resources"]["devices"]),
        "lsm": lsm,
    })
}

async fn list_containers(
    containers: &ContainerController,
    request: ListContainersRequest,
) -> Result<ListContainersResponse, CridError> {
    let filter = request.filter.unwrap_or_default();
    let listed = containers
        .list(|r| {
            r.id.starts_with(&filter.id)
                && r.pod_id.starts_with(&filter.pod_sandbox_id)
                && filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
        })
        .await;
    let containers = listed
        .into_iter()
        .filter(|(_, observed)| {
            filter
                .state
                .as_ref()
                .is_none_or(|wanted| wanted.state == i32::from(observed.state))
        })
        .map(|(record, observed)| record.list_entry(observed.state.into()))
        .collect();
    Ok(ListContainersResponse { containers })
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
    use crate::testing::{self, TestDaemon};

    fn refusal<T: std::fmt::Debug>(result: RpcResult<T>) -> Status {
        result.expect_err("a bad request is refused")
    }

    #[tokio::test]
    async fn bad_requests_are_refused_naming_the_field_before_any_controller() {
        let test = TestDaemon::new().await;
        let api = test.daemon.runtime_api();
        let pod_config = testing::pod("p1", crate::objects::PodPhase::Ready).config;
        let mut refused = Vec::new();
        refused.push((
            "config",
            refusal(
                api.create_container(Request::new(CreateContainerRequest {
                    pod_sandbox_id: "p1".into(),
                    config: None,
                    sandbox_config: None,
                }))
                .await,
            ),
        ));
        refused.push((
            "config.image.image",
            refusal(
                api.create_container(Request::new(CreateContainerRequest {
                    pod_sandbox_id: "p1".into(),
                    config: Some(ContainerConfig {
                        metadata: Some(ContainerMetadata {
                            name: "app".into(),
                            attempt: 0,
                        }),
                        ..Default::default()
                    }),
                    sandbox_config: None,
                }))
                .await,
            ),
        ));
        refused.push((
            "runtime_handler",
            refusal(
                api.run_pod_sandbox(Request::new(RunPodSandboxRequest {
                    config: Some(pod_config),
                    runtime_handler: "gvisor".into(),
                }))
                .await,
            ),
        ));
        // No container "c1" exists: a controller would answer NotFound.
        refused.push((
            "cmd",
            refusal(
                api.exec_sync(Request::new(ExecSyncRequest {
                    container_id: "c1".into(),
                    cmd: Vec::new(),
                    timeout: 0,
                }))
                .await,
            ),
        ));
        refused.push((
            "memory_limit_in_bytes",
            refusal(
                api.update_container_resources(Request::new(UpdateContainerResourcesRequest {
                    container_id: "c1".into(),
                    linux: Some(LinuxContainerResources {
                        memory_limit_in_bytes: -5,
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
                .await,
            ),
        ));
        refused.push((
            "runtime_config",
            refusal(
                api.update_runtime_config(Request::new(UpdateRuntimeConfigRequest {
                    runtime_config: None,
                }))
                .await,
            ),
        ));
        for (field, status) in refused {
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{field}: {status:?}"
            );
            assert!(status.message().contains(field), "{field}: {status:?}");
        }
        let stores = &test.daemon.stores;
        assert!(stores.pods.all().is_empty());
        assert!(stores.containers.all().is_empty());
        assert_eq!(stores.lists.usage().pods, 0);
        assert_eq!(stores.lists.usage().containers, 0);
    }

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

    #[test]
    fn security_info_is_read_from_the_spec() {
        let spec = serde_json::json!({
            "process": {
                "capabilities": {"effective": ["CAP_CHOWN"], "bounding": ["CAP_CHOWN", "CAP_KILL"]},
                "noNewPrivileges": true,
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
            },
            "root": {"path": "rootfs", "readonly": true},
            "linux": {
                "resources": {"devices": [{"allow": false, "type": "a", "access": "rwm"}]},
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
                            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
            },
        });
        let info = security_info(&spec, false, "none: test");
        assert_eq!(
            info,
            serde_json::json!({
                "privileged": false,
                "capabilities": {"effective": ["CAP_CHOWN"], "bounding": ["CAP_CHOWN", "CAP_KILL"]},
                "noNewPrivileges": true,
                "maskedPaths": ["/proc/kcore"],
                "readonlyPaths": ["/proc/sys"],
                "readonlyRootfs": true,
                "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "syscallRules": 1},
                "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}],
                "deviceRules": [{"allow": false, "type": "a", "access": "rwm"}],
                "lsm": "none: test",
            })
        );
        // A privileged container's spec: no lists, no profile.
        let bare = serde_json::json!({"process": {}, "root": {"path": "rootfs"}, "linux": {}});
        let info = security_info(&bare, true, "none: test");
        assert_eq!(info["seccomp"], "unconfined");
        assert_eq!(info["maskedPaths"], serde_json::json!([]));
        assert_eq!(info["noNewPrivileges"], false);
        assert_eq!(info["privileged"], true);
    }
}
