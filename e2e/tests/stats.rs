//! Container and pod stats over CRI and on `/metrics`, from a real crid
//! running real containers: a busy container holding 20 MiB shows rising
//! CPU and its working set in ContainerStats and on the endpoint (read by
//! a Prometheus text parser, every line of it), a removed container leaves
//! it, unknown ids are NotFound, and a pod's network counters rise when the
//! test sends the pod datagrams.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use proto::cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

fn metrics_address(world: &World) -> String {
    world.crid.metrics_address().unwrap_or_else(|| {
        panic!(
            "crid did not log its /metrics address:\n{}",
            world.crid.log()
        )
    })
}

/// GET `path` from `address` over HTTP/1.0 (the server closes when done):
/// the head and the body.
async fn http_get(address: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    Ok((head.to_owned(), body.to_owned()))
}

/// GET /metrics as a scraper that does not ask for OpenMetrics: the
/// body, after checking the status and content type.
async fn scrape(address: &str) -> String {
    let (head, body) = http_get(address, "/metrics").await.expect("GET /metrics");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// Parses the whole text with a Prometheus text-format parser and checks
/// it read every sample line.
fn parse(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus text format body");
    let sample_lines = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .count();
    let missing: Vec<&str> = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| !scrape.samples.iter().any(|s| line.starts_with(&s.metric)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {sample_lines} lines not read: {missing:?}",
        missing.len()
    );
    scrape
}

fn number(value: &prometheus_parse::Value) -> f64 {
    match value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("not a plain number: {other:?}"),
    }
}

/// The value of `metric` for the container or pod `name` (crid's id).
fn series(scrape: &prometheus_parse::Scrape, metric: &str, name: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|sample| sample.metric == metric && sample.labels.get("name") == Some(name))
        .map(|sample| number(&sample.value))
}

/// The value of crid's own `metric` whose labels include `labels`.
fn own(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == metric
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .map(|sample| number(&sample.value))
}

async fn container_stats(world: &World, id: &str) -> Result<cri::ContainerStats, tonic::Status> {
    world
        .rt()
        .await
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.into(),
        })
        .await
        .map(|response| response.into_inner().stats.expect("stats"))
}

fn cpu_ns(stats: &cri::ContainerStats) -> u64 {
    stats
        .cpu
        .as_ref()
        .and_then(|cpu| cpu.usage_core_nano_seconds)
        .map(|v| v.value)
        .unwrap_or(0)
}

fn working_set(stats: &cri::ContainerStats) -> u64 {
    stats
        .memory
        .as_ref()
        .and_then(|memory| memory.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0)
}

