//! What one pod or container may not do to the whole node, checked against
//! the real crid: labels plus annotations over the configured cap are
//! refused naming the field; pods and containers that together would make
//! a List answer larger than kubelet reads (16 MiB) are refused with
//! ResourceExhausted, and ListPodSandbox/ListContainers keep answering; the
//! metadata file shrinks back once they are removed; a container with
//! 100 000 env entries is created and runs with all of them. Pods use the
//! node's network: no CNI, no bridge. Every test ends with nothing left.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use proto::cri;
use tonic::Code;

/// What kubelet's CRI client reads and sends at most.
const KUBELET_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const MIB: usize = 1024 * 1024;
/// The cap this test configures: above the default, so that three objects
/// fill what one List answer can carry.
const CAP_BYTES: usize = 6 * MIB;

/// A client with kubelet's message limits (the harness's has tonic's 4 MiB).
async fn kubelet(world: &World) -> Runtime {
    Runtime::new(world.crid.channel().await.expect("channel"))
        .max_decoding_message_size(KUBELET_MESSAGE_BYTES)
        .max_encoding_message_size(KUBELET_MESSAGE_BYTES)
}

/// One entry of `bytes` bytes, key included.
fn weighing(bytes: usize) -> HashMap<String, String> {
    HashMap::from([("example.com/blob".to_string(), "x".repeat(bytes - 16))])
}

async fn run_pod(
    world: &World,
    name: &str,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
) -> Result<String, tonic::Status> {
    let mut config = world.pod_config(name, cri::NamespaceMode::Container);
    config.labels = labels;
    config.annotations = annotations;
    kubelet(world)
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|response| response.into_inner().pod_sandbox_id)
}

async fn create_with(
    world: &World,
    pod: &str,
    name: &str,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
) -> Result<String, tonic::Status> {
    let mut config = world.container_config(name, &["sleep", "3600"]);
    config.labels.extend(labels);
    config.annotations = annotations;
    kubelet(world)
        .await
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .map(|response| response.into_inner().container_id)
}

fn assert_refused(result: Result<String, tonic::Status>, code: Code, needles: &[&str]) {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{needle:?} in {status:?}"
        );
    }
}

async fn list_pods(world: &World) -> Vec<cri::PodSandbox> {
    kubelet(world)
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox answers")
        .into_inner()
        .items
}

async fn list_containers(world: &World) -> Vec<cri::Container> {
    kubelet(world)
        .await
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .expect("ListContainers answers")
        .into_inner()
        .containers
}

