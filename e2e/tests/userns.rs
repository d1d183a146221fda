//! User namespaces (`hostUsers: false`, CRI `userns_options`), as kubelet
//! and critest send them to crid: what is refused and how, and that the
//! node's user namespace (NODE) stays the default.
//!
//! A pod of its own user namespace (POD) is validated but not run yet:
//! the containers' files are not idmapped, so `Status` says
//! `user_namespaces: false` (kubelet then never asks) and a valid POD
//! request gets FailedPrecondition.

mod common;

use common::World;
use proto::cri;

const FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

fn range(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

fn with_userns(world: &World, name: &str, userns: cri::UserNamespace) -> cri::PodSandboxConfig {
    let mut config = world.pod_config(name, cri::NamespaceMode::Pod);
    let options = config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .and_then(|security| security.namespace_options.as_mut())
        .expect("namespace options");
    options.userns_options = Some(userns);
    config
}

fn pod_mode(uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::UserNamespace {
    cri::UserNamespace {
        mode: cri::NamespaceMode::Pod.into(),
        uids,
        gids,
    }
}

async fn run_pod(world: &World, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    world
        .rt()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|response| response.into_inner().pod_sandbox_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_user_namespace_requests_are_refused_naming_the_field_and_leave_nothing() {
    let world = World::new().await;
    let kubelets = || vec![range(0, 65536, 65536)];
    let cases: Vec<(&str, cri::UserNamespace, String, tonic::Code)> = vec![
        (
            "container-mode",
            cri::UserNamespace {
                mode: cri::NamespaceMode::Container.into(),
                ..Default::default()
            },
            format!("{FIELD}.mode"),
            tonic::Code::InvalidArgument,
        ),
        (
            "target-mode",
            cri::UserNamespace {
                mode: cri::NamespaceMode::Target.into(),
                ..Default::default()
            },
            format!("{FIELD}.mode"),
            tonic::Code::InvalidArgument,
        ),
        // critest: two ranges (overlapping ones), and a range without root.
        (
            "two-ranges",
            pod_mode(
                vec![range(0, 1000, 100000), range(0, 2000, 100000)],
                vec![range(0, 1000, 100000), range(0, 2000, 100000)],
            ),
            format!("{FIELD}.uids"),
            tonic::Code::InvalidArgument,
        ),
        (
            "no-root",
            pod_mode(vec![range(1, 1000, 100000)], vec![range(1, 1000, 100000)]),
            format!("{FIELD}.uids[0].container_id"),
            tonic::Code::InvalidArgument,
        ),
        (
            "no-gids",
            pod_mode(kubelets(), vec![]),
            format!("{FIELD}.gids"),
            tonic::Code::InvalidArgument,
        ),
        (
            "empty-range",
            pod_mode(kubelets(), vec![range(0, 65536, 0)]),
            format!("{FIELD}.gids[0].length"),
            tonic::Code::InvalidArgument,
        ),
        (
            "beyond-u32",
            pod_mode(vec![range(0, u32::MAX - 10, 65536)], kubelets()),
            format!("{FIELD}.uids[0].host_id"),
            tonic::Code::InvalidArgument,
        ),
        (
            "node-with-mappings",
            cri::UserNamespace {
                mode: cri::NamespaceMode::Node.into(),
                uids: kubelets(),
                gids: kubelets(),
            },
            format!("{FIELD}.mode"),
            tonic::Code::InvalidArgument,
        ),
    ];
    for (name, userns, field, code) in cases {
        let error = run_pod(&world, with_userns(&world, name, userns))
            .await
            .expect_err(name);
        assert_eq!(error.code(), code, "{name}: {error:?}");
        assert!(error.message().contains(&field), "{name}: {error:?}");
    }

    // A pod user namespace with the node's network: refused (kubelet
    // forbids hostUsers: false with hostNetwork; crid reports
    // user_namespaces_host_network false).
    let error = run_pod(
        &world,
        with_userns(&world, "host-network", pod_mode(kubelets(), kubelets())),
    )
    .await
    .expect_err("host network");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().contains(&format!("{FIELD}.mode")),
        "{error:?}"
    );
    assert!(error.message().contains("network"), "{error:?}");

    let pods = world
        .rt()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("list pods")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    let pod_dirs = std::fs::read_dir(world.env.state().join("pods"))
        .map(|dirs| dirs.count())
        .unwrap_or(0);
    assert_eq!(pod_dirs, 0, "pod state dirs left");
    world.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_user_namespaces_only_as_far_as_they_work() {
    let world = World::new().await;
    let status = world
        .rt()
        .await
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner();
    let handler = status.runtime_handlers.first().expect("default handler");
    let features = handler.features.expect("handler features");
    // Not built to the end yet (the containers' files are not idmapped).
    assert!(!features.user_namespaces);
    assert!(
        !status
            .features
            .expect("runtime features")
            .user_namespaces_host_network
    );
    // So a valid POD request is refused as not supported, naming the field.
    let mut config = with_userns(
        &world,
        "pod-userns",
        pod_mode(vec![range(0, 65536, 65536)], vec![range(0, 65536, 65536)]),
    );
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .and_then(|security| security.namespace_options.as_mut())
    {
        // Its own network, as kubelet requires for hostUsers: false. The
        // request is refused before CNI would be needed.
        options.network = cri::NamespaceMode::Pod.into();
    }
    let error = run_pod(&world, config).await.expect_err("POD userns");
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains(FIELD), "{error:?}");
    world.finish(&[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_mode_keeps_the_nodes_user_namespace() {
    let world = World::new().await;
    let config = with_userns(
        &world,
        "node-userns",
        cri::UserNamespace {
            mode: cri::NamespaceMode::Node.into(),
            ..Default::default()
        },
    );
    let pod = run_pod(&world, config).await.expect("NODE userns pod");
    let container = world.run(&pod, "node-userns", &["sleep", "60"]).await;
    let inside = world.sh(&container, "cat /proc/self/uid_map").await;
    let host = std::fs::read_to_string("/proc/self/uid_map").expect("host uid_map");
    let words = |text: &str| {
        text.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(words(&inside), words(&host));
    assert_eq!(world.sh(&container, "id -u").await, "0");
    world.finish(&[&pod]).await;
}
