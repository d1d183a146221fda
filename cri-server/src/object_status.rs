//! The CRI status messages of a pod and a container record: what
//! PodSandboxStatus and ContainerStatus answer and what container events
//! carry, built in one place for both services.

use proto::cri::{
    ContainerResources, ContainerStatus, ContainerUser, ImageSpec, LinuxContainerUser,
    LinuxPodSandboxStatus, Mount, Namespace, PodIp, PodSandboxNetworkStatus, PodSandboxStatus,
};

use crate::container_config;
use crate::containers::{self, Observed};
use crate::objects::{ContainerRecord, PodRecord, sandbox_state};

pub fn sandbox_status(record: &PodRecord, ready: bool) -> PodSandboxStatus {
    let mut ips = record.sandbox.ips.iter();
    let namespace_options = record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    PodSandboxStatus {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: sandbox_state(ready),
        created_at: record.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: namespace_options,
            }),
        }),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

pub fn container_status_of(record: &ContainerRecord, observed: &Observed) -> ContainerStatus {
    let user = record.user.as_ref().map(|u| ContainerUser {
        linux: Some(LinuxContainerUser {
            uid: i64::from(u.uid),
            gid: i64::from(u.gid),
            supplemental_groups: u.additional_gids.iter().map(|&g| i64::from(g)).collect(),
        }),
    });
    ContainerStatus {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: observed.state.into(),
        created_at: record.created_at,
        started_at: observed.started_at,
        finished_at: observed.finished_at,
        exit_code: observed.exit_code,
        image: Some(ImageSpec {
            image: record.image_ref.clone(),
            ..Default::default()
        }),
        image_ref: record
            .image_digest
            .clone()
            .unwrap_or_else(|| record.image_id.clone()),
        image_id: record.image_id.clone(),
        reason: observed.reason.clone(),
        message: observed.message.clone(),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        mounts: mounts_status(record),
        log_path: record
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: Some(ContainerResources {
            linux: Some(container_config::to_cri_resources(&record.spec.resources)),
            windows: None,
        }),
        user,
        stop_signal: containers::stop_signal(record).into(),
    }
}

/// The config's mounts, each image volume's with the id of the image it
/// mounts (CRI `ImageSpec.image_ref`: what PullImage returned).
fn mounts_status(record: &ContainerRecord) -> Vec<Mount> {
    let mut mounts = record.config.mounts.clone();
    for volume in &record.image_volumes {
        if let Some(image) = mounts
            .get_mut(volume.mount)
            .and_then(|mount| mount.image.as_mut())
        {
            image.image_ref = volume.image_id.clone();
        }
    }
    mounts
}