#[tokio::test]
async fn oversized_metadata_is_refused_and_lists_keep_answering() {
    let world = World::with_config(&format!(
        "[runtime]\nmax_labels_annotations_bytes = {CAP_BYTES}\n"
    ))
    .await;
    let none = HashMap::<String, String>::new;
    let pod = run_pod(&world, "small", none(), weighing(1024))
        .await
        .expect("small pod");
    let small = create_with(&world, &pod, "small", none(), weighing(1024))
        .await
        .expect("small container");

    // Over the cap by one byte: refused, naming the field and the sizes.
    let over = CAP_BYTES + 1;
    assert_refused(
        run_pod(&world, "big-annotations", none(), weighing(over)).await,
        Code::InvalidArgument,
        &["config.annotations", &format!("annotations {over} bytes")],
    );
    assert_refused(
        run_pod(&world, "big-labels", weighing(over - 100), weighing(100)).await,
        Code::InvalidArgument,
        &["config.labels", &format!("at most {CAP_BYTES} bytes")],
    );
    assert_refused(
        create_with(&world, &pod, "big-labels", weighing(over), none()).await,
        Code::InvalidArgument,
        &["config.labels", "container"],
    );
    // The harness's own label counts too.
    let label_bytes: usize = (world.container_config("big-both", &[]).labels)
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    assert_refused(
        create_with(
            &world,
            &pod,
            "big-both",
            none(),
            weighing(over - label_bytes),
        )
        .await,
        Code::InvalidArgument,
        &["config.annotations", &format!("labels {label_bytes} bytes")],
    );

    // Three objects of 5 MiB (two pods, a container) fill what one List
    // answer may carry: the next pod or container is refused.
    let five = 5 * MIB;
    let full_a = run_pod(&world, "full-a", none(), weighing(five))
        .await
        .expect("first big pod");
    let full_b = run_pod(&world, "full-b", none(), weighing(five))
        .await
        .expect("second big pod");
    let big = create_with(&world, &pod, "big", none(), weighing(five))
        .await
        .expect("big container");
    assert_refused(
        run_pod(&world, "one-more", none(), weighing(MIB)).await,
        Code::ResourceExhausted,
        &["List", "pod sandbox"],
    );
    assert_refused(
        create_with(&world, &pod, "one-more", none(), weighing(MIB)).await,
        Code::ResourceExhausted,
        &["List", "container"],
    );

    // The lists still answer within kubelet's limit, every object in them.
    let pods = list_pods(&world).await;
    let mut ids: Vec<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![pod.as_str(), full_a.as_str(), full_b.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "the refused pods left nothing behind");
    let weight: usize = pods
        .iter()
        .map(|p| p.annotations.values().map(String::len).sum::<usize>())
        .sum();
    assert!(
        weight > 2 * five - 64,
        "{weight} bytes of annotations listed"
    );
    let containers = list_containers(&world).await;
    let mut ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![small.as_str(), big.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // Removing a big pod makes room again, and once enough is removed the
    // metadata file shrinks back.
    let db = world.env.root().join("metadata.redb");
    let full_size = std::fs::metadata(&db).expect("metadata.redb").len();
    world.remove_pod(&full_a).await;
    let again = run_pod(&world, "again", none(), weighing(MIB))
        .await
        .expect("room after a removal");
    world.remove_pod(&again).await;
    world.remove_pod(&full_b).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let size = std::fs::metadata(&db).expect("metadata.redb").len();
        if size < full_size / 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metadata.redb still {size} bytes (was {full_size} when full)\n{}",
            world.crid.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(world.crid.log().contains("metadata store compacted"));

    // `finish` lists with the harness's 4 MiB client: the big container goes
    // first.
    kubelet(&world)
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: big.clone(),
        })
        .await
        .expect("remove big container");
    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn a_container_with_100000_env_entries_is_created_and_runs_with_them() {
    const ENTRIES: usize = 100_000;
    let world = World::new().await;
    let pod = world.pod("env").await;
    let mut config = world.container_config("env", &["sleep", "3600"]);
    // Short keys: execve takes at most a quarter of the stack limit for
    // arguments and environment, pointers included.
    config.envs = (0..ENTRIES)
        .map(|i| cri::KeyValue {
            key: format!("E{i}"),
            value: Vec::new(),
        })
        .collect();
    // One overrides the image's value in place; one repeats a key.
    config.envs.push(cri::KeyValue {
        key: "OVERRIDDEN".into(),
        value: "request".into(),
    });
    config.envs.push(cri::KeyValue {
        key: "E7".into(),
        value: "seven".into(),
    });
    let id = kubelet(&world)
        .await
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .unwrap_or_else(|e| panic!("create: {e:?}\n{}", world.crid.log()))
        .into_inner()
        .container_id;

    // The spec has every entry: the image's three, HOSTNAME, the request's
    // distinct keys (OVERRIDDEN and E7 set again in place), HOME.
    let status = kubelet(&world)
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(&status.info["info"]).expect("verbose info is JSON");
    let env: Vec<&str> = info["runtimeSpec"]["process"]["env"]
        .as_array()
        .expect("env in the spec")
        .iter()
        .filter_map(|entry| entry.as_str())
        .collect();
    let expected = 3 + 1 + ENTRIES + 1;
    assert_eq!(env.len(), expected);
    assert_eq!(
        &env[..3],
        ["PATH=/bin", "FROM_IMAGE=image", "OVERRIDDEN=request"]
    );
    // The node's hostname: the harness's pods use the node's network.
    assert!(env[3].starts_with("HOSTNAME="), "{}", env[3]);
    assert_eq!(env[4], "E0=");
    assert_eq!(env[4 + 7], "E7=seven");
    assert_eq!(env[expected - 1], "HOME=/root", "busybox's root");

    // And the container runs with them all. `env` itself, not through a
    // shell: busybox's sh imports each variable with a scan of the others.
    world.start(&id).await.expect("start");
    let out = world.exec(&id, &["env"], 60).await.expect("exec env");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Vec<&str> = stdout.lines().collect();
    assert_eq!(seen.len(), expected, "the exec has the spec's env");
    let request_entries = seen
        .iter()
        .filter(|line| {
            line.starts_with('E') && line.as_bytes().get(1).is_some_and(u8::is_ascii_digit)
        })
        .count();
    assert_eq!(request_entries, ENTRIES);
    assert!(seen.contains(&"E7=seven") && seen.contains(&"OVERRIDDEN=request"));
    world.finish(&[&pod]).await;
}