/// Polls `check` until it gives a value (bounded: crid that never shows
/// it fails; a slow machine does not).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_busy_container_shows_rising_cpu_and_its_working_set_until_removed() {
    let world = World::new().await;
    let pod = world.pod("stats").await;
    // 20 MiB in the pod's /dev/shm (tmpfs: never inactive file pages, so
    // all working set), then a busy loop.
    let busy = world
        .run(
            &pod,
            "busy",
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/dev/shm/fill bs=1048576 count=20 2>/dev/null; while :; do :; done",
            ],
        )
        .await;
    let idle = world.run(&pod, "idle", &["sleep", "3600"]).await;

    let first = eventually("20 MiB of working set", || async {
        let stats = container_stats(&world, &busy)
            .await
            .expect("ContainerStats");
        (working_set(&stats) >= 20 * MIB && cpu_ns(&stats) > 0).then_some(stats)
    })
    .await;
    let attributes = first.attributes.as_ref().expect("attributes");
    assert_eq!(attributes.id, busy);
    assert_eq!(attributes.metadata.as_ref().expect("metadata").name, "busy");
    let memory = first.memory.as_ref().expect("memory");
    assert!(memory.usage_bytes.expect("usage").value >= working_set(&first));
    assert!(first.writable_layer.is_some(), "{first:?}");
    let later = eventually("CPU rising", || async {
        let stats = container_stats(&world, &busy)
            .await
            .expect("ContainerStats");
        (cpu_ns(&stats) > cpu_ns(&first)).then_some(stats)
    })
    .await;
    let nano_cores = later
        .cpu
        .as_ref()
        .and_then(|cpu| cpu.usage_nano_cores)
        .expect("a rate once two samples exist")
        .value;
    assert!(nano_cores > 0, "{later:?}");

    // The List, whole and filtered.
    let list = |filter: cri::ContainerStatsFilter| {
        let world = &world;
        async move {
            world
                .rt()
                .await
                .list_container_stats(cri::ListContainerStatsRequest {
                    filter: Some(filter),
                })
                .await
                .map(|response| {
                    let mut ids: Vec<String> = response
                        .into_inner()
                        .stats
                        .into_iter()
                        .filter_map(|stats| stats.attributes.map(|a| a.id))
                        .collect();
                    ids.sort();
                    ids
                })
        }
    };
    let mut both = vec![busy.clone(), idle.clone()];
    both.sort();
    let all = list(cri::ContainerStatsFilter::default())
        .await
        .expect("list");
    assert_eq!(all, both);
    let by_pod = list(cri::ContainerStatsFilter {
        pod_sandbox_id: pod[..12].into(),
        ..Default::default()
    })
    .await
    .expect("list by pod");
    assert_eq!(by_pod, both);
    let by_label = list(cri::ContainerStatsFilter {
        label_selector: HashMap::from([("ctr".to_string(), "idle".to_string())]),
        ..Default::default()
    })
    .await
    .expect("list by label");
    assert_eq!(by_label, vec![idle.clone()]);
    let error = list(cri::ContainerStatsFilter {
        id: "not hex".into(),
        ..Default::default()
    })
    .await
    .expect_err("a malformed id filter");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("filter.id"), "{error:?}");

    // The pod: its own cgroup's figures and its containers'.
    let pod_stats = world
        .rt()
        .await
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("stats");
    let linux = pod_stats.linux.expect("linux");
    assert_eq!(linux.containers.len(), 2);
    let pod_memory = linux
        .memory
        .and_then(|m| m.working_set_bytes)
        .expect("memory");
    assert!(pod_memory.value >= 20 * MIB, "{pod_memory:?}");
    assert!(
        linux
            .process
            .and_then(|p| p.process_count)
            .expect("processes")
            .value
            >= 2
    );

    // /metrics, parsed whole.
    let address = metrics_address(&world);
    let scraped = eventually("the busy container on /metrics", || async {
        let scrape = parse(&scrape(&address).await);
        let working_set = series(&scrape, "container_memory_working_set_bytes", &busy)?;
        (working_set >= (20 * MIB) as f64).then_some(scrape)
    })
    .await;
    let cpu = series(&scraped, "container_cpu_usage_seconds_total", &busy).expect("cpu series");
    assert!(cpu > 0.0);
    let labels = &scraped
        .samples
        .iter()
        .find(|s| {
            s.metric == "container_cpu_usage_seconds_total" && s.labels.get("name") == Some(&busy)
        })
        .expect("cpu sample")
        .labels;
    assert_eq!(labels.get("container"), Some("busy"));
    assert_eq!(labels.get("pod"), Some("stats"));
    assert_eq!(labels.get("namespace"), Some("default"));
    assert_eq!(labels.get("image"), Some(world.image.as_str()));
    assert!(
        labels.get("id").is_some_and(|id| id.ends_with(&busy)),
        "{labels:?}"
    );
    assert!(series(&scraped, "container_memory_working_set_bytes", &idle).is_some());
    let rpc = scraped
        .samples
        .iter()
        .find(|s| {
            s.metric == "crid_rpc_duration_seconds_count"
                && s.labels.get("method") == Some("ContainerStats")
                && s.labels.get("code") == Some("Ok")
        })
        .expect("crid's own RPC metrics");
    assert!(number(&rpc.value) >= 2.0);
    let cpu_later = eventually("CPU rising on /metrics", || async {
        let scrape = parse(&scrape(&address).await);
        series(&scrape, "container_cpu_usage_seconds_total", &busy).filter(|&later| later > cpu)
    })
    .await;
    assert!(cpu_later > cpu);

    // Removed: gone from /metrics and from the List, NotFound alone.
    world.stop(&busy, 0).await;
    world
        .rt()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: busy.clone(),
        })
        .await
        .expect("remove");
    let after = parse(&scrape(&address).await);
    assert!(
        !after
            .samples
            .iter()
            .any(|s| s.labels.get("name") == Some(busy.as_str())),
        "a removed container's series remain"
    );
    assert!(series(&after, "container_memory_working_set_bytes", &idle).is_some());
    assert_eq!(
        list(cri::ContainerStatsFilter::default())
            .await
            .expect("list"),
        vec![idle.clone()]
    );
    for id in [busy.as_str(), "0123456789abcdef"] {
        let error = container_stats(&world, id).await.expect_err("gone");
        assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
    }

    // An exited container is answered without figures, and left out of Lists.
    world.stop(&idle, 0).await;
    let exited = container_stats(&world, &idle)
        .await
        .expect("ContainerStats");
    assert_eq!(exited.attributes.expect("attributes").id, idle);
    assert!(
        list(cri::ContainerStatsFilter::default())
            .await
            .expect("list")
            .is_empty()
    );

    world.finish(&[&pod]).await;
}

