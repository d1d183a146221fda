//! Containers for real: busybox images from a local registry, run in real
//! pods by crid's own runtime through the pod's crid-monitor. Logs, exit
//! codes and reasons, OOM, stop with grace, ExecSync, user/env/cwd,
//! read-only root and binds, cgroup limits and their updates, log rotation,
//! a shared PID namespace, crashes and restarts. Every test ends with no
//! mount, cgroup, process or file of its own left.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use proto::cri;
use tonic::Code;

#[tokio::test]
async fn a_container_runs_writes_its_log_and_exits_with_its_code() {
    let world = World::new().await;
    let pod = world.pod("logs").await;
    let ok = world
        .run(
            &pod,
            "ok",
            &["sh", "-c", "echo hello; echo oops >&2; printf partial"],
        )
        .await;
    let failing = world.run(&pod, "failing", &["sh", "-c", "exit 3"]).await;

    let status = world.wait_exited(&ok).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert!(status.started_at > 0 && status.finished_at >= status.started_at);
    assert_eq!(
        status.image.as_ref().map(|i| i.image.as_str()),
        Some(world.image.as_str())
    );
    assert!(status.image_id.starts_with("sha256:"), "{status:?}");
    assert_eq!(status.labels["ctr"], "ok");
    let records = log_records(&world.log_file("logs", "ok"));
    for expected in [
        ("stdout", "F", "hello"),
        ("stderr", "F", "oops"),
        ("stdout", "F", "partial"),
    ] {
        assert!(
            records
                .iter()
                .any(|(s, t, c)| (s.as_str(), t.as_str(), c.as_str()) == expected),
            "{expected:?} not in {records:?}"
        );
    }
    let status = world.wait_exited(&failing).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (3, "Error"));

    // Listing filters by state, pod, id prefix and label.
    let list = |filter: cri::ContainerFilter| world.list(Some(filter));
    let exited = list(cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerExited.into(),
        }),
        pod_sandbox_id: pod.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(exited.len(), 2);
    let by_label = list(cri::ContainerFilter {
        label_selector: HashMap::from([("ctr".to_string(), "failing".to_string())]),
        ..Default::default()
    })
    .await;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id, failing);
    let by_prefix = list(cri::ContainerFilter {
        id: ok[..12].to_string(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_prefix.len(), 1);
    let running = list(cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning.into(),
        }),
        ..Default::default()
    })
    .await;
    assert!(running.is_empty());

    // RemoveContainer is idempotent.
    for _ in 0..2 {
        world
            .rt()
            .await
            .remove_container(cri::RemoveContainerRequest {
                container_id: failing.clone(),
            })
            .await
            .expect("remove");
    }
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn env_working_dir_user_and_a_missing_command() {
    let world = World::new().await;
    let pod = world.pod("identity").await;
    let mut config = world.container_config("who", &["sleep", "1000"]);
    config.working_dir = "/tmp".into();
    config.envs = vec![
        cri::KeyValue {
            key: "FROM_REQUEST".into(),
            value: "request".into(),
        },
        cri::KeyValue {
            key: "OVERRIDDEN".into(),
            value: "request".into(),
        },
    ];
    if let Some(linux) = config.linux.as_mut() {
        linux.security_context = Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1234 }),
            run_as_group: Some(cri::Int64Value { value: 2345 }),
            supplemental_groups: vec![3456],
            ..Default::default()
        });
    }
    let id = world.run_config(&pod, config).await;
    assert_eq!(world.sh(&id, "id -u; id -g").await, "1234\n2345");
    assert!(world.sh(&id, "id -G").await.contains("3456"));
    assert_eq!(world.sh(&id, "pwd").await, "/tmp");
    let env = world.sh(&id, "env").await;
    for expected in [
        "FROM_IMAGE=image",
        "FROM_REQUEST=request",
        "OVERRIDDEN=request",
        "PATH=/bin",
        "HOSTNAME=",
    ] {
        assert!(env.contains(expected), "{expected} not in {env}");
    }
    let (status, info) = world.status(&id).await;
    let user = status.user.and_then(|u| u.linux).expect("user reported");
    assert_eq!((user.uid, user.gid), (1234, 2345));
    assert_eq!(info["runtimeSpec"]["process"]["cwd"], "/tmp");
    assert!(info["pid"].as_i64().unwrap_or(0) > 0);

    // An executable the image lacks: StartContainer says so, nothing runs.
    let missing = world
        .create(
            &pod,
            "missing",
            world.container_config("missing", &["no-such-cmd"]),
        )
        .await
        .expect("create");
    let error = world.start(&missing).await.expect_err("start fails");
    assert!(
        error.message().contains("no-such-cmd") && error.message().contains("not found"),
        "{error:?}"
    );
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn exec_sync_returns_output_and_code_and_times_out() {
    let world = World::new().await;
    let pod = world.pod("exec").await;
    let id = world.run(&pod, "sleeper", &["sleep", "1000"]).await;
    let out = world
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // The exec runs in the container's mount namespace: the pod's files
    // (a node-network pod has the node's hostname).
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(world.sh(&id, "cat /etc/hostname").await, node.trim());

    let error = world
        .exec(&id, &["sh", "-c", "echo started; sleep 77; true"], 1)
        .await
        .expect_err("times out");
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    // The timed-out process was killed: only the container's sleep is left.
    let ps = world.sh(&id, "ps -o args").await;
    assert!(!ps.contains("sleep 77"), "{ps}");
    let error = world.exec(&id, &[], 1).await.expect_err("no command");
    assert_eq!(error.code(), Code::InvalidArgument);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn stop_honours_the_grace_period_then_kills() {
    let world = World::new().await;
    let pod = world.pod("stopping").await;
    let polite = world
        .run(
            &pod,
            "polite",
            &[
                "sh",
                "-c",
                "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
            ],
        )
        .await;
    let stubborn = world
        .run(
            &pod,
            "stubborn",
            &["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
        )
        .await;
    // Give the shells time to install their traps before signalling.
    world.sh(&polite, "true").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.stop(&polite, 30).await;
    let status = world.wait_exited(&polite).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert!(
        log_records(&world.log_file("stopping", "polite"))
            .iter()
            .any(|(_, _, c)| c == "bye")
    );
    world.stop(&stubborn, 1).await;
    let status = world.wait_exited(&stubborn).await;
    assert_eq!(status.exit_code, 137, "{status:?}");
    // Stopping again is fine.
    world.stop(&stubborn, 1).await;
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_process_over_its_memory_limit_is_oom_killed() {
    let world = World::new().await;
    let pod = world.pod("oom").await;
    let mut config = world.container_config("hog", &["tail", "/dev/zero"]);
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 8 * 1024 * 1024,
            ..Default::default()
        });
    }
    let id = world.run_config(&pod, config).await;
    let status = world.wait_exited(&id).await;
    assert_eq!(
        (status.exit_code, status.reason.as_str()),
        (137, "OOMKilled"),
        "{status:?}"
    );
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn readonly_rootfs_and_a_readonly_bind_mount() {
    let world = World::new().await;
    let pod = world.pod("readonly").await;
    let host = tempfile::tempdir().expect("host dir");
    std::fs::write(host.path().join("file"), "from the host").expect("write");
    let missing = host.path().join("created/by/crid");
    let mut config = world.container_config("ro", &["sleep", "1000"]);
    config.mounts = vec![
        cri::Mount {
            container_path: "/data".into(),
            host_path: host.path().display().to_string(),
            readonly: true,
            ..Default::default()
        },
        cri::Mount {
            container_path: "/scratch".into(),
            host_path: missing.display().to_string(),
            ..Default::default()
        },
    ];
    if let Some(linux) = config.linux.as_mut() {
        linux.security_context = Some(cri::LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        });
    }
    let id = world.run_config(&pod, config).await;
    assert_eq!(world.sh(&id, "cat /data/file").await, "from the host");
    for path in ["/data/new", "/new-in-root"] {
        let out = world.exec(&id, &["touch", path], 10).await.expect("exec");
        assert_ne!(out.exit_code, 0, "{path} is writable");
    }
    // A missing host path became a writable directory.
    assert!(missing.is_dir());
    world.sh(&id, "touch /scratch/x").await;
    assert!(missing.join("x").exists());
    world.finish(&[&pod]).await;
}

