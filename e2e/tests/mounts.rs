//! Mount propagation as kubelet asks for it (critest's "mount with 'rshared'
//! should support propagation from host to container and vice versa"): a
//! host directory made a shared mount, given to a privileged container as a
//! BIDIRECTIONAL mount, sees what the host mounts under it, and the host
//! sees what the container mounts; HOST_TO_CONTAINER sees the host's only.
//! Image volumes (CRI `Mount.image`): an image's content, read-only.

mod common;

use std::path::{Path, PathBuf};

use common::{World, assert_refused_naming};
use e2e::registry::Layer;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use proto::cri;

/// A host directory bind-mounted onto itself and made rshared, as critest
/// prepares it (or rprivate); unmounted (with whatever got mounted below)
/// on drop.
struct SharedHostDir {
    dir: tempfile::TempDir,
    source: PathBuf,
}

impl SharedHostDir {
    fn new() -> SharedHostDir {
        SharedHostDir::with_propagation(MsFlags::MS_SHARED)
    }

    fn with_propagation(propagation: MsFlags) -> SharedHostDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = dir.path().join("mnt");
        std::fs::create_dir_all(source.join("from-host")).expect("mkdir");
        std::fs::create_dir_all(source.join("from-container")).expect("mkdir");
        mount(
            Some(&source),
            &source,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("bind the host dir onto itself");
        mount(
            None::<&str>,
            &source,
            None::<&str>,
            propagation | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("set its propagation");
        SharedHostDir { dir, source }
    }
}

impl Drop for SharedHostDir {
    fn drop(&mut self) {
        for below in ["from-host", "from-container"] {
            let _ = umount2(&self.source.join(below), MntFlags::MNT_DETACH);
        }
        let _ = umount2(&self.source, MntFlags::MNT_DETACH);
        let _ = self.dir.path();
    }
}

/// How many mounts the host's mount table has at `path`.
fn host_mounts_at(path: &Path) -> usize {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let wanted = path.display().to_string();
    table
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
        .count()
}

fn privileged(
    mut config: cri::ContainerConfig,
    host: &Path,
    propagation: cri::MountPropagation,
) -> cri::ContainerConfig {
    config.mounts = vec![cri::Mount {
        container_path: "/shared".into(),
        host_path: host.display().to_string(),
        propagation: propagation.into(),
        ..Default::default()
    }];
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// Creates and starts `config` in the privileged `pod`.
async fn run(
    world: &World,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    let mut rt = world.rt().await;
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    world.start(&id).await.expect("start");
    id
}

/// How many mounts container `id` has at `path` (propagation happens
/// within the mount(2) that makes it, so no waiting is needed).
async fn container_mounts_at(world: &World, id: &str, path: &str) -> String {
    world
        .sh(
            id,
            &format!("grep -c ' {path} ' /proc/self/mountinfo || true"),
        )
        .await
}

#[tokio::test]
async fn bidirectional_mounts_propagate_both_ways_and_host_to_container_one_way() {
    let world = World::new().await;
    let host = SharedHostDir::new();
    let mut pod_config = world.pod_config("propagation", cri::NamespaceMode::Container);
    if let Some(context) = pod_config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
    {
        context.privileged = true;
    }
    let pod = world
        .rt()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run privileged pod")
        .into_inner()
        .pod_sandbox_id;
    let both = run(
        &world,
        &pod,
        &pod_config,
        privileged(
            world.container_config("both", &["sleep", "1000"]),
            &host.source,
            cri::MountPropagation::PropagationBidirectional,
        ),
    )
    .await;
    let one_way = run(
        &world,
        &pod,
        &pod_config,
        privileged(
            world.container_config("one-way", &["sleep", "1000"]),
            &host.source,
            cri::MountPropagation::PropagationHostToContainer,
        ),
    )
    .await;

    // Host to container: both see it.
    mount(
        Some("tmpfs"),
        &host.source.join("from-host"),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("host mounts a tmpfs");
    for id in [&both, &one_way] {
        assert_eq!(
            container_mounts_at(&world, id, "/shared/from-host").await,
            "1"
        );
    }

    // A host path on a private mount cannot propagate either way: asking
    // for it is refused, naming the field, with nothing left.
    let private = SharedHostDir::with_propagation(MsFlags::MS_PRIVATE);
    for propagation in [
        cri::MountPropagation::PropagationBidirectional,
        cri::MountPropagation::PropagationHostToContainer,
    ] {
        let config = privileged(
            world.container_config("private", &["sleep", "1000"]),
            &private.source,
            propagation,
        );
        let error = world
            .rt()
            .await
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .expect_err("a private host path");
        assert_refused_naming(
            &error,
            tonic::Code::FailedPrecondition,
            "config.mounts[0].propagation",
        );
    }
    drop(private);

    // Container to host: the bidirectional mount carries it back, and the
    // HOST_TO_CONTAINER one then sees it through the host.
    world
        .sh(&both, "mount -t tmpfs tmpfs /shared/from-container")
        .await;
    assert_eq!(host_mounts_at(&host.source.join("from-container")), 1);
    assert_eq!(
        container_mounts_at(&world, &one_way, "/shared/from-container").await,
        "1"
    );

    // What the HOST_TO_CONTAINER container mounts stays in it.
    world
        .sh(&one_way, "mount -t tmpfs tmpfs /shared/from-host")
        .await;
    assert_eq!(
        container_mounts_at(&world, &one_way, "/shared/from-host").await,
        "2"
    );
    assert_eq!(host_mounts_at(&host.source.join("from-host")), 1);
    assert_eq!(
        container_mounts_at(&world, &both, "/shared/from-host").await,
        "1"
    );

    world.finish(&[&pod]).await;
    drop(host);
}

fn image_volume(container_path: &str, image: &str, sub_path: &str) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        image: Some(common::image_spec(image)),
        readonly: true,
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn image_volumes_mount_an_images_content_read_only_and_leave_nothing() {
    let world = World::new().await;
    let mut data = Layer::new();
    data.dir("data/")
        .file("data/hello", 0o644, b"from the image\n")
        // Resolved as if the image were `/`: it cannot lead to the host.
        .symlink("data/up", "../../../../../..");
    let volume_image = world.push_and_pull("e2e/vol", vec![data.gzip()]).await;
    let volume_id = world
        .crid
        .images()
        .await
        .expect("image client")
        .image_status(cri::ImageStatusRequest {
            image: Some(common::image_spec(&volume_image)),
            verbose: false,
        })
        .await
        .expect("image status")
        .into_inner()
        .image
        .expect("the volume's image is pulled")
        .id;
    let pod = world.pod("volumes").await;

    // Refusals name the field and leave nothing behind.
    let mut writable = world.container_config("writable", &["sleep", "1000"]);
    writable.mounts = vec![cri::Mount {
        readonly: false,
        ..image_volume("/mnt/image", &volume_image, "")
    }];
    let refused = world
        .create(&pod, "writable", writable)
        .await
        .expect_err("read-write");
    assert_refused_naming(
        &refused,
        tonic::Code::InvalidArgument,
        "config.mounts[0].readonly",
    );
    let mut missing = world.container_config("missing", &["sleep", "1000"]);
    missing.mounts = vec![image_volume("/mnt/image", &volume_image, "data/nope")];
    let refused = world
        .create(&pod, "missing", missing)
        .await
        .expect_err("no such dir");
    assert!(
        refused
            .message()
            .contains("config.mounts[0].image_sub_path"),
        "{refused:?}"
    );
    let mut unpulled = world.container_config("unpulled", &["sleep", "1000"]);
    unpulled.mounts = vec![image_volume("/mnt/image", "127.0.0.1:1/none:1", "")];
    let refused = world
        .create(&pod, "unpulled", unpulled)
        .await
        .expect_err("not pulled");
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");

    let mut config = world.container_config("reader", &["sleep", "1000"]);
    config.mounts = vec![
        image_volume("/mnt/image", &volume_image, ""),
        image_volume("/mnt/data", &volume_image, "data"),
        image_volume("/mnt/up", &volume_image, "data/up"),
    ];
    let id = world.run_config(&pod, config).await;
    assert_eq!(
        world.sh(&id, "cat /mnt/image/data/hello").await,
        "from the image"
    );
    assert_eq!(world.sh(&id, "cat /mnt/data/hello").await, "from the image");
    // The image's own binaries run from it (not noexec).
    assert_eq!(
        world.sh(&id, "/mnt/image/bin/busybox echo ran").await,
        "ran"
    );
    // The escaping link resolved to the image's root, not the host's.
    assert_eq!(
        world.sh(&id, "cat /mnt/up/data/hello").await,
        "from the image"
    );
    let write = world
        .exec(&id, &["touch", "/mnt/image/data/new"], 10)
        .await
        .expect("exec");
    assert_ne!(write.exit_code, 0, "an image volume took a write");

    let (status, _) = world.status(&id).await;
    let reported: Vec<(String, String)> = status
        .mounts
        .iter()
        .map(|m| {
            let image = m.image.clone().unwrap_or_default();
            (m.container_path.clone(), image.image_ref)
        })
        .collect();
    assert_eq!(
        reported,
        vec![
            ("/mnt/image".to_owned(), volume_id.clone()),
            ("/mnt/data".to_owned(), volume_id.clone()),
            ("/mnt/up".to_owned(), volume_id.clone()),
        ]
    );

    world.finish(&[&pod]).await;
}