#[tokio::test]
async fn metric_descriptors_name_cadvisors_metrics() {
    let world = World::new().await;
    let descriptors = world
        .rt()
        .await
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors;
    let names: Vec<&str> = descriptors.iter().map(|d| d.name.as_str()).collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_oom_events_total",
        "container_network_receive_bytes_total",
        "container_spec_memory_limit_bytes",
        "container_processes",
        "container_blkio_device_usage_total",
        "container_fs_reads_bytes_total",
        "container_fs_writes_total",
        "container_fs_inodes_total",
        "container_fs_limit_bytes",
        "container_memory_max_usage_bytes",
        "container_memory_mapped_file",
        "container_memory_kernel_usage",
        "container_spec_memory_swap_limit_bytes",
        "container_threads",
        "container_threads_max",
        "container_file_descriptors",
        "container_sockets",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for descriptor in &descriptors {
        assert!(!descriptor.help.is_empty(), "{descriptor:?}");
        assert!(!descriptor.label_keys.is_empty(), "{descriptor:?}");
    }
    let pod = world.pod("metricsp").await;
    let container = world.run(&pod, "sleeper", &["sleep", "3600"]).await;
    let pod_metrics = world
        .rt()
        .await
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    let ours = pod_metrics
        .iter()
        .find(|metrics| metrics.pod_sandbox_id == pod)
        .expect("our pod");
    let metrics = &ours
        .container_metrics
        .iter()
        .find(|metrics| metrics.container_id == container)
        .expect("our container")
        .metrics;
    let memory = metrics
        .iter()
        .find(|metric| metric.name == "container_memory_usage_bytes")
        .expect("memory usage");
    let descriptor = descriptors
        .iter()
        .find(|d| d.name == memory.name)
        .expect("described");
    assert_eq!(memory.label_values.len(), descriptor.label_keys.len());
    assert!(memory.value.expect("value").value > 0);
    // The series read from procfs, the pids controller and the layer's
    // filesystem, each with one value per label key.
    for name in [
        "container_file_descriptors",
        "container_threads",
        "container_fs_inodes_total",
        "container_fs_limit_bytes",
        "container_memory_mapped_file",
    ] {
        let metric = metrics
            .iter()
            .find(|metric| metric.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let keys = &descriptors
            .iter()
            .find(|d| d.name == name)
            .expect("described")
            .label_keys;
        assert_eq!(metric.label_values.len(), keys.len(), "{name}");
        if name != "container_memory_mapped_file" {
            assert!(metric.value.expect("value").value > 0, "{name}");
        }
    }
    world.finish(&[&pod]).await;
}

/// The pod's `eth0` rx bytes, from ListPodSandboxStats filtered to it.
async fn pod_rx_bytes(world: &World, pod: &str) -> u64 {
    let stats = world
        .rt()
        .await
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: pod.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats;
    assert_eq!(stats.len(), 1, "{stats:?}");
    let network = stats[0]
        .linux
        .as_ref()
        .and_then(|linux| linux.network.clone())
        .expect("network stats");
    let default = network.default_interface.expect("default interface");
    assert_eq!(default.name, "eth0");
    default.rx_bytes.expect("rx bytes").value
}

/// Runs a pod with a network namespace of its own (CNI ADD on the env's
/// bridge network).
async fn run_networked_pod(world: &World, name: &str) -> String {
    let mut config = world.pod_config(name, cri::NamespaceMode::Container);
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .and_then(|context| context.namespace_options.as_mut())
    {
        options.network = cri::NamespaceMode::Pod.into();
    }
    world
        .rt()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id
}

#[tokio::test]
async fn pod_network_counters_rise_when_the_pod_is_sent_traffic() {
    let world = World::new().await;
    world.env.bridge_network("cridst0", "10.251.150.0/24");
    let pod = run_networked_pod(&world, "pinged").await;
    let ip = world
        .rt()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .expect("status")
        .into_inner()
        .status
        .and_then(|status| status.network)
        .expect("network")
        .ip;
    assert!(ip.starts_with("10.251.150."), "{ip}");

    let before = pod_rx_bytes(&world, &pod).await;
    // Five datagrams to the discard port: they reach the pod's eth0
    // whether or not anything listens there.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    for _ in 0..5 {
        socket
            .send_to(&[7u8; 100], (ip.as_str(), 9))
            .expect("send to the pod");
    }
    // All five datagrams of 100 bytes of payload, once the collector's
    // sample is renewed.
    let after = eventually("rx bytes rising by the datagrams", || async {
        let now = pod_rx_bytes(&world, &pod).await;
        (now >= before + 5 * 100).then_some(now)
    })
    .await;

    let address = metrics_address(&world);
    let scrape = parse(&scrape(&address).await);
    let rx = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "container_network_receive_bytes_total"
                && s.labels.get("name") == Some(pod.as_str())
                && s.labels.get("interface") == Some("eth0")
        })
        .expect("the pod's network on /metrics");
    assert!(number(&rx.value) >= after as f64);

    world.finish(&[&pod]).await;
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_crid_naming_the_key() {
    let env = e2e::TestEnv::new();
    // Taken by the test for as long as crid tries it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address");
    let drop_ins = env.path().join("config.d");
    std::fs::create_dir_all(&drop_ins).expect("config.d");
    std::fs::write(
        drop_ins.join("10-metrics.toml"),
        format!("[metrics]\naddress = \"{address}\"\n"),
    )
    .expect("drop-in");
    let (status, stderr) = env.run_to_exit(&mut env.command(&[]));
    assert!(!status.success(), "crid started on a taken metrics address");
    assert!(
        stderr.contains("[metrics] address") && stderr.contains(&address.to_string()),
        "{stderr}"
    );
    assert!(!env.socket().exists(), "a refused crid left its socket");
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}

