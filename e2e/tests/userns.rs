//! User namespaces (`hostUsers: false`, CRI `userns_options`), as kubelet
//! and critest send them to crid: what is refused and how, and that the
//! node's user namespace (NODE) stays the default.
//!
//! A pod of its own user namespace (POD) runs pause and every container
//! of the pod in one new user namespace with kubelet's mappings; the image's
//! layers are idmapped through it, so root inside owns the image's files
//! and what it writes lands in the pod's range on the host.

mod common;

use common::{World, assert_refused_naming};
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
    assert_refused_naming(
        &error,
        tonic::Code::InvalidArgument,
        &format!("{FIELD}.mode"),
    );
    assert!(error.message().contains("network"), "{error:?}");

    // Nor can such a pod be privileged (its containers' host devices
    // cannot be made in a user namespace).
    let mut privileged = with_userns(&world, "privileged", pod_mode(kubelets(), kubelets()));
    if let Some(security) = privileged
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
    {
        security.privileged = true;
    }
    let error = run_pod(&world, privileged).await.expect_err("privileged");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error
            .message()
            .contains("config.linux.security_context.privileged"),
        "{error:?}"
    );

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

/// Whether the kernel documents idmapped overlayfs layers on the
/// filesystem of `dir`: overlayfs over idmapped layers since 5.19; ext4,
/// xfs and btrfs take idmapped mounts since before that, tmpfs since 6.3.
fn node_takes_idmapped_layers(dir: &std::path::Path) -> bool {
    use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let kernel = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let filesystem = nix::sys::statfs::statfs(dir)
        .expect("statfs")
        .filesystem_type();
    let since = if [EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, BTRFS_SUPER_MAGIC].contains(&filesystem) {
        (5, 19)
    } else if filesystem == TMPFS_MAGIC {
        (6, 3)
    } else {
        return false;
    };
    kernel >= since
}

/// The host's ids (real, effective, saved, fs) a process runs as.
fn host_ids(pid: i64, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    e2e::status_field(&status, key)
        .split_whitespace()
        .map(|id| id.parse().expect("an id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_user_namespace_makes_root_inside_an_unprivileged_id_outside_and_files_follow() {
    let world = World::new().await;
    let status = world
        .rt()
        .await
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner();
    let features = status.runtime_handlers[0].features.expect("features");
    assert!(
        !status
            .features
            .expect("runtime features")
            .user_namespaces_host_network
    );
    // kubelet asks for a user namespace only with the pod's own network.
    world.env.bridge_network("cridus0", "10.251.40.0/24");
    let (uids, gids) = (range(0, 300_000, 65_536), range(0, 400_000, 65_536));
    let mut config = with_userns(&world, "mapped", pod_mode(vec![uids], vec![gids]));
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .and_then(|security| security.namespace_options.as_mut())
    {
        options.network = cri::NamespaceMode::Pod.into();
    }

    // Status must say what the kernel documents for this node (the host's
    // ext4 on 6.18 can; the cgroup v2 lane's tmpfs root on 6.1 cannot).
    if !node_takes_idmapped_layers(&world.env.root()) {
        assert!(!features.user_namespaces, "{status:?}");
        let error = run_pod(&world, config).await.expect_err("POD userns");
        assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
        assert!(error.message().contains(FIELD), "{error:?}");
        assert!(
            world
                .crid
                .log()
                .contains("idmapped overlayfs layers do not work here"),
            "crid's log does not say why"
        );
        world.finish(&[]).await;
        return;
    }
    assert!(features.user_namespaces, "{status:?}");
    let pod = run_pod(&world, config).await.expect("POD userns pod");
    let (_, pod_info) = world.pod_status(&pod).await;
    let pause = pod_info["pid"].as_i64().expect("pause pid");
    assert_eq!(host_ids(pause, "Uid")[0], 300_000 + 65_535, "pause");

    // A host directory as kubelet gives a user-namespaced pod's volumes
    // (mapped as the pod, so idmapped), with a file only the host's root
    // may read; and an image volume, mapped the same way.
    let volume = tempfile::tempdir().expect("volume dir");
    std::fs::write(volume.path().join("secret"), "for root\n").expect("write");
    std::fs::set_permissions(
        volume.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let mut config = world.container_config("mapped", &["sleep", "1000"]);
    config.mounts = vec![
        cri::Mount {
            container_path: "/volume".into(),
            host_path: volume.path().display().to_string(),
            uid_mappings: vec![uids],
            gid_mappings: vec![gids],
            ..Default::default()
        },
        cri::Mount {
            container_path: "/image".into(),
            image: Some(common::image_spec(&world.image)),
            readonly: true,
            uid_mappings: vec![uids],
            gid_mappings: vec![gids],
            ..Default::default()
        },
    ];
    // Mappings other than the pod's cannot be made: refused, naming them.
    let mut other = config.clone();
    other.mounts[0].gid_mappings = vec![range(0, 500_000, 65_536)];
    let error = world
        .create(&pod, "other-mapping", other)
        .await
        .expect_err("a mapping not the pod's");
    assert_refused_naming(
        &error,
        tonic::Code::InvalidArgument,
        "config.mounts[0].gidMappings",
    );

    let container = world.run_config(&pod, config).await;
    let words = |text: &str| {
        text.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(&world.sh(&container, "cat /proc/self/uid_map").await),
        ["0", "300000", "65536"]
    );
    assert_eq!(
        words(&world.sh(&container, "cat /proc/self/gid_map").await),
        ["0", "400000", "65536"]
    );
    // Root inside, an unprivileged id outside.
    assert_eq!(world.sh(&container, "id -u; id -g").await, "0\n0");
    let (_, info) = world.status(&container).await;
    let init = info["pid"].as_i64().expect("init pid");
    assert_eq!(host_ids(init, "Uid"), [300_000; 4]);
    assert_eq!(host_ids(init, "Gid"), [400_000; 4]);

    // The image's files are root's inside (the layers are idmapped, not
    // chowned: on the host they stay the host root's)...
    assert_eq!(
        world
            .sh(&container, "stat -c %u:%g /bin/busybox /etc")
            .await,
        "0:0\n0:0"
    );
    // ...so root inside may write where the image lets root write, and
    // what it writes belongs to the pod's range on the host.
    world
        .sh(
            &container,
            "echo mapped > /etc/written && touch /tmp/app && chown 1000:1000 /tmp/app",
        )
        .await;
    let upper = world
        .env
        .root()
        .join("containers")
        .join(&container)
        .join("upper");
    let owner = |path: &str| {
        let meta = std::fs::metadata(upper.join(path)).expect(path);
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta),
        )
    };
    assert_eq!(owner("etc/written"), (300_000, 400_000));
    assert_eq!(owner("tmp/app"), (301_000, 401_000));
    // Copied up, /etc keeps its owner: root inside, the range's root outside.
    assert_eq!(owner("etc"), (300_000, 400_000));

    // Through the idmapped volume the host's root is the container's: root
    // inside reads the 0600 file, and what it writes there is the host
    // root's on the host, as kubelet's volumes are.
    assert_eq!(
        world
            .sh(
                &container,
                "stat -c %u:%g /volume/secret; cat /volume/secret"
            )
            .await,
        "0:0\nfor root"
    );
    world.sh(&container, "echo back > /volume/written").await;
    let meta = std::fs::metadata(volume.path().join("written")).expect("written");
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        ),
        (0, 0)
    );
    assert_eq!(
        world
            .sh(&container, "stat -c %u:%g /image/bin/busybox")
            .await,
        "0:0"
    );
    world.finish(&[&pod]).await;
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
