//! The Kubernetes 1.36 level of the CRI: every RPC reaches crid, the ones it
//! does not do yet say so by name; env values as bytes; stop signals; and
//! the optional features Status reports, each used by a test here.

mod common;

use std::time::{Duration, Instant};

use e2e::TestEnv;
use e2e::registry::{Blob, Layer, Schema, busybox_layer};
use proto::cri;
use tonic::Code;

/// What an RPC called with an empty request must answer.
enum Expect {
    /// Not built yet: Unimplemented, naming the RPC.
    NotBuilt,
    /// Built: any answer but Unimplemented (an empty request may be refused).
    Served,
}

/// The code an RPC answered with (OK for success).
fn code<T>(result: Result<T, tonic::Status>) -> (Code, String) {
    match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_string()),
    }
}

#[tokio::test]
async fn every_rpc_of_the_1_36_api_is_routed() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let mut rt = crid.runtime().await.expect("runtime client");
    let mut images = crid.images().await.expect("image client");
    use Expect::*;

    let mut answers = Vec::new();
    macro_rules! call {
        ($client:ident . $method:ident ($request:ident), $rpc:literal, $expect:expr) => {
            answers.push((
                $rpc,
                $expect,
                code($client.$method(cri::$request::default()).await),
            ));
        };
    }
    call!(rt.version(VersionRequest), "Version", Served);
    call!(
        rt.run_pod_sandbox(RunPodSandboxRequest),
        "RunPodSandbox",
        Served
    );
    call!(
        rt.stop_pod_sandbox(StopPodSandboxRequest),
        "StopPodSandbox",
        Served
    );
    call!(
        rt.remove_pod_sandbox(RemovePodSandboxRequest),
        "RemovePodSandbox",
        Served
    );
    call!(
        rt.pod_sandbox_status(PodSandboxStatusRequest),
        "PodSandboxStatus",
        Served
    );
    call!(
        rt.list_pod_sandbox(ListPodSandboxRequest),
        "ListPodSandbox",
        Served
    );
    call!(
        rt.stream_pod_sandboxes(StreamPodSandboxesRequest),
        "StreamPodSandboxes",
        NotBuilt
    );
    call!(
        rt.create_container(CreateContainerRequest),
        "CreateContainer",
        Served
    );
    call!(
        rt.start_container(StartContainerRequest),
        "StartContainer",
        Served
    );
    call!(
        rt.stop_container(StopContainerRequest),
        "StopContainer",
        Served
    );
    call!(
        rt.remove_container(RemoveContainerRequest),
        "RemoveContainer",
        Served
    );
    call!(
        rt.list_containers(ListContainersRequest),
        "ListContainers",
        Served
    );
    call!(
        rt.stream_containers(StreamContainersRequest),
        "StreamContainers",
        NotBuilt
    );
    call!(
        rt.container_status(ContainerStatusRequest),
        "ContainerStatus",
        Served
    );
    call!(
        rt.update_container_resources(UpdateContainerResourcesRequest),
        "UpdateContainerResources",
        Served
    );
    call!(
        rt.reopen_container_log(ReopenContainerLogRequest),
        "ReopenContainerLog",
        Served
    );
    call!(rt.exec_sync(ExecSyncRequest), "ExecSync", Served);
    call!(rt.exec(ExecRequest), "Exec", Served);
    call!(rt.attach(AttachRequest), "Attach", Served);
    call!(rt.port_forward(PortForwardRequest), "PortForward", Served);
    call!(
        rt.container_stats(ContainerStatsRequest),
        "ContainerStats",
        Served
    );
    call!(
        rt.list_container_stats(ListContainerStatsRequest),
        "ListContainerStats",
        Served
    );
    call!(
        rt.stream_container_stats(StreamContainerStatsRequest),
        "StreamContainerStats",
        NotBuilt
    );
    call!(
        rt.pod_sandbox_stats(PodSandboxStatsRequest),
        "PodSandboxStats",
        Served
    );
    call!(
        rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest),
        "ListPodSandboxStats",
        Served
    );
    call!(
        rt.stream_pod_sandbox_stats(StreamPodSandboxStatsRequest),
        "StreamPodSandboxStats",
        NotBuilt
    );
    call!(
        rt.update_runtime_config(UpdateRuntimeConfigRequest),
        "UpdateRuntimeConfig",
        Served
    );
    call!(rt.status(StatusRequest), "Status", Served);
    call!(
        rt.checkpoint_container(CheckpointContainerRequest),
        "CheckpointContainer",
        NotBuilt
    );
    call!(
        rt.get_container_events(GetEventsRequest),
        "GetContainerEvents",
        Served
    );
    call!(
        rt.list_metric_descriptors(ListMetricDescriptorsRequest),
        "ListMetricDescriptors",
        Served
    );
    call!(
        rt.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest),
        "ListPodSandboxMetrics",
        Served
    );
    call!(
        rt.stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest),
        "StreamPodSandboxMetrics",
        NotBuilt
    );
    call!(
        rt.runtime_config(RuntimeConfigRequest),
        "RuntimeConfig",
        Served
    );
    call!(
        rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest),
        "UpdatePodSandboxResources",
        NotBuilt
    );
    call!(images.list_images(ListImagesRequest), "ListImages", Served);
    call!(
        images.stream_images(StreamImagesRequest),
        "StreamImages",
        NotBuilt
    );
    call!(
        images.image_status(ImageStatusRequest),
        "ImageStatus",
        Served
    );
    call!(images.pull_image(PullImageRequest), "PullImage", Served);
    call!(
        images.remove_image(RemoveImageRequest),
        "RemoveImage",
        Served
    );
    call!(
        images.image_fs_info(ImageFsInfoRequest),
        "ImageFsInfo",
        Served
    );
    // 35 RuntimeService and 6 ImageService RPCs at the 1.36 level.
    assert_eq!(answers.len(), 41);

    let mut wrong = Vec::new();
    for (rpc, expect, (code, message)) in &answers {
        let right = match expect {
            NotBuilt => *code == Code::Unimplemented && message.contains(rpc),
            Served => *code != Code::Unimplemented,
        };
        if !right {
            wrong.push(format!("{rpc}: {code:?} {message:?}"));
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
    crid.stop().await;
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

/// The NUL-separated environment in `file`, read by an exec in the
/// container: `/proc/1/environ` is the container's process (each container
/// has its own PID namespace here), `/proc/self/environ` the exec's own.
async fn environ(world: &common::World, id: &str, file: &str) -> Vec<Vec<u8>> {
    let out = world.exec(id, &["cat", file], 10).await.expect("exec");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
        .split(|&b| b == 0)
        .filter(|entry| !entry.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[tokio::test]
async fn env_values_are_bytes_and_reach_the_container_and_its_execs_unchanged() {
    let world = common::World::new().await;
    let pod = world.pod("envbytes").await;

    // Values as kubelet 1.36 sends them: bytes. UTF-8 beyond ASCII, '=',
    // a newline, an empty value, and Secret data that is not UTF-8 at all
    // (Latin-1, stray continuation and invalid bytes) all arrive exactly.
    let values: [(&str, &[u8]); 6] = [
        ("GREETING", "grüße ✓ 日本".as_bytes()),
        ("WITH_EQUALS", b"a=b=c"),
        ("MULTILINE", b"line one\nline two"),
        ("EMPTY", b""),
        ("LATIN1", b"caf\xe9"),
        ("BINARY_SECRET", b"\xff\xfe\x80 =\xc3"),
    ];
    let mut config = world.container_config("env", &["sleep", "3600"]);
    config.envs = values
        .iter()
        .map(|(key, value)| cri::KeyValue {
            key: key.to_string(),
            value: value.to_vec(),
        })
        .collect();
    let id = world.run_config(&pod, config.clone()).await;
    let entries: Vec<Vec<u8>> = values
        .iter()
        .map(|(key, value)| [key.as_bytes(), b"=", value].concat())
        .collect();
    // The container's process, and an exec, as runc gives it the
    // container's environment.
    for (whose, seen) in [
        (
            "the container",
            environ(&world, &id, "/proc/1/environ").await,
        ),
        ("an exec", environ(&world, &id, "/proc/self/environ").await),
    ] {
        for entry in &entries {
            assert!(
                seen.contains(entry),
                "{whose}: {:?} not passed byte for byte: {:?}",
                String::from_utf8_lossy(entry),
                seen.iter()
                    .map(|e| String::from_utf8_lossy(e))
                    .collect::<Vec<_>>()
            );
        }
        // The image's env is merged in as before.
        assert!(seen.contains(&b"FROM_IMAGE=image".to_vec()), "{whose}");
    }
    // The runtime spec crictl inspect shows holds strings: the bytes that
    // are not UTF-8 show as U+FFFD there.
    let (_, info) = world.status(&id).await;
    let shown = info["runtimeSpec"]["process"]["env"].to_string();
    assert!(
        shown.contains("LATIN1=caf\u{fffd}") && shown.contains("GREETING=grüße ✓ 日本"),
        "{shown}"
    );

    // A NUL cannot pass execve: refused by name, nothing reserved.
    let mut secret = world.container_config("secret", &["sleep", "3600"]);
    secret.envs = vec![
        cri::KeyValue {
            key: "PLAIN".into(),
            value: b"fine".to_vec(),
        },
        cri::KeyValue {
            key: "BINARY_SECRET".into(),
            value: vec![0xff, 0xfe, 0x00, 0x80],
        },
    ];
    let error = world
        .create(&pod, "secret", secret.clone())
        .await
        .expect_err("a NUL in an env value is refused");
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().contains("config.envs[1].value") && error.message().contains("NUL"),
        "{}",
        error.message()
    );
    assert_eq!(world.list(None).await.len(), 1, "only the first container");
    // The name was not kept: the same container without the NUL is created.
    secret.envs[1].value = vec![0xff, 0xfe, 0x80];
    let second = world.run_config(&pod, secret).await;
    assert!(
        environ(&world, &second, "/proc/1/environ")
            .await
            .contains(&b"BINARY_SECRET=\xff\xfe\x80".to_vec())
    );

    world.finish(&[&pod]).await;
}

/// busybox with `applets` and the runtime config `config`, pushed as `repo`
/// and pulled into crid.
async fn push_and_pull(
    world: &common::World,
    repo: &str,
    config: serde_json::Value,
    applets: &[&str],
    extra: Vec<Blob>,
) -> String {
    let mut links = Layer::new();
    links.dir("bin/");
    for applet in applets {
        links.symlink(&format!("bin/{applet}"), "busybox");
    }
    let mut layers = vec![busybox_layer(), links.gzip()];
    layers.extend(extra);
    let image = world
        .registry
        .pusher()
        .image_with(repo, "1", &config, &layers, Schema::Oci)
        .await
        .reference;
    world
        .crid
        .images()
        .await
        .expect("image client")
        .pull_image(cri::PullImageRequest {
            image: Some(common::image_spec(&image)),
            ..Default::default()
        })
        .await
        .expect("pull");
    image
}

/// Waits until `path` exists in the container (its script got that far).
async fn wait_for_file(world: &common::World, id: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !world
        .exec(id, &["cat", path], 10)
        .await
        .is_ok_and(|r| r.exit_code == 0)
    {
        assert!(Instant::now() < deadline, "{path} never appeared in {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stop_signal_of_the_request_over_the_image_over_sigterm() {
    let world = common::World::new().await;
    let stops_on_usr2 = push_and_pull(
        &world,
        "e2e/stopsignal",
        serde_json::json!({
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh"],
            "StopSignal": "SIGUSR2",
        }),
        &["sleep", "cat", "touch"],
        Vec::new(),
    )
    .await;
    let pod = world.pod("stopsignal").await;

    // Each signal's trap ends the shell with its own code. The shell is PID 1
    // of its PID namespace, so a signal it does not trap (SIGTERM included)
    // would do nothing: only SIGKILL, 137, after the grace period.
    let script = "trap 'exit 41' USR1; trap 'exit 42' USR2; trap 'exit 43' TERM; \
                  touch /tmp/ready; sleep 3600 & wait";
    let cases = [
        (
            "requested",
            &stops_on_usr2,
            cri::Signal::Sigusr1,
            cri::Signal::Sigusr1,
            41,
        ),
        (
            "from-image",
            &stops_on_usr2,
            cri::Signal::RuntimeDefault,
            cri::Signal::Sigusr2,
            42,
        ),
        (
            "default",
            &world.image,
            cri::Signal::RuntimeDefault,
            cri::Signal::Sigterm,
            43,
        ),
    ];
    for (name, image, requested, settled, exit_code) in cases {
        let mut config = world.container_config(name, &["sh", "-c", script]);
        config.image = Some(common::image_spec(image));
        config.stop_signal = requested.into();
        let id = world.run_config(&pod, config).await;
        let (status, _) = world.status(&id).await;
        assert_eq!(
            status.stop_signal(),
            settled,
            "{name}: ContainerStatus.stop_signal"
        );
        wait_for_file(&world, &id, "/tmp/ready").await;

        world.stop(&id, 60).await;
        let status = world.wait_exited(&id).await;
        assert_eq!(
            status.exit_code, exit_code,
            "{name}: the trap of {settled:?} ended it"
        );
        assert_eq!(
            status.stop_signal(),
            settled,
            "{name}: still reported once exited"
        );
    }

    // A number that is no CRI signal, and a signal crid cannot deliver yet.
    for (value, code) in [
        (66, Code::InvalidArgument),
        (cri::Signal::Sigrtminplus3 as i32, Code::FailedPrecondition),
    ] {
        let mut config = world.container_config("bad-signal", &["sleep", "1"]);
        config.stop_signal = value;
        let error = world
            .create(&pod, "bad-signal", config)
            .await
            .expect_err("refused");
        assert_eq!(error.code(), code, "{error:?}");
        assert!(
            error.message().contains("config.stop_signal"),
            "{}",
            error.message()
        );
    }
    assert_eq!(
        world.list(None).await.len(),
        3,
        "the refused ones left nothing"
    );

    world.finish(&[&pod]).await;
}

/// A tmpfs mounted on the host for a test, unmounted however the test ends.
struct HostMount(std::path::PathBuf);

impl HostMount {
    fn tmpfs(at: &std::path::Path) -> HostMount {
        std::fs::create_dir_all(at).expect("mount point");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs");
        HostMount(at.to_path_buf())
    }
}

impl Drop for HostMount {
    fn drop(&mut self) {
        if let Err(errno) = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {errno}", self.0.display());
        }
    }
}

/// Whether `touch path` in the container fails because the file system is
/// read-only (and not for another reason).
async fn read_only_there(world: &common::World, id: &str, path: &str) -> bool {
    let out = world.exec(id, &["touch", path], 10).await.expect("exec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.exit_code {
        0 => false,
        _ if stderr.contains("Read-only file system") => true,
        code => panic!("touch {path}: exit {code}, {stderr}"),
    }
}

#[tokio::test]
async fn recursive_read_only_mount_makes_submounts_read_only_too() {
    let world = common::World::new().await;
    let status = world
        .rt()
        .await
        .status(cri::StatusRequest::default())
        .await
        .expect("Status")
        .into_inner();
    let handler = &status.runtime_handlers[0];
    assert!(
        handler
            .features
            .as_ref()
            .is_some_and(|f| f.recursive_read_only_mounts),
        "this kernel has mount_setattr, so crid must report recursive read-only mounts: {status:?}"
    );

    // A host dir with a file system mounted inside it.
    let host = tempfile::tempdir().expect("host dir");
    let submount = HostMount::tmpfs(&host.path().join("sub"));
    let pod = world.pod("rro").await;
    let mount = |recursive| cri::Mount {
        container_path: "/data".into(),
        host_path: host.path().display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        propagation: cri::MountPropagation::PropagationPrivate.into(),
        ..Default::default()
    };

    let mut config = world.container_config("recursive", &["sleep", "3600"]);
    config.mounts = vec![mount(true)];
    let recursive = world.run_config(&pod, config).await;
    assert!(read_only_there(&world, &recursive, "/data/top").await);
    assert!(read_only_there(&world, &recursive, "/data/sub/inside").await);
    let (status, _) = world.status(&recursive).await;
    assert!(
        status.mounts.iter().any(|m| m.recursive_read_only),
        "{:?}",
        status.mounts
    );

    // The contrast: plain read-only leaves the submount as it is on the host.
    let mut config = world.container_config("plain", &["sleep", "3600"]);
    config.mounts = vec![mount(false)];
    let plain = world.run_config(&pod, config).await;
    assert!(read_only_there(&world, &plain, "/data/top").await);
    assert!(!read_only_there(&world, &plain, "/data/sub/inside").await);
    assert!(
        host.path().join("sub/inside").exists(),
        "written through to the host's tmpfs"
    );

    world.finish(&[&pod]).await;
    drop(submount);
}

/// The gids in the `Groups:` line of a process's status.
async fn groups_of_pid_1(world: &common::World, id: &str) -> Vec<u32> {
    let status = world.sh(id, "cat /proc/1/status").await;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .expect("a Groups line");
    let mut gids: Vec<u32> = line
        .split_whitespace()
        .map(|gid| gid.parse().expect("a gid"))
        .collect();
    gids.sort_unstable();
    gids
}

#[tokio::test]
async fn supplemental_groups_policy_strict_leaves_out_the_images_group_file() {
    let world = common::World::new().await;
    let status = world
        .rt()
        .await
        .status(cri::StatusRequest::default())
        .await
        .expect("Status")
        .into_inner();
    assert!(
        status
            .features
            .as_ref()
            .is_some_and(|f| f.supplemental_groups_policy),
        "{status:?}"
    );

    // The image's user "app" is a member of "extra" (2000) by /etc/group.
    let mut etc = Layer::new();
    etc.dir("etc/")
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/:/bin/sh\n",
        )
        .file(
            "etc/group",
            0o644,
            b"root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
        );
    let image = push_and_pull(
        &world,
        "e2e/groups",
        serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "User": "app"}),
        &["sleep", "cat"],
        vec![etc.gzip()],
    )
    .await;
    let pod = world.pod("groups").await;

    let mut expected = Vec::new();
    for (name, policy) in [
        ("merge", cri::SupplementalGroupsPolicy::Merge),
        ("strict", cri::SupplementalGroupsPolicy::Strict),
    ] {
        let mut config = world.container_config(name, &["sleep", "3600"]);
        config.image = Some(common::image_spec(&image));
        config.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                supplemental_groups: vec![3456],
                supplemental_groups_policy: policy.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = world.run_config(&pod, config).await;
        let groups = groups_of_pid_1(&world, &id).await;
        let (status, _) = world.status(&id).await;
        let reported = status
            .user
            .and_then(|user| user.linux)
            .map(|linux| linux.supplemental_groups)
            .unwrap_or_default();
        assert_eq!(
            reported,
            groups.iter().map(|&g| i64::from(g)).collect::<Vec<_>>(),
            "{name}: ContainerStatus.user reports what the process has"
        );
        expected.push((name, groups));
    }
    assert_eq!(
        expected,
        [
            // The primary group, the requested one and /etc/group's.
            ("merge", vec![1000, 2000, 3456]),
            // The primary group and the requested one only.
            ("strict", vec![1000, 3456]),
        ]
    );

    world.finish(&[&pod]).await;
}

/// Every optional feature `Status` reports true, and the test (here or in
/// userns.rs) that uses it. kubelet trusts these: a feature must not be
/// claimed untested.
const FEATURE_TESTS: &[(&str, &str)] = &[
    (
        "user_namespaces",
        "a_pod_user_namespace_makes_root_inside_an_unprivileged_id_outside_and_files_follow",
    ),
    (
        "recursive_read_only_mounts",
        "recursive_read_only_mount_makes_submounts_read_only_too",
    ),
    (
        "supplemental_groups_policy",
        "supplemental_groups_policy_strict_leaves_out_the_images_group_file",
    ),
];

#[tokio::test]
async fn every_feature_status_reports_has_a_test_that_uses_it() {
    let env = TestEnv::new();
    let mut crid = env.start().await;
    let status = crid
        .runtime()
        .await
        .expect("runtime client")
        .status(cri::StatusRequest::default())
        .await
        .expect("Status")
        .into_inner();
    // Field by field, so that a feature added to the proto is covered too.
    let mut claimed = Vec::new();
    let mut collect = |features: serde_json::Value| {
        // An unset features message claims nothing.
        for (name, value) in features.as_object().into_iter().flatten() {
            if value == &serde_json::Value::Bool(true) {
                claimed.push(name.clone());
            }
        }
    };
    for handler in &status.runtime_handlers {
        collect(serde_json::to_value(handler.features).expect("JSON"));
    }
    collect(serde_json::to_value(status.features).expect("JSON"));
    let sources = [include_str!("api_level.rs"), include_str!("userns.rs")];
    for feature in claimed {
        let test = FEATURE_TESTS
            .iter()
            .find(|(name, _)| *name == feature)
            .map(|(_, test)| *test)
            .unwrap_or_else(|| panic!("Status claims {feature} but no test here uses it"));
        assert!(
            sources
                .iter()
                .any(|source| source.contains(&format!("async fn {test}()"))),
            "{feature}: test {test} is gone"
        );
    }
    crid.stop().await;
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}