#[tokio::test]
async fn an_oom_kill_inside_a_running_container_is_counted() {
    let world = World::new().await;
    let pod = world.pod("oomcount").await;
    // The hog is killed; the container's shell lives on, so its series stay.
    let mut config =
        world.container_config("survivor", &["sh", "-c", "tail /dev/zero; sleep 3600"]);
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 * 1024 * 1024,
            ..Default::default()
        });
    }
    let id = world.run_config(&pod, config).await;
    let address = metrics_address(&world);
    let (ooms, limit) = eventually("an OOM event on /metrics", || async {
        let scrape = parse(&scrape(&address).await);
        let ooms = series(&scrape, "container_oom_events_total", &id)?;
        let limit = series(&scrape, "container_spec_memory_limit_bytes", &id)?;
        (ooms >= 1.0).then_some((ooms, limit))
    })
    .await;
    assert!(ooms >= 1.0);
    assert_eq!(limit, (16 * MIB) as f64);
    let stats = container_stats(&world, &id).await.expect("still running");
    let memory = stats.memory.expect("memory");
    let available = memory
        .available_bytes
        .expect("a limit, so available bytes")
        .value;
    assert!(available <= 16 * MIB, "{available}");
    world.finish(&[&pod]).await;
}

/// crid's own pod and container gauges, by state.
fn states(scrape: &prometheus_parse::Scrape) -> (Vec<f64>, Vec<f64>) {
    let get = |metric: &str, state: &str| {
        own(scrape, metric, &[("state", state)])
            .unwrap_or_else(|| panic!("{metric}{{state={state:?}}} missing"))
    };
    (
        ["ready", "notready"]
            .iter()
            .map(|state| get("crid_pods", state))
            .collect(),
        ["created", "running", "exited", "unknown"]
            .iter()
            .map(|state| get("crid_containers", state))
            .collect(),
    )
}