/// A control file of the container's cgroup as the container sees it in
/// its /sys/fs/cgroup: v1's file in its controller's dir, or v2's.
async fn cgroup_file(world: &World, id: &str, (v1, v2): (&str, &str)) -> String {
    let file = if e2e::cgroup_v2() { v2 } else { v1 };
    world.sh(id, &format!("cat /sys/fs/cgroup/{file}")).await
}

const MEMORY_LIMIT: (&str, &str) = ("memory/memory.limit_in_bytes", "memory.max");
const CPU_SHARES: (&str, &str) = ("cpu/cpu.shares", "cpu.weight");
const CPU_QUOTA: (&str, &str) = ("cpu/cpu.cfs_quota_us", "cpu.max");

/// v1's value, or v2's.
fn per_version<'a>(v1: &'a str, v2: &'a str) -> &'a str {
    if e2e::cgroup_v2() { v2 } else { v1 }
}

#[tokio::test]
async fn limits_are_in_the_containers_cgroup_and_update_live() {
    let world = World::new().await;
    let pod = world.pod("limits").await;
    let mut config = world.container_config("limited", &["sleep", "1000"]);
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 * 1024 * 1024,
            ..Default::default()
        });
    }
    let id = world.run_config(&pod, config).await;
    let mib_64 = (64 * 1024 * 1024).to_string();
    assert_eq!(cgroup_file(&world, &id, MEMORY_LIMIT).await, mib_64);
    // v2 weighs CPU as runc and crun convert shares (512 -> 59).
    assert_eq!(
        cgroup_file(&world, &id, CPU_SHARES).await,
        per_version("512", "59")
    );
    assert_eq!(
        cgroup_file(&world, &id, CPU_QUOTA).await,
        per_version("50000", "50000 100000")
    );
    if e2e::cgroup_v2() {
        // Its own cgroup namespace: its cgroup is the root of its view.
        assert_eq!(world.sh(&id, "cat /proc/self/cgroup").await, "0::/");
        // No swap asked: memory+swap = memory, on v2 no swap at all.
        assert_eq!(
            world.sh(&id, "cat /sys/fs/cgroup/memory.swap.max").await,
            "0"
        );
        let (_, info) = world.status(&id).await;
        let cgroup = info["cgroup"].as_str().expect("cgroup in the verbose info");
        let host_dir = e2e::cgroup_dir("memory", cgroup);
        let host_limit = std::fs::read_to_string(host_dir.join("memory.max")).expect("memory.max");
        assert_eq!(
            host_limit.trim(),
            mib_64,
            "the view is the container's own cgroup"
        );
    }
    // The container's view is read-only.
    let shares_file = per_version(CPU_SHARES.0, CPU_SHARES.1);
    let out = world
        .exec(
            &id,
            &[
                "sh",
                "-c",
                &format!("echo 2 > /sys/fs/cgroup/{shares_file}"),
            ],
            10,
        )
        .await
        .expect("exec");
    assert_ne!(out.exit_code, 0);

    world
        .rt()
        .await
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_shares: 256,
                memory_limit_in_bytes: 128 * 1024 * 1024,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("update");
    assert_eq!(
        cgroup_file(&world, &id, MEMORY_LIMIT).await,
        (128 * 1024 * 1024).to_string()
    );
    assert_eq!(
        cgroup_file(&world, &id, CPU_SHARES).await,
        per_version("256", "35")
    );
    let (status, _) = world.status(&id).await;
    let resources = status.resources.and_then(|r| r.linux).expect("resources");
    assert_eq!(
        (resources.cpu_shares, resources.memory_limit_in_bytes),
        (256, 128 * 1024 * 1024)
    );
    world.finish(&[&pod]).await;
}

