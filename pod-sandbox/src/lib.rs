//! Pods: the order in which a pod is built and torn down, with rollback.
//!
//! A pod is a state dir (`<state>/pods/<id>`) holding its hostname, hosts and
//! resolv.conf files, a tmpfs for `/dev/shm` and the pinned namespaces; a
//! `crid-monitor` whose pause process holds those namespaces; a leaf cgroup
//! for the two; and, for pods with their own network, a CNI attachment.
//! [`PodManager::run`] builds them in that order and undoes what it did if a
//! step fails; [`PodManager::stop`] and [`PodManager::remove`] are idempotent
//! and work from whatever a crash left.

mod error;
pub mod fault;
pub use fault::Progress;
pub mod files;
mod mounts;
pub mod spec;
pub mod sysctl;

use std::path::{Path, PathBuf};

use proto::monitor::{MonitorConfig, MonitorRequest, NewNamespaces};
use runtime::MonitorClient;
use serde_json::{Map, Value, json};
use tokio::task::spawn_blocking;

pub use cgroup::{Cgroups, Hierarchy, Placement};
pub use error::PodError;
pub use mounts::{namespace_path, shm_path};
/// Pod cgroups live in `runtime` beside the containers' (one implementation);
/// re-exported so the pod's callers keep one import path.
pub use runtime::cgroup;
pub use spec::{DnsConfig, NamespaceMode, PodSpec, PortMapping, SandboxState};

const POD_IFNAME: &str = "eth0";
/// containerd's default pod `/dev/shm` size.
pub const DEFAULT_SHM_BYTES: u64 = 64 * 1024 * 1024;

/// How to reach the node's network plugins.
#[derive(Debug, Clone)]
pub struct NetworkSetup {
    pub conf_dir: PathBuf,
    pub runner: cni::CniRunner,
}

pub struct PodManager {
    pods_dir: PathBuf,
    monitor_binary: PathBuf,
    network: NetworkSetup,
    cgroups: Cgroups,
    host_resolv_conf: PathBuf,
    /// Whether pods may have user namespaces of their own here (see
    /// [`PodManager::probe_user_namespaces`]); why not, if not.
    user_namespaces: Result<(), String>,
}