async fn pull(world: &World, image: &str) -> Result<(), tonic::Status> {
    world
        .crid
        .images()
        .await
        .expect("image client")
        .pull_image(cri::PullImageRequest {
            image: Some(image_spec(image)),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// crid's own metrics on /metrics follow what it does: image pulls by
/// outcome with their bytes and layers, a pod's CNI ADD and DEL, and the
/// pod and container counts by state through a lifecycle.
#[tokio::test]
async fn crids_own_metrics_follow_pulls_cni_and_states() {
    let world = World::new().await;
    world.env.bridge_network("cridom0", "10.251.151.0/24");
    let address = metrics_address(&world);
    let pulled = |outcome: &'static str| {
        move |scrape: &prometheus_parse::Scrape| {
            own(
                scrape,
                "crid_image_pull_duration_seconds_count",
                &[("outcome", outcome)],
            )
            .unwrap_or(0.0)
        }
    };
    let layers = |how: &'static str| {
        move |scrape: &prometheus_parse::Scrape| {
            own(scrape, "crid_image_pull_layers_total", &[("how", how)]).unwrap_or(0.0)
        }
    };

    // The world's one pull: busybox and its applets, two layers.
    let first = parse(&scrape(&address).await);
    assert_eq!(pulled("success")(&first), 1.0);
    assert_eq!(pulled("failure")(&first), 0.0);
    assert_eq!(layers("fetched")(&first), 2.0);
    assert_eq!(layers("reused")(&first), 0.0);
    let bytes = own(&first, "crid_image_pull_bytes_total", &[]).expect("pull bytes");
    assert!(bytes > 0.0, "{bytes}");
    assert_eq!(states(&first), (vec![0.0; 2], vec![0.0; 4]));

    // Pulled again: its layers are reused. A missing image fails.
    pull(&world, &world.image).await.expect("pull again");
    let missing = world.image.replace("e2e/ctr", "e2e/missing");
    assert_ne!(missing, world.image);
    pull(&world, &missing).await.expect_err("no such image");
    let again = parse(&scrape(&address).await);
    assert_eq!(pulled("success")(&again), 2.0);
    assert_eq!(pulled("failure")(&again), 1.0);
    assert_eq!(layers("fetched")(&again), 2.0);
    assert_eq!(layers("reused")(&again), 2.0);

    // A pod on the bridge network: one CNI ADD, and a ready pod.
    let cni = |operation: &'static str| {
        move |scrape: &prometheus_parse::Scrape| {
            own(
                scrape,
                "crid_cni_duration_seconds_count",
                &[("operation", operation), ("outcome", "success")],
            )
            .unwrap_or(0.0)
        }
    };
    let pod = run_networked_pod(&world, "counted").await;
    let running = world.run(&pod, "sleeper", &["sleep", "3600"]).await;
    let created = world
        .create(
            &pod,
            "idle",
            world.container_config("idle", &["sleep", "3600"]),
        )
        .await
        .expect("create");
    let scraped = parse(&scrape(&address).await);
    assert_eq!(cni("ADD")(&scraped), 1.0);
    assert_eq!(cni("DEL")(&scraped), 0.0);
    assert_eq!(states(&scraped), (vec![1.0, 0.0], vec![1.0, 1.0, 0.0, 0.0]));

    world.stop(&running, 0).await;
    let scraped = parse(&scrape(&address).await);
    assert_eq!(states(&scraped), (vec![1.0, 0.0], vec![1.0, 0.0, 1.0, 0.0]));

    // Stopped: its network is DEL'd, and it is not ready.
    world.stop_pod(&pod).await;
    let scraped = parse(&scrape(&address).await);
    assert!(cni("DEL")(&scraped) >= 1.0);
    assert_eq!(states(&scraped).0, vec![0.0, 1.0]);
    assert!(
        !scraped
            .samples
            .iter()
            .any(|s| s.metric == "crid_cni_errors_total" && number(&s.value) > 0.0),
        "no CNI errors"
    );

    // Removed: nothing counted any more.
    world.remove_pod(&pod).await;
    let scraped = parse(&scrape(&address).await);
    assert_eq!(states(&scraped), (vec![0.0; 2], vec![0.0; 4]));
    drop(created);
    world.finish(&[]).await;
}

