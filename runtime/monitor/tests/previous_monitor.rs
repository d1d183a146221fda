//! A pod started before an upgrade: the crid-monitor of protocol version 1
//! (built from git, commit 2e9b506, main before version 2) keeps working
//! with this crid's MonitorClient, which speaks only version 1 to it and
//! refuses version 2 requests without sending them.
//!
//! The previous binary is built here (`cargo build --locked`, which may
//! fetch the crates its lock file names) into
//! `target/previous-monitor`, kept across runs. Without git history or a
//! working build the test fails: it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ALL, Cleanup, busybox_container, config, run, shut_down};
use proto::monitor::{
    CONFIG_FILE, ErrorKind, ExitStatus, FIRST_PROTOCOL_VERSION, MonitorConfig, MonitorRequest,
    MonitorResponse, MonitorStarted,
};
use runtime::{MonitorClient, MonitorError, StartedMonitor};

/// main before protocol version 2.
const PREVIOUS: &str = "2e9b506";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace dir")
}

fn check(what: &str, output: std::io::Result<std::process::Output>) {
    let output = output.unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The previous crid-monitor binary, built from git once and then reused.
fn previous_monitor() -> PathBuf {
    let workspace = workspace();
    let target = workspace.join("target/previous-monitor");
    let source = target.join(format!("source-{PREVIOUS}"));
    if !source.join("Cargo.toml").exists() {
        std::fs::create_dir_all(&target).expect("target/previous-monitor");
        // Unpacked beside, then renamed: a run that dies half-way leaves
        // no half source behind for the next to trust.
        let staging = tempfile::tempdir_in(&target).expect("staging dir");
        let mut archive = Command::new("git")
            .arg("-C")
            .arg(&workspace)
            .args(["archive", "--format=tar", PREVIOUS])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("git archive {PREVIOUS}: cannot run git: {e}"));
        let tar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(staging.path())
            .stdin(archive.stdout.take().expect("git's stdout"))
            .output();
        let archived = archive.wait().expect("git archive");
        assert!(
            archived.success(),
            "git archive {PREVIOUS} failed ({archived}): this test needs the git history \
             of {} with commit {PREVIOUS}",
            workspace.display()
        );
        check("tar -x", tar);
        std::fs::rename(staging.keep(), &source).expect("moving the source in place");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    check(
        &format!("building crid-monitor of {PREVIOUS}"),
        Command::new(cargo)
            .arg("build")
            // Not --offline: on a fresh machine the old lock file's crates
            // (crates.io h2, before the vendor/h2 fork) are not cached yet.
            .arg("--locked")
            .args(["-p", "crid-monitor"])
            .arg("--manifest-path")
            .arg(source.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null())
            .output(),
    );
    let binary = target.join("debug/crid-monitor");
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

/// `binary <pod dir>`, as crid started its monitor before it passed the
/// pod dir as the working directory (a monitor of then requires the
/// argument); its pids once it reports ready.
fn start_as_before(binary: &Path, pod_dir: &Path, config: &MonitorConfig) -> StartedMonitor {
    std::fs::write(
        pod_dir.join(CONFIG_FILE),
        serde_json::to_vec(config).expect("config json"),
    )
    .expect("write config");
    let output = Command::new(binary)
        .arg(pod_dir)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("run the previous monitor");
    let stdout = String::from_utf8_lossy(&output.stdout);
    match serde_json::from_str(stdout.trim()) {
        Ok(MonitorStarted::Ready {
            monitor_pid,
            pause_pid,
        }) => StartedMonitor {
            monitor_pid,
            pause_pid,
        },
        other => panic!(
            "the previous monitor did not start: {other:?}, {}, stdout {stdout:?}, stderr {:?}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[tokio::test]
async fn a_monitor_of_protocol_version_1_keeps_working_with_this_client() {
    let binary = tokio::task::spawn_blocking(previous_monitor)
        .await
        .expect("build");
    let dir = tempfile::tempdir().expect("tempdir");
    let pod_dir = dir.path().join("pod");
    std::fs::create_dir(&pod_dir).expect("pod dir");

    // Started as the previous crid did, with the pod dir as its argument;
    // the `protocol` field it did not write is ignored by that monitor.
    let mut v1_config = config(ALL);
    v1_config.protocol = FIRST_PROTOCOL_VERSION;
    let started = start_as_before(&binary, &pod_dir, &v1_config);
    let _cleanup = Cleanup(started);
    // And the config as the previous crid wrote it, without the field: a
    // client made after the upgrade learns version 1 from it.
    let config_path = pod_dir.join(CONFIG_FILE);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("read config")).expect("json");
    json.as_object_mut()
        .expect("config object")
        .remove("protocol");
    std::fs::write(&config_path, json.to_string()).expect("write config");
    let client = MonitorClient::new(&pod_dir);
    assert_eq!(
        client.protocol_version().await.expect("version"),
        FIRST_PROTOCOL_VERSION
    );

    // Version 2 requests are refused here, never sent.
    for refused in [
        client.subscribe().await.map(|_| ()),
        client.hello().await.map(|_| ()),
    ] {
        match refused {
            Err(MonitorError::Unsupported {
                monitor_version: 1, ..
            }) => {}
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    let app = busybox_container(dir.path(), "app", &["sh", "-c", "echo hello; sleep 1000"]);
    let log = app.log.as_ref().expect("log").path();
    let started_at = run(&client, app).await;
    assert!(started_at > 0);

    let exec = MonitorRequest::Exec {
        id: "app".into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            "echo out; echo err >&2; exit 4".into(),
        ],
        timeout_ms: 30_000,
    };
    assert_eq!(
        client.request(&exec).await.expect("exec"),
        MonitorResponse::ExecResult {
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
            exit: Some(ExitStatus::Exited(4)),
        }
    );
    // A version 1 refusal: a message without a kind.
    match client
        .request(&MonitorRequest::StartContainer { id: "nope".into() })
        .await
    {
        Err(MonitorError::Refused {
            kind: ErrorKind::Unknown,
            message,
            ..
        }) => assert!(message.contains("nope"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match client
        .request(&MonitorRequest::Wait {
            id: "app".into(),
            timeout_ms: 0,
        })
        .await
        .expect("wait")
    {
        MonitorResponse::StillRunning => {}
        other => panic!("expected StillRunning, got {other:?}"),
    }

    client
        .request(&MonitorRequest::Signal {
            id: "app".into(),
            signal: libc::SIGKILL,
        })
        .await
        .expect("signal");
    let wait = MonitorRequest::Wait {
        id: "app".into(),
        timeout_ms: 20_000,
    };
    let exit = match client
        .request_within(&wait, Duration::from_secs(30))
        .await
        .expect("wait")
    {
        MonitorResponse::Exited(exit) => exit,
        other => panic!("expected the exit, got {other:?}"),
    };
    assert_eq!(exit.status, ExitStatus::Signaled(libc::SIGKILL));
    match client
        .request(&MonitorRequest::Containers)
        .await
        .expect("containers")
    {
        MonitorResponse::Containers(states) => {
            assert_eq!(states.len(), 1);
            assert_eq!(states[0].exit, Some(exit));
        }
        other => panic!("expected Containers, got {other:?}"),
    }
    let logged = std::fs::read_to_string(&log).expect("the container's log");
    assert!(logged.contains("stdout F hello"), "{logged:?}");

    client
        .request(&MonitorRequest::RemoveContainer { id: "app".into() })
        .await
        .expect("remove");
    shut_down(&client, started).await;
}