/// A pod's pause and its containers' inits run as the pod's root, which
/// the host's dirs do not know: they reach their pod and bundle dirs (and
/// the files bound from there) only through dirs every user may search.
fn searchable_by_others(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dir.ancestors() {
        let mode = std::fs::metadata(dir)
            .map_err(|e| format!("cannot stat {}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} (mode {:04o}) is not searchable by others, so a pod's user namespace \
                 could not reach its files beneath it",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// Whether teardown may go past a failed CNI DEL (rollback, remove) or must
/// stop there so kubelet retries (stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    KeepOnNetworkError,
    Force,
}

impl PodManager {
    pub fn new(
        state_dir: &Path,
        monitor_binary: PathBuf,
        network: NetworkSetup,
        cgroups: Cgroups,
    ) -> Result<PodManager, PodError> {
        let pods_dir = state_dir.join("pods");
        std::fs::create_dir_all(&pods_dir).map_err(PodError::io("cannot create", &pods_dir))?;
        Ok(PodManager {
            pods_dir,
            monitor_binary,
            network,
            cgroups,
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            user_namespaces: Err("not probed".into()),
        })
    }

    /// Finds out whether pods can have user namespaces of their own here:
    /// their containers' layers are idmapped under overlayfs, which needs
    /// the kernel (5.19+) and the filesystem of `layers_dir` to take
    /// idmapped mounts. crid-monitor tries the very thing in a scratch dir
    /// beneath `layers_dir`, which is removed again.
    pub fn probe_user_namespaces(&mut self, layers_dir: &Path) {
        let scratch = layers_dir.join("probe-idmapped-layers");
        let _ = std::fs::remove_dir_all(&scratch);
        let probed = std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))
            .and_then(|()| {
                std::process::Command::new(&self.monitor_binary)
                    .arg(proto::monitor::PROBE_IDMAPPED_LAYERS)
                    .arg(&scratch)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|e| format!("cannot run {}: {e}", self.monitor_binary.display()))
            })
            .and_then(|output| {
                if output.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "idmapped overlayfs layers do not work here: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ))
                }
            });
        if let Err(error) = std::fs::remove_dir_all(&scratch) {
            tracing::warn!(dir = %scratch.display(), %error, "cannot remove the probe's dir");
        }
        let probed = probed.and_then(|()| searchable_by_others(&self.pods_dir));
        match &probed {
            Ok(()) => tracing::info!("pods may have user namespaces of their own"),
            Err(reason) => tracing::info!(%reason, "pods cannot have user namespaces of their own"),
        }
        self.user_namespaces = probed;
    }

    /// Whether pods may have user namespaces of their own; why not.
    pub fn user_namespaces(&self) -> Result<(), &str> {
        self.user_namespaces
            .as_ref()
            .map(|_| ())
            .map_err(String::as_str)
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.pods_dir.join(id)
    }

    /// The host's cgroups, as crid's cgroup driver manages them.
    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// Builds the pod; on failure undoes every step taken and returns the error.
    pub async fn run(&self, spec: &PodSpec) -> Result<SandboxState, PodError> {
        // Fail before touching anything when the pod cannot get a network.
        let network = match spec.network {
            NamespaceMode::Pod => Some(self.load_network().await?),
            _ => None,
        };
        let pod_dir = self.pod_dir(&spec.id);
        tokio::fs::create_dir(&pod_dir)
            .await
            .map_err(PodError::io("cannot create", &pod_dir))?;
        let mut state = SandboxState::default();
        match self.build(spec, network.as_ref(), &mut state).await {
            Ok(()) => Ok(state),
            Err(error) => {
                tracing::warn!(pod_id = %spec.id, %error, "pod start failed; rolling back");
                if let Err(rollback) = self.remove(spec, &state, false).await {
                    tracing::error!(pod_id = %spec.id, error = %rollback, "rollback incomplete");
                }
                Err(error)
            }
        }
    }

    async fn build(
        &self,
        spec: &PodSpec,
        network: Option<&cni::NetworkConfigList>,
        state: &mut SandboxState,
    ) -> Result<(), PodError> {
        let mut progress = Progress::new("pod", &spec.id);
        let pod_dir = self.pod_dir(&spec.id);
        let (dns, host_resolv_conf) = (spec.dns.clone(), self.host_resolv_conf.clone());
        let hostname = spec.hostname.clone();
        let shm = (spec.ipc == NamespaceMode::Pod).then_some(spec.shm_size_bytes);
        let placement = self
            .cgroups
            .placement(&spec.id, spec.cgroup_parent.as_deref())?;
        state.cgroup = Some(placement.clone());
        let (cgroups, sandbox) = (self.cgroups.clone(), placement.clone());
        let cgroup_procs = spawn_blocking(move || -> Result<_, PodError> {
            files::write_file(&pod_dir, files::HOSTNAME_FILE, &format!("{hostname}\n"))?;
            let resolv = files::resolv_conf(dns.as_ref(), &host_resolv_conf)?;
            files::write_file(&pod_dir, files::RESOLV_FILE, &resolv)?;
            files::write_file(&pod_dir, files::HOSTS_FILE, &files::hosts(&hostname, &[]))?;
            if let Some(size) = shm {
                mounts::mount_shm(&pod_dir, size)?;
            }
            Ok(cgroups.prepare_sandbox(&sandbox)?)
        })
        .await??;
        progress.step("pod.prepared");

        let namespaces = NewNamespaces {
            net: spec.network == NamespaceMode::Pod,
            ipc: spec.ipc == NamespaceMode::Pod,
            // A host-network pod keeps the node's hostname, as kubelet expects.
            uts: spec.network == NamespaceMode::Pod,
            pid: spec.pid == NamespaceMode::Pod,
        };
        let config = MonitorConfig {
            pod_id: spec.id.clone(),
            namespaces,
            user_namespace: spec.user_namespace,
            hostname: namespaces.uts.then(|| spec.hostname.clone()),
            sysctls: spec
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cgroup_procs,
            protocol: proto::monitor::PROTOCOL_VERSION,
        };
        let started = MonitorClient::new(&self.pod_dir(&spec.id))
            .start(&self.monitor_binary, &config)
            .await?;
        state.monitor_pid = started.monitor_pid;
        state.pause_pid = started.pause_pid;
        progress.step("pod.monitor_started");
        self.cgroups
            .adopt_sandbox(&placement, &[started.monitor_pid, started.pause_pid])
            .await?;

        let pod_dir = self.pod_dir(&spec.id);
        let pinned_netns = spawn_blocking(move || -> Result<_, PodError> {
            let mut netns = None;
            for (wanted, name) in [
                (namespaces.net, "net"),
                (namespaces.ipc, "ipc"),
                (namespaces.uts, "uts"),
            ] {
                if wanted {
                    let pinned = mounts::pin_namespace(&pod_dir, started.pause_pid, name)?;
                    if name == "net" {
                        netns = Some(pinned);
                    }
                }
            }
            Ok(netns)
        })
        .await??;
        state.netns = pinned_netns;
        progress.step("pod.namespaces_pinned");

        if let (Some(network), Some(netns)) = (network, state.netns.clone()) {
            let started = std::time::Instant::now();
            let added = self
                .network
                .runner
                .add(network, &attachment(spec, &netns))
                .await;
            metrics::own::observe_cni(
                metrics::own::CniOperation::Add,
                metrics::own::Outcome::of(&added),
                started.elapsed().as_secs_f64(),
            );
            let result = added?;
            state.ips = result.pod_ips().iter().map(ToString::to_string).collect();
            progress.step("pod.network_added");
            let (pod_dir, hostname, ips) = (
                self.pod_dir(&spec.id),
                spec.hostname.clone(),
                state.ips.clone(),
            );
            spawn_blocking(move || {
                files::write_file(&pod_dir, files::HOSTS_FILE, &files::hosts(&hostname, &ips))
            })
            .await??;
        }
        Ok(())
    }

    async fn load_network(&self) -> Result<cni::NetworkConfigList, PodError> {
        let (conf_dir, bin_dirs) = (
            self.network.conf_dir.clone(),
            self.network.runner.bin_dirs().to_vec(),
        );
        spawn_blocking(move || Ok(cni::load_network(&conf_dir, &bin_dirs)?)).await?
    }

    /// Stops the pod: network detached, pause and monitor gone, namespaces
    /// unpinned, its cgroup removed. Its state dir stays for status. A CNI
    /// DEL failure stops here (nothing else undone) so the call can be retried.
    pub async fn stop(&self, spec: &PodSpec, state: &SandboxState) -> Result<(), PodError> {
        self.teardown(spec, state, Teardown::KeepOnNetworkError)
            .await
    }

    /// Stops the pod whatever fails (logging it) and deletes its state dir.
    /// `stopped`: a [`stop`](Self::stop) of it succeeded, so nothing but the
    /// state dir is left (kubelet stops every pod before it removes it; a
    /// second CNI DEL would only run every plugin again on a gone netns).
    pub async fn remove(
        &self,
        spec: &PodSpec,
        state: &SandboxState,
        stopped: bool,
    ) -> Result<(), PodError> {
        if !stopped {
            self.teardown(spec, state, Teardown::Force).await?;
        }
        let pod_dir = self.pod_dir(&spec.id);
        spawn_blocking(move || {
            // Never delete through a mount that is still there.
            if let Some(mount) = mount_under(&pod_dir) {
                return Err(PodError::Unsupported(format!(
                    "{} is still mounted; not removing",
                    mount.display()
                )));
            }
            match std::fs::remove_dir_all(&pod_dir) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(PodError::io("cannot remove", &pod_dir)(error))
                }
                _ => Ok(()),
            }
        })
        .await?
    }

    async fn teardown(
        &self,
        spec: &PodSpec,
        state: &SandboxState,
        mode: Teardown,
    ) -> Result<(), PodError> {
        let pod_dir = self.pod_dir(&spec.id);
        if spec.network == NamespaceMode::Pod {
            let netns = mounts::namespace_path(&pod_dir, "net");
            let network = self.load_network().await.ok();
            let started = std::time::Instant::now();
            let deleted = self
                .network
                .runner
                .del(network.as_ref(), &attachment(spec, &netns))
                .await;
            metrics::own::observe_cni(
                metrics::own::CniOperation::Del,
                metrics::own::Outcome::of(&deleted),
                started.elapsed().as_secs_f64(),
            );
            match deleted {
                Ok(outcome) => {
                    for skipped in outcome.skipped {
                        tracing::warn!(pod_id = %spec.id, ?skipped, "CNI DEL partly skipped");
                    }
                }
                Err(error) if mode == Teardown::Force => {
                    tracing::warn!(pod_id = %spec.id, %error, "CNI DEL failed; removing the pod anyway");
                    // Giving up: nothing of this pod may stay, its cache entry neither.
                    if let Err(error) = self.network.runner.forget(&spec.id, POD_IFNAME).await {
                        tracing::warn!(pod_id = %spec.id, %error, "cannot drop the CNI cache entry");
                    }
                }
                Err(error) => return Err(error.into()),
            }
            fault::point("pod.teardown.network_removed");
        }

        let monitor = MonitorClient::new(&pod_dir);
        if let Err(error) = monitor.request(&MonitorRequest::Shutdown).await {
            // Gone already (crash, reboot) or stuck: the cgroup kill below ends it.
            tracing::debug!(pod_id = %spec.id, %error, "monitor did not take Shutdown");
        }
        fault::point("pod.teardown.monitor_shut_down");
        // A crash before the placement was recorded: it follows from the spec.
        let placement = match &state.cgroup {
            Some(placement) => Some(placement.clone()),
            None => self
                .cgroups
                .placement(&spec.id, spec.cgroup_parent.as_deref())
                .ok(),
        };
        // The mounts go also when the cgroup cannot (systemd unreachable):
        // the next teardown then has only the cgroup left to retry.
        let removed = match placement {
            Some(placement) => self.cgroups.remove_sandbox(&placement).await,
            None => Ok(()),
        };
        let unmounted = spawn_blocking(move || mounts::unmount_all(&pod_dir)).await;
        removed?;
        unmounted?
    }
}

