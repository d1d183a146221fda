//! CreateContainer racing RemovePodSandbox on the same pod: whichever
//! wins, nothing of the pod is left behind — no container or pod in the
//! lists, no record after a restart, no process, mount, cgroup or file.

mod common;

use std::time::Duration;

use common::*;
use proto::cri;
use tonic::Code;

const ROUNDS: u64 = 20;

#[tokio::test]
async fn create_container_racing_remove_pod_sandbox_leaves_no_orphan() {
    let mut world = World::new().await;
    let (mut created, mut refused) = (0, 0);
    let mut removed_pods = Vec::new();
    for round in 0..ROUNDS {
        let name = format!("race{round}");
        let pod = world.pod(&name).await;
        // Connected before the race, so neither side pays for a connect.
        let (mut creator, mut remover) = (world.rt().await, world.rt().await);
        // One side starts a little later in most rounds, so the two meet
        // at different steps; which one wins is not asserted.
        let (create_after, remove_after) = match round % 2 {
            0 => (0, round / 2 % 5 * 3),
            _ => (round / 2 % 5 * 2, 0),
        };
        let create = async {
            tokio::time::sleep(Duration::from_millis(create_after)).await;
            creator
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(world.container_config("racer", &["sleep", "1000"])),
                    sandbox_config: Some(world.pod_config(&name, cri::NamespaceMode::Container)),
                })
                .await
        };
        let remove = async {
            tokio::time::sleep(Duration::from_millis(remove_after)).await;
            remover
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
        };
        let (create, remove) = tokio::join!(create, remove);
        remove.unwrap_or_else(|e| panic!("round {round}: remove pod: {e:?}\n{}", world.crid.log()));
        let container = match create {
            Ok(response) => {
                created += 1;
                Some(response.into_inner().container_id)
            }
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::NotFound | Code::FailedPrecondition),
                    "round {round}: CreateContainer failed otherwise: {status:?}"
                );
                refused += 1;
                None
            }
        };
        assert_nothing_left(&world, &pod, container.as_deref()).await;
        removed_pods.push((pod, container));
    }
    eprintln!("{ROUNDS} races: {created} creates won, {refused} were refused");

    // Nothing comes back from the metadata store either.
    world.crid.stop().await;
    world.crid = world.env.start().await;
    for (pod, container) in &removed_pods {
        assert_nothing_left(&world, pod, container.as_deref()).await;
    }
    world.finish(&[]).await;
}

/// Neither the API nor the node shows anything of `pod` or `container`.
async fn assert_nothing_left(world: &World, pod: &str, container: Option<&str>) {
    let mut rt = world.rt().await;
    let containers = world
        .list(Some(cri::ContainerFilter {
            pod_sandbox_id: pod.to_string(),
            ..Default::default()
        }))
        .await;
    assert!(
        containers.is_empty(),
        "pod {pod}: containers left: {containers:?}"
    );
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: pod.to_string(),
                ..Default::default()
            }),
        })
        .await
        .expect("list pods")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "pod {pod} still listed: {pods:?}");
    let status = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: false,
        })
        .await
        .expect_err("the pod is gone");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let mut ids = vec![pod.to_string()];
    if let Some(container) = container {
        let status = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: container.to_string(),
                verbose: false,
            })
            .await
            .expect_err("the container is gone");
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        ids.push(container.to_string());
    }

    // The pod's monitor and the container's held init name the pod's dir.
    let processes = e2e::processes_mentioning(pod);
    assert!(
        processes.is_empty(),
        "processes of pod {pod} left: {:?}",
        processes
            .iter()
            .map(|&pid| e2e::process_command_line(pid))
            .collect::<Vec<_>>()
    );
    assert!(
        pod_cgroups(pod).is_empty(),
        "cgroups left: {:?}",
        pod_cgroups(pod)
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for id in &ids {
        let mounts: Vec<&str> = mountinfo
            .lines()
            .filter(|l| l.contains(id.as_str()))
            .collect();
        assert!(mounts.is_empty(), "mounts of {id} left: {mounts:?}");
    }
    let state = world.env.state();
    let mut dirs = vec![state.join("pods").join(pod)];
    if let Some(container) = container {
        dirs.push(state.join("containers").join(container));
        dirs.push(world.env.root().join("containers").join(container));
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}
