//! Issue 18, findings 3–6, against the real crid: a start that fails keeps
//! its cause (StartError, 128, the message, across a restart) and what
//! cannot start is refused at create; a missing working_dir is made inside
//! the rootfs; requests crid cannot honour get the code that says why
//! (InvalidArgument naming the field, RESOURCE_EXHAUSTED over the size
//! limit, a layer entry no file system takes); ExecSync output over the cap
//! is cut and says so. Pods use the node's network: no CNI. Every test
//! ends with nothing left.

mod common;

use common::*;
use e2e::registry::{Blob, Layer};
use e2e::{running, wait_until};
use proto::cri;
use tonic::Code;

fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    field: &str,
) -> tonic::Status {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), code, "{field}: {status:?}");
    assert!(status.message().contains(field), "{field}: {status:?}");
    status
}

#[tokio::test]
async fn a_start_that_fails_keeps_its_cause_and_what_cannot_start_is_refused_at_create() {
    let mut world = World::new().await;
    let pod = world.pod("startfail").await;

    // NUL bytes in what is exec'd, and mounts over / or /proc, never
    // reach the start.
    let host_dir = world.logs.path().display().to_string();
    let mut config = world.container_config("nul", &["sh", "-c", "echo\0x"]);
    assert_refused(
        world.create(&pod, "nul", config.clone()).await,
        Code::InvalidArgument,
        "config.command[2]",
    );
    config.command = vec!["sh".into()];
    config.args = vec!["-c\0".into()];
    assert_refused(
        world.create(&pod, "nul", config).await,
        Code::InvalidArgument,
        "config.args[0]",
    );
    for destination in ["/", "/proc", "/proc/sys/net"] {
        let mut config = world.container_config("over", &["true"]);
        config.mounts = vec![cri::Mount {
            container_path: destination.into(),
            host_path: host_dir.clone(),
            ..Default::default()
        }];
        assert_refused(
            world.create(&pod, "over", config).await,
            Code::InvalidArgument,
            "config.mounts[0].container_path",
        );
    }

    // A command that is not there: StartContainer says why, and so does
    // ContainerStatus, also after a restart of crid.
    let id = world
        .create(
            &pod,
            "missing",
            world.container_config("missing", &["nosuch"]),
        )
        .await
        .expect("create");
    let error = world.start(&id).await.expect_err("the start must fail");
    let cause = r#"exec: "nosuch": executable file not found in $PATH"#;
    assert!(error.message().contains(cause), "{error:?}");
    let status = world.wait_exited(&id).await;
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (128, "StartError"),
        "{status:?}"
    );
    assert!(status.message.contains(cause), "{status:?}");

    world.crid.stop().await;
    world.crid = world.env.start().await;
    let (status, _) = world.status(&id).await;
    assert_eq!(
        status.state,
        i32::from(cri::ContainerState::ContainerExited)
    );
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (128, "StartError"),
        "{status:?}"
    );
    assert!(status.message.contains(cause), "{status:?}");
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_missing_working_dir_is_made_inside_the_rootfs() {
    let world = World::new().await;
    // /escape points at a host path: the working dir made through it must
    // land inside the rootfs, never on the host.
    let host_target = tempfile::Builder::new()
        .prefix("crid-e2e-wd-escape-")
        .tempdir()
        .expect("tempdir");
    // The target exists inside the rootfs too: there is where it must go.
    let target = host_target.path().display().to_string();
    let mut layer = Layer::new();
    layer.dir("tmp/");
    layer.dir(&format!("{}/", target.trim_start_matches('/')));
    layer.symlink("escape", &target);
    let image = world.push_and_pull("e2e/workdir", vec![layer.gzip()]).await;
    let pod = world.pod("workdir").await;

    let mut config = world.container_config("made", &["sh", "-c", "pwd; ls -ldn ."]);
    config.working_dir = "/no/such/dir".into();
    let made = world.run_config(&pod, config).await;
    let status = world.wait_exited(&made).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let out: Vec<String> = log_records(&world.log_file("workdir", "made"))
        .into_iter()
        .map(|(_, _, line)| line)
        .collect();
    assert_eq!(
        out.first().map(String::as_str),
        Some("/no/such/dir"),
        "{out:?}"
    );
    // root's, 0755, as runc makes it.
    let listing = out.get(1).cloned().unwrap_or_default();
    assert!(listing.starts_with("drwxr-xr-x"), "{listing}");
    let fields: Vec<&str> = listing.split_whitespace().collect();
    assert_eq!(fields.get(2..4), Some(&["0", "0"][..]), "{listing}");

    let mut config = world.container_config("through", &["pwd"]);
    config.image = Some(image_spec(&image));
    config.working_dir = "/escape/sub".into();
    let through = world.run_config(&pod, config).await;
    let status = world.wait_exited(&through).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let out: Vec<String> = log_records(&world.log_file("workdir", "through"))
        .into_iter()
        .map(|(_, _, line)| line)
        .collect();
    // The container's own copy of the path (getcwd resolves the link).
    assert_eq!(out.first(), Some(&format!("{target}/sub")), "{out:?}");
    assert!(
        !host_target.path().join("sub").exists(),
        "the working dir was made on the host"
    );
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn requests_crid_cannot_honour_get_the_code_that_says_why() {
    let world = World::new().await;
    let mut rt = world.rt().await;

    // A pod name with a NUL byte (it would go into CNI_ARGS).
    let mut config = world.pod_config("nul", cri::NamespaceMode::Container);
    if let Some(metadata) = config.metadata.as_mut() {
        metadata.name = "a\0b".into();
    }
    assert_refused(
        rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "config.metadata.name",
    );
    // A cgroup name the kernel refuses.
    let mut config = world.pod_config("parent", cri::NamespaceMode::Container);
    if let Some(linux) = config.linux.as_mut() {
        linux.cgroup_parent = "/x\ny".into();
    }
    assert_refused(
        rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await,
        Code::InvalidArgument,
        "linux.cgroup_parent",
    );

    // Sysctl values the kernel would refuse inside the pod: refused by
    // their known format, or (kernel.msgmni takes no negative number,
    // which only the kernel says) when the pod's namespaces refuse them.
    for (key, value, network) in [
        ("fs.mqueue.msg_max", "2000000000", cri::NamespaceMode::Node),
        ("net.ipv4.ip_forward", "junk", cri::NamespaceMode::Pod),
        ("kernel.msgmni", "-5", cri::NamespaceMode::Node),
    ] {
        let mut config = world.pod_config("sysctl", cri::NamespaceMode::Container);
        if let Some(linux) = config.linux.as_mut() {
            linux.sysctls = [(key.to_string(), value.to_string())].into();
            if let Some(options) = linux
                .security_context
                .as_mut()
                .and_then(|s| s.namespace_options.as_mut())
            {
                options.network = network.into();
            }
        }
        assert_refused(
            rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await,
            Code::InvalidArgument,
            &format!("linux.sysctls[{key}]"),
        );
    }

    // Over the size limit: RESOURCE_EXHAUSTED, gRPC's code for it.
    let mut big = Runtime::new(world.crid.channel().await.expect("channel"))
        .max_encoding_message_size(64 * 1024 * 1024);
    let status = big
        .container_status(cri::ContainerStatusRequest {
            container_id: "x".repeat(17 * 1024 * 1024),
            verbose: false,
        })
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // A layer entry whose name no file system takes: the pull is refused
    // naming it.
    let long = "n".repeat(5000);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(1);
    // A GNU long-name entry carries the name.
    tar.append_data(&mut header, format!("dir/{long}"), &b"x"[..])
        .expect("tar entry");
    let layer = Blob::gzip(&tar.into_inner().expect("tar"));
    let image = push_image_with(&world.registry, "e2e/longname", vec![layer]).await;
    let status = world
        .crid
        .images()
        .await
        .expect("image client")
        .pull_image(cri::PullImageRequest {
            image: Some(image_spec(&image)),
            ..Default::default()
        })
        .await
        .expect_err("the pull must be refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("nnnnnnnn"), "{status:?}");
    world.finish(&[]).await;
}

#[tokio::test]
async fn exec_sync_output_over_the_cap_is_cut_and_says_so() {
    let world = World::new().await;
    let pod = world.pod("bigexec").await;
    let id = world.run(&pod, "talker", &["sleep", "1000"]).await;
    // kubelet reads answers of up to 16 MiB.
    let mut kubelet = Runtime::new(world.crid.channel().await.expect("channel"))
        .max_decoding_message_size(16 * 1024 * 1024);
    let out = kubelet
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: ["sh", "-c", "head -c 50000000 /dev/zero; echo done >&2"]
                .map(String::from)
                .to_vec(),
            timeout: 60,
        })
        .await
        .expect("exec")
        .into_inner();
    assert_eq!(out.exit_code, 0);
    // More than the old 4 MiB cap, all of it what was written.
    assert!(out.stdout.len() > 15 * 1024 * 1024, "{}", out.stdout.len());
    assert!(out.stdout.iter().all(|&b| b == 0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("done\n"), "{stderr}");
    assert!(stderr.contains("stdout truncated"), "{stderr}");

    // Output under the cap comes whole, with nothing added.
    let out = world
        .exec(&id, &["sh", "-c", "head -c 3000000 /dev/zero"], 60)
        .await
        .expect("exec");
    assert_eq!((out.stdout.len(), out.stderr.len()), (3_000_000, 0));
    world.finish(&[&pod]).await;
}

/// The ContainerStatus of `id` once `done` says it is what it waits for
/// (30 s at most).
async fn status_once(
    world: &World,
    id: &str,
    what: &str,
    done: impl Fn(&cri::ContainerStatus) -> bool,
) -> cri::ContainerStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = world.status(id).await;
        if done(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id}: not {what}: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Issue 18, finding 1: a kill -9 of a pod's crid-monitor is noticed; what
/// is left of the pod is killed through its cgroups; the containers that
/// still ran are reported exited by it (137, `Error`, saying the monitor
/// died), also after a restart of crid, and the pod not ready; a
/// StopContainer that answers OK leaves nothing of its container running.
#[tokio::test]
async fn a_dead_monitor_is_noticed_and_what_it_left_is_killed_and_reported() {
    let mut world = World::new().await;
    let pod = world.pod("orphaned").await;
    let done = world.run(&pod, "done", &["sh", "-c", "exit 3"]).await;
    let sleeper = world.run(&pod, "sleeper", &["sleep", "1000"]).await;
    let stopped = world.run(&pod, "stopped", &["sleep", "1000"]).await;
    world.wait_exited(&done).await;
    let pid_of = |info: &serde_json::Value, key: &str| info[key].as_i64().expect(key);
    let (_, info) = world.status(&sleeper).await;
    let sleeper_pid = pid_of(&info, "pid");
    let (_, info) = world.status(&stopped).await;
    let stopped_pid = pid_of(&info, "pid");
    let (_, info) = world.pod_status(&pod).await;
    let (pause, monitor) = (pid_of(&info, "pid"), pid_of(&info, "monitorPid"));
    assert!(running(sleeper_pid) && running(stopped_pid) && running(pause));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(monitor).expect("a pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the monitor");
    // Whether crid has noticed yet or not: OK means nothing of it runs.
    world.stop(&stopped, 30).await;
    assert!(
        !running(stopped_pid),
        "StopContainer answered OK while it runs"
    );

    wait_until("the pod's processes are killed", || {
        !running(sleeper_pid) && !running(pause)
    });
    let ended_by_monitor_death = |status: &cri::ContainerStatus| status.reason == "Error";
    for id in [&sleeper, &stopped] {
        let status = status_once(
            &world,
            id,
            "ended by the monitor's death",
            ended_by_monitor_death,
        )
        .await;
        assert_eq!(
            status.state,
            i32::from(cri::ContainerState::ContainerExited),
            "{status:?}"
        );
        assert_eq!(status.exit_code, 137, "{status:?}");
        assert!(status.message.contains("monitor"), "{status:?}");
        assert!(status.finished_at > 0, "{status:?}");
    }
    // What ended before keeps its own end.
    let (status, _) = world.status(&done).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (3, "Error"));
    assert!(!status.message.contains("monitor"), "{status:?}");
    let (status, _) = world.pod_status(&pod).await;
    assert_eq!(status.state(), cri::PodSandboxState::SandboxNotready);
    // Nothing more runs in it, and crid says why.
    let refused = world
        .create(&pod, "late", world.container_config("late", &["true"]))
        .await
        .expect_err("no container is created into a pod whose monitor died");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("monitor"), "{refused:?}");
    let refused = world
        .exec(&sleeper, &["true"], 10)
        .await
        .expect_err("nothing is exec'd in a pod whose monitor died");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("monitor"), "{refused:?}");

    // Recorded: a restarted crid says the same.
    world.crid.stop().await;
    world.crid = world.env.start().await;
    let (status, _) = world.status(&sleeper).await;
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (137, "Error"),
        "{status:?}"
    );
    assert!(status.message.contains("monitor"), "{status:?}");
    let (status, _) = world.pod_status(&pod).await;
    assert_eq!(status.state(), cri::PodSandboxState::SandboxNotready);
    world.finish(&[&pod]).await;
}