/// The pod's CNI attachment, with the args and capabilities kubelet's
/// runtimes pass (containerd's names).
fn attachment(spec: &PodSpec, netns: &Path) -> cni::Attachment {
    let mut capability_args = Map::new();
    let port_mappings: Vec<Value> = spec
        .port_mappings
        .iter()
        .filter(|mapping| mapping.host_port > 0)
        .map(|mapping| {
            json!({
                "hostPort": mapping.host_port,
                "containerPort": mapping.container_port,
                "protocol": mapping.protocol.to_lowercase(),
                "hostIP": mapping.host_ip,
            })
        })
        .collect();
    if !port_mappings.is_empty() {
        capability_args.insert("portMappings".into(), Value::Array(port_mappings));
    }
    capability_args.insert(
        "io.kubernetes.cri.pod-annotations".into(),
        json!(spec.annotations),
    );
    cni::Attachment {
        container_id: spec.id.clone(),
        netns: netns.to_path_buf(),
        ifname: POD_IFNAME.into(),
        args: vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), spec.namespace.clone()),
            ("K8S_POD_NAME".into(), spec.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), spec.id.clone()),
            ("K8S_POD_UID".into(), spec.uid.clone()),
        ],
        capability_args,
    }
}

/// A mount point at or under `dir`, if any.
fn mount_under(dir: &Path) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .find(|mount_point| mount_point.starts_with(dir))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_dir_others_cannot_search_keeps_pods_out_of_user_namespaces() {
        let top = tempfile::tempdir().expect("tempdir");
        let pods = top.path().join("state/pods");
        std::fs::create_dir_all(&pods).expect("mkdir");
        let chmod = |mode| {
            std::fs::set_permissions(
                top.path().join("state"),
                std::fs::Permissions::from_mode(mode),
            )
            .expect("chmod")
        };
        chmod(0o755);
        assert_eq!(searchable_by_others(&pods), Ok(()));
        chmod(0o700);
        let reason = searchable_by_others(&pods).expect_err("0700 on the way");
        assert!(reason.contains("state (mode 0700)"), "{reason}");
    }
}