/// UpdateContainerResources with values the kernel cannot take is
/// InvalidArgument naming the field, and changes nothing: neither the
/// cgroup nor what ContainerStatus reports.
#[tokio::test]
async fn a_refused_update_names_the_field_and_changes_nothing() {
    let world = World::new().await;
    let pod = world.pod("refused").await;
    let mut config = world.container_config("steady", &["sleep", "1000"]);
    let limits = cri::LinuxContainerResources {
        cpu_shares: 512,
        cpu_quota: 20_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 64 * 1024 * 1024,
        ..Default::default()
    };
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(limits.clone());
    }
    let id = world.run_config(&pod, config).await;
    let update = |resources: cri::LinuxContainerResources| {
        let (world, id) = (&world, id.clone());
        async move {
            world
                .rt()
                .await
                .update_container_resources(cri::UpdateContainerResourcesRequest {
                    container_id: id,
                    linux: Some(resources),
                    ..Default::default()
                })
                .await
        }
    };
    let unchanged = || async {
        assert_eq!(
            cgroup_file(&world, &id, CPU_SHARES).await,
            per_version("512", "59")
        );
        assert_eq!(
            cgroup_file(&world, &id, CPU_QUOTA).await,
            per_version("20000", "20000 100000")
        );
        let (status, _) = world.status(&id).await;
        let reported = status.resources.and_then(|r| r.linux).expect("resources");
        assert_eq!(
            (reported.cpu_shares, reported.cpu_quota, reported.cpu_period),
            (512, 20_000, 100_000)
        );
    };

    // Refused by crid before anything is written.
    for (resources, field) in [
        (
            cri::LinuxContainerResources {
                cpu_shares: 256,
                cpu_period: 1,
                cpu_quota: 1000,
                ..Default::default()
            },
            "cpu_period",
        ),
        (
            cri::LinuxContainerResources {
                cpu_shares: 256,
                cpuset_cpus: "0-1000".into(),
                ..Default::default()
            },
            "cpuset_cpus",
        ),
    ] {
        let status = update(resources).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
        unchanged().await;
    }

    // Refused by the kernel halfway, after shares and period were written:
    // on v1 a quota above the pod's own (v2 takes it, capped by the pod's).
    if !e2e::cgroup_v2() {
        let (_, info) = world.status(&id).await;
        let cgroup = info["cgroup"].as_str().expect("cgroup in the verbose info");
        let pod_cpu = e2e::cgroup_dir("cpu", cgroup)
            .parent()
            .expect("the pod's cgroup")
            .to_path_buf();
        std::fs::write(pod_cpu.join("cpu.cfs_quota_us"), "50000").expect("pod quota");
        let status = update(cri::LinuxContainerResources {
            cpu_shares: 256,
            cpu_period: 200_000,
            cpu_quota: 150_000,
            ..Default::default()
        })
        .await
        .expect_err("the kernel refuses a quota above the pod's");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("cpu_quota"), "{status:?}");
        unchanged().await;
        assert_eq!(
            cgroup_file(&world, &id, ("cpu/cpu.cfs_period_us", "")).await,
            "100000"
        );
    }
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn log_rotation_by_rename_and_reopen_loses_no_line() {
    let world = World::new().await;
    let pod = world.pod("rotate").await;
    let id = world
        .run(
            &pod,
            "counter",
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); sleep 0.005; done",
            ],
        )
        .await;
    let log = world.log_file("rotate", "counter");
    let rotated = log.with_extension("log.1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::rename(&log, &rotated).expect("rotate");
    world
        .rt()
        .await
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect("reopen");
    let status = world.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0);
    let mut lines: Vec<String> = log_records(&rotated)
        .into_iter()
        .chain(log_records(&log))
        .map(|(_, _, content)| content)
        .collect();
    assert!(
        !log_records(&log).is_empty(),
        "nothing written after reopen"
    );
    let expected: Vec<String> = (0..400).map(|i| format!("line {i}")).collect();
    lines.retain(|l| !l.is_empty());
    assert_eq!(lines, expected);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn containers_of_a_shared_pid_namespace_pod_see_each_other() {
    let world = World::new().await;
    let pod = world.pod_with("sharedpid", cri::NamespaceMode::Pod).await;
    let mut config = world.container_config("first", &["sleep", "4242"]);
    if let Some(linux) = config.linux.as_mut() {
        linux.security_context = Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Pod.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    world.run_config(&pod, config.clone()).await;
    config.metadata = Some(cri::ContainerMetadata {
        name: "second".into(),
        attempt: 0,
    });
    config.command = vec!["sleep".into(), "1000".into()];
    let second = world.run_config(&pod, config).await;
    let ps = world.sh(&second, "ps -o args").await;
    assert!(ps.contains("sleep 4242"), "{ps}");
    // A container of its own PID namespace does not.
    let mut alone = world.container_config("alone", &["sleep", "1000"]);
    if let Some(linux) = alone.linux.as_mut() {
        linux.security_context = Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Container.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let alone = world.run_config(&pod, alone).await;
    let ps = world.sh(&alone, "ps -o pid,args").await;
    assert!(!ps.contains("sleep 4242"), "{ps}");
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_running_container_survives_a_crid_restart_and_an_exit_while_down_is_seen() {
    let mut world = World::new().await;
    let pod = world.pod("restart").await;
    let id = world.run(&pod, "long", &["sleep", "1000"]).await;
    let short = world.run(&pod, "short", &["sleep", "1001"]).await;
    let (status, info) = world.status(&short).await;
    assert_eq!(
        status.state,
        i32::from(cri::ContainerState::ContainerRunning)
    );
    let short_pid = info["pid"].as_i64().expect("pid");

    world.crid.stop_with(Signal::SIGKILL).await;
    // While crid is down, one container ends.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(short_pid).expect("pid")),
        Signal::SIGKILL,
    )
    .expect("kill short");
    world.crid = world.env.start().await;
    let (status, _) = world.status(&id).await;
    assert_eq!(
        status.state,
        i32::from(cri::ContainerState::ContainerRunning)
    );
    assert_eq!(world.sh(&id, "echo alive").await, "alive");
    let status = world.wait_exited(&short).await;
    assert_eq!(status.exit_code, 137);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn crid_killed_at_each_step_of_create_and_start_leaves_nothing_wrong() {
    let mut world = World::new().await;
    let pod = world.pod("crashy").await;
    for step in [
        "container.recorded",
        "container.prepared",
        "container.init_created",
        "container.built",
        "container.started",
    ] {
        world.crid.stop().await;
        world.crid = world.env.start_crashing_at(step).await;
        let config = world.container_config("victim", &["sleep", "1000"]);
        let created = world.create(&pod, "victim", config).await;
        let id = match created {
            Ok(id) => {
                // Only the start step is left to crash at.
                world.start(&id).await.expect_err("crid dies in start");
                Some(id)
            }
            Err(_) => None,
        };
        let status = world.crid.stop_with(Signal::SIGKILL).await;
        assert!(!status.success(), "{step}: crid did not crash");
        world.crid = world.env.start().await;
        let listed = world.list(None).await;
        match step {
            "container.recorded"
            | "container.prepared"
            | "container.init_created"
            | "container.built" => {
                assert!(listed.is_empty(), "{step}: {listed:?}");
                assert!(
                    std::fs::read_dir(world.env.state().join("containers"))
                        .map(|d| d.count() == 0)
                        .unwrap_or(true),
                    "{step}: bundle left"
                );
            }
            _ => {
                // The start happened before the crash: the container runs.
                let id = id.expect("created before the crash");
                let (status, _) = world.status(&id).await;
                assert_eq!(
                    status.state,
                    i32::from(cri::ContainerState::ContainerRunning),
                    "{step}"
                );
                world
                    .rt()
                    .await
                    .remove_container(cri::RemoveContainerRequest { container_id: id })
                    .await
                    .expect("remove");
            }
        }
        // The name is free again.
        let again = world.run(&pod, "victim", &["true"]).await;
        world.wait_exited(&again).await;
        world
            .rt()
            .await
            .remove_container(cri::RemoveContainerRequest {
                container_id: again,
            })
            .await
            .expect("remove");
    }
    world.finish(&[&pod]).await;
}

/// The container operations after create, each with crid killed at every
/// crash point inside it: after a restart the container is still there
/// until a RemoveContainer returned, the same call repeated succeeds and
/// has its effect, and the pod ends with nothing left.
#[tokio::test]
async fn crid_killed_inside_stop_update_and_remove_leaves_nothing_wrong() {
    let mut world = World::new().await;
    let pod = world.pod("crashy-ops").await;
    // (crash point, operation) in the order kubelet would call them.
    let cases = [
        ("container.stop.signalled", "stop with a grace period"),
        ("container.stop.killed", "stop without one"),
        ("container.update.applied", "update"),
        ("container.teardown.monitor_done", "remove"),
        ("container.teardown.cgroup_removed", "remove"),
        ("container.remove.torn_down", "remove"),
    ];
    for (step, operation) in cases {
        let id = world.run(&pod, "victim", &["sleep", "1000"]).await;
        world.crid.stop().await;
        world.crid = world.env.start_crashing_at(step).await;
        let update = cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_shares: 256,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut rt = world.rt().await;
        let interrupted = match operation {
            "stop with a grace period" => rt
                .stop_container(cri::StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 30,
                })
                .await
                .map(drop),
            "stop without one" => rt
                .stop_container(cri::StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 0,
                })
                .await
                .map(drop),
            "update" => rt
                .update_container_resources(update.clone())
                .await
                .map(drop),
            _ => rt
                .remove_container(cri::RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .map(drop),
        };
        assert!(interrupted.is_err(), "{step}: the call returned");
        let status = world.crid.stop_with(Signal::SIGKILL).await;
        assert!(!status.success(), "{step}: crid did not crash");
        world.crid = world.env.start().await;

        let listed: Vec<String> = world.list(None).await.into_iter().map(|c| c.id).collect();
        assert_eq!(
            listed,
            vec![id.clone()],
            "{step}: lost or phantom container"
        );
        let mut rt = world.rt().await;
        match operation {
            "update" => {
                rt.update_container_resources(update)
                    .await
                    .unwrap_or_else(|e| panic!("{step}: update again: {e:?}"));
                let (status, _) = world.status(&id).await;
                let shares = status
                    .resources
                    .and_then(|r| r.linux)
                    .map(|linux| linux.cpu_shares);
                assert_eq!(shares, Some(256), "{step}");
            }
            "remove" => {}
            _ => {
                rt.stop_container(cri::StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 0,
                })
                .await
                .unwrap_or_else(|e| panic!("{step}: stop again: {e:?}"));
                let (status, _) = world.status(&id).await;
                assert_eq!(
                    status.state,
                    i32::from(cri::ContainerState::ContainerExited),
                    "{step}"
                );
            }
        }
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{step}: remove again: {e:?}"));
        assert!(world.list(None).await.is_empty(), "{step}");
        assert!(
            !world.env.state().join("containers").join(&id).exists(),
            "{step}: bundle left"
        );
        assert!(
            pod_cgroups(&pod).iter().all(|dir| !dir.join(&id).exists()),
            "{step}: the container's cgroup is left"
        );
    }
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn bad_requests_name_the_field_and_leave_nothing() {
    let world = World::new().await;
    let pod = world.pod("bad").await;
    let mut no_metadata = world.container_config("x", &["true"]);
    no_metadata.metadata = None;
    let mut no_image = world.container_config("x", &["true"]);
    no_image.image = None;
    let mut relative_mount = world.container_config("x", &["true"]);
    relative_mount.mounts = vec![cri::Mount {
        container_path: "data".into(),
        host_path: "/tmp".into(),
        ..Default::default()
    }];
    for (what, config, code, field) in [
        ("metadata", no_metadata, Code::InvalidArgument, "metadata"),
        ("image", no_image, Code::InvalidArgument, "image"),
        (
            "mount",
            relative_mount,
            Code::InvalidArgument,
            "container_path",
        ),
    ] {
        let error = world.create(&pod, "x", config).await.expect_err(what);
        assert_eq!(error.code(), code, "{what}: {error:?}");
        assert!(error.message().contains(field), "{what}: {error:?}");
    }
    let mut unknown_image = world.container_config("x", &["true"]);
    unknown_image.image = Some(image_spec("127.0.0.1:1/nope:1"));
    let error = world
        .create(&pod, "x", unknown_image)
        .await
        .expect_err("unknown image");
    assert_eq!(error.code(), Code::NotFound);
    let error = world
        .create("no-such-pod", "x", world.container_config("x", &["true"]))
        .await
        .expect_err("unknown pod");
    assert_eq!(error.code(), Code::NotFound);
    // The same name twice in one pod: the second is refused.
    world
        .create(&pod, "twice", world.container_config("twice", &["true"]))
        .await
        .expect("first");
    let error = world
        .create(&pod, "twice", world.container_config("twice", &["true"]))
        .await
        .expect_err("second");
    assert_eq!(error.code(), Code::AlreadyExists);
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_tty_container_writes_its_terminal_output_to_the_log() {
    let world = World::new().await;
    let pod = world.pod("tty").await;
    let mut config = world.container_config(
        "term",
        // `tty` names the terminal in the container's own devpts (the first
        // pty of a new instance), and /dev/tty opens only on a controlling
        // terminal.
        &[
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && : >/dev/tty && echo on a terminal $(tty)",
        ],
    );
    config.tty = true;
    config.stdin = true;
    let id = world.run_config(&pod, config).await;
    let status = world.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let records = log_records(&world.log_file("tty", "term"));
    assert!(
        records
            .iter()
            .any(|(stream, tag, content)| stream == "stdout"
                && tag == "F"
                && content == "on a terminal /dev/pts/0"),
        "{records:?}"
    );
    world.finish(&[&pod]).await;
}