/// A container the OOM killer ends is counted once, however often crid
/// looks at it.
#[tokio::test]
async fn an_oom_killed_container_is_counted_once() {
    let world = World::new().await;
    let pod = world.pod("oomkilled").await;
    // busybox's tail keeps the line it reads: /dev/zero has no end of line.
    let mut config = world.container_config("hog", &["tail", "/dev/zero"]);
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 * 1024 * 1024,
            ..Default::default()
        });
    }
    let id = world.run_config(&pod, config).await;
    let status = world.wait_exited(&id).await;
    assert_eq!(status.reason, "OOMKilled", "{status:?}");
    let address = metrics_address(&world);
    for _ in 0..2 {
        let scraped = parse(&scrape(&address).await);
        assert_eq!(
            own(&scraped, "crid_container_oom_kills_total", &[]),
            Some(1.0)
        );
        assert_eq!(states(&scraped).1, vec![0.0, 0.0, 1.0, 0.0]);
    }
    world.finish(&[&pod]).await;
}

/// A pod's crid-monitor killed is counted as a monitor death.
#[tokio::test]
async fn a_dead_monitor_is_counted() {
    let world = World::new().await;
    let pod = world.pod("monitorless").await;
    world.run(&pod, "sleeper", &["sleep", "3600"]).await;
    let address = metrics_address(&world);
    let scraped = parse(&scrape(&address).await);
    assert_eq!(own(&scraped, "crid_monitor_deaths_total", &[]), Some(0.0));
    let (_, info) = world.pod_status(&pod).await;
    let monitor = info["monitorPid"].as_i64().expect("monitorPid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(monitor).expect("a pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the monitor");
    eventually("the monitor's death counted", || async {
        let scraped = parse(&scrape(&address).await);
        (own(&scraped, "crid_monitor_deaths_total", &[]) == Some(1.0)).then_some(())
    })
    .await;
    world.finish(&[&pod]).await;
}

/// A Prometheus server (Debian's package) run by the test on 127.0.0.1,
/// scraping crid only; killed, with its storage, when dropped.
struct Prometheus {
    child: std::sync::Mutex<std::process::Child>,
    address: String,
    dir: tempfile::TempDir,
}

const PROMETHEUS: &str = "/usr/bin/prometheus";

impl Prometheus {
    /// Scrapes `target` every second. Its only outbound traffic is that
    /// scrape: no other target, no remote write, no alerting.
    fn start(target: &str) -> Prometheus {
        assert!(
            std::path::Path::new(PROMETHEUS).is_file(),
            "{PROMETHEUS} is missing: run scripts/install-prerequisites (Debian's prometheus package)"
        );
        assert!(target.starts_with("127.0.0.1:"), "{target}");
        let dir = tempfile::Builder::new()
            .prefix("crid-e2e-prometheus-")
            .tempdir()
            .expect("prometheus dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: crid\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus.yml");
        // A free port: the kernel's pick, let go just before Prometheus binds it.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .to_string();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = std::process::Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child: std::sync::Mutex::new(child),
            address,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET an API path: its JSON, or why not.
    async fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let (head, body) = http_get(&self.address, path)
            .await
            .map_err(|error| error.to_string())?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{head}\n{body}"));
        }
        serde_json::from_str(&body).map_err(|error| format!("{error}: {body}"))
    }

    /// The result vector of an instant query.
    async fn query(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let answer = self.api(&format!("/api/v1/query?query={encoded}")).await?;
        answer["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no result: {answer}"))
    }

    /// Polls until `check` gives a value; on the deadline, fails with the
    /// last answer and Prometheus's log.
    async fn until<T, F>(&self, what: &str, mut check: impl FnMut() -> F) -> T
    where
        F: std::future::Future<Output = Result<Option<T>, String>>,
    {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match check().await {
                Ok(Some(value)) => return value,
                Ok(None) => "not yet".to_string(),
                Err(error) => error,
            };
            if let Some(status) = self.exited() {
                panic!(
                    "prometheus exited ({status}) before {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 60 s; last answer: {last}\nprometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_wait()
            .ok()
            .flatten()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A real Prometheus scrapes crid: its target is up, and a running
/// container's series and crid's own are found through its query API.
#[tokio::test]
async fn a_real_prometheus_finds_the_container_series_and_crids_own() {
    let world = World::new().await;
    let pod = world.pod("scraped").await;
    let id = world.run(&pod, "sleeper", &["sleep", "3600"]).await;
    let address = metrics_address(&world);
    let prometheus = Prometheus::start(&address);
    let dir = prometheus.dir.path().to_owned();

    let targets = prometheus
        .until("crid's target up", || async {
            let answer = prometheus.api("/api/v1/targets").await?;
            let active = answer["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let up = active.iter().any(|target| {
                target["health"] == "up"
                    && target["scrapeUrl"] == format!("http://{address}/metrics")
            });
            Ok(up.then_some(active))
        })
        .await;
    assert_eq!(targets.len(), 1, "crid is its only target: {targets:?}");

    let cpu = prometheus
        .until("the container's CPU series", || async {
            let result = prometheus
                .query(&format!(
                    "container_cpu_usage_seconds_total{{name=\"{id}\"}}"
                ))
                .await?;
            Ok((!result.is_empty()).then_some(result))
        })
        .await;
    let metric = &cpu[0]["metric"];
    assert_eq!(metric["container"], "sleeper", "{metric}");
    assert_eq!(metric["pod"], "scraped", "{metric}");
    assert_eq!(metric["job"], "crid", "{metric}");
    assert!(
        metric["id"]
            .as_str()
            .is_some_and(|cgroup| cgroup.ends_with(&id)),
        "{metric}"
    );

    let ready = prometheus
        .until("crid's own pod gauge", || async {
            let result = prometheus.query("crid_pods{state=\"ready\"}").await?;
            Ok(result.first().cloned())
        })
        .await;
    assert_eq!(ready["value"][1], "1", "{ready}");
    let pulls = prometheus
        .query("crid_image_pull_duration_seconds_count{outcome=\"success\"}")
        .await
        .expect("query");
    assert_eq!(pulls.len(), 1, "{pulls:?}");
    let rpcs = prometheus
        .query("sum(crid_rpc_duration_seconds_count)")
        .await
        .expect("query");
    assert_eq!(rpcs.len(), 1, "{rpcs:?}");

    let pid = prometheus
        .child
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .id();
    drop(prometheus);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "prometheus still runs"
    );
    assert!(!dir.exists(), "prometheus's dir is left: {}", dir.display());
    world.finish(&[&pod]).await;
}
