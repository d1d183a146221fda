//! A container's log file stays inside its pod's `log_directory`: a
//! `log_path` that climbs out or is absolute is refused with
//! InvalidArgument naming the field, a symlinked directory inside the log
//! directory that points out makes CreateContainer fail (rolled back) and
//! ReopenContainerLog refuse, and nothing appears outside. The pods use the
//! node's network (no CNI, no bridge). Every test ends with nothing of its
//! own left.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use proto::cri;
use tonic::Code;

/// A directory outside every log directory that must stay empty.
fn outside() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("crid-e2e-logpath-outside-")
        .tempdir()
        .expect("outside dir")
}

/// Everything under `dir`, recursively, without following symlinks.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        out.push(path.clone());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(tree(&path));
        }
    }
    out.sort();
    out
}

#[track_caller]
fn assert_empty(dir: &Path) {
    assert_eq!(
        tree(dir),
        Vec::<PathBuf>::new(),
        "{} is not empty",
        dir.display()
    );
}

/// The pod's log directory, made as kubelet makes it before the pod.
fn log_directory(world: &World, pod_name: &str) -> PathBuf {
    let dir = world.logs.path().join(pod_name);
    std::fs::create_dir_all(&dir).expect("log directory");
    dir
}

/// Waits until `path` has a record whose content starts with `prefix`.
async fn wait_for_record(path: &Path, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log_records(path)
        .iter()
        .any(|(_, _, c)| c.starts_with(prefix))
    {
        assert!(
            Instant::now() < deadline,
            "no record {prefix:?} in {}: {:?}",
            path.display(),
            log_records(path)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reopen(world: &World, id: &str) -> Result<(), tonic::Status> {
    world
        .rt()
        .await
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.into(),
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn log_paths_that_leave_the_log_directory_are_refused() {
    let world = World::new().await;
    let outside = outside();
    let logs = log_directory(&world, "refused");
    let pod = world.pod("refused").await;
    // From the log directory up to `/`, then down into `outside`.
    let up = "../".repeat(logs.components().count() - 1);
    let inside_outside = outside.path().strip_prefix("/").expect("absolute");
    let absolute = outside.path().join("absolute.log");
    let refused = [
        format!("{up}{}/climbed.log", inside_outside.display()),
        format!("app/../../{up}{}/climbed.log", inside_outside.display()),
        "../refused-sibling.log".to_string(),
        absolute.display().to_string(),
        "app//0.log".to_string(),
        "app/0.log\0".to_string(),
    ];
    for log_path in &refused {
        let mut config = world.container_config("app", &["sh", "-c", "echo escaped"]);
        config.log_path = log_path.clone();
        let status = world.create(&pod, "app", config).await.expect_err(log_path);
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{log_path:?}: {status:?}"
        );
        assert!(
            status.message().contains("log_path")
                && status.message().contains(&format!("{log_path:?}")),
            "{log_path:?}: {status:?}"
        );
    }
    assert!(world.list(None).await.is_empty(), "nothing was recorded");
    assert_empty(outside.path());
    assert!(!world.logs.path().join("refused-sibling.log").exists());
    assert_empty(&logs);
    world.finish(&[&pod]).await;
    assert_empty(outside.path());
}

#[tokio::test]
async fn a_symlinked_directory_pointing_out_fails_the_create_and_is_rolled_back() {
    let world = World::new().await;
    let outside = outside();
    let logs = log_directory(&world, "symlinked");
    std::os::unix::fs::symlink(outside.path(), logs.join("app")).expect("symlink");
    // A relative link out too.
    let up = "../".repeat(logs.components().count() - 1);
    std::os::unix::fs::symlink(
        format!("{up}{}", outside.path().display()),
        logs.join("rel"),
    )
    .expect("symlink");
    let pod = world.pod("symlinked").await;
    for name in ["app", "rel"] {
        let mut config = world.container_config(name, &["sh", "-c", "echo escaped"]);
        config.log_path = format!("{name}/0.log");
        let status = world
            .create(&pod, name, config)
            .await
            .expect_err("a log directory that is a symlink out");
        assert!(
            status.message().contains("symlink"),
            "{name}: {status:?}\n{}",
            world.crid.log()
        );
        assert_empty(outside.path());
    }
    // Rolled back: no record (the name is free again), and `finish` checks
    // that no process, mount or layer of it is left.
    assert!(world.list(None).await.is_empty());
    let mut config = world.container_config("app", &["sh", "-c", "echo fine"]);
    config.log_path = "app-real/0.log".into();
    let id = world.run_config(&pod, config).await;
    world.wait_exited(&id).await;
    wait_for_record(&logs.join("app-real/0.log"), "fine").await;
    assert_empty(outside.path());
    world.finish(&[&pod]).await;
    assert_empty(outside.path());
}

#[tokio::test]
async fn logs_arrive_and_reopen_refuses_a_directory_swapped_for_a_symlink() {
    let world = World::new().await;
    let outside = outside();
    let logs = log_directory(&world, "reopen");
    let pod = world.pod("reopen").await;
    let mut config = world.container_config(
        "ticker",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    config.log_path = "ticker/0.log".into();
    let id = world.run_config(&pod, config).await;
    let log = logs.join("ticker/0.log");
    wait_for_record(&log, "tick").await;
    let (status, _) = world.status(&id).await;
    assert_eq!(Path::new(&status.log_path), log, "reported as joined");

    // The container's log directory swapped for a symlink out, then a
    // rotation request: refused, nothing outside, output still in the old
    // file.
    let old = logs.join("ticker.old");
    std::fs::rename(logs.join("ticker"), &old).expect("move away");
    std::os::unix::fs::symlink(outside.path(), logs.join("ticker")).expect("symlink");
    let status = reopen(&world, &id)
        .await
        .expect_err("reopen through a symlink");
    assert!(status.message().contains("symlink"), "{status:?}");
    let before = log_records(&old.join("0.log")).len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        log_records(&old.join("0.log")).len() > before,
        "the old file keeps the output"
    );
    assert_empty(outside.path());

    // The file itself a symlink out: refused too.
    std::fs::remove_file(logs.join("ticker")).expect("unlink");
    std::fs::create_dir(logs.join("ticker")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path().join("0.log"), &log).expect("symlink");
    reopen(&world, &id)
        .await
        .expect_err("reopen onto a symlinked file");
    assert_empty(outside.path());

    // A real rotation: the new file, inside, gets the output.
    std::fs::remove_file(&log).expect("unlink");
    reopen(&world, &id).await.expect("reopen");
    wait_for_record(&log, "tick").await;
    assert_empty(outside.path());

    world.finish(&[&pod]).await;
    assert_empty(outside.path());
}
