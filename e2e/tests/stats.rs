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

/// GET /metrics as a scraper that does not ask for OpenMetrics: the
/// body, after checking the status and content type.
async fn scrape(address: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: crid\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
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

#[tokio::test]
async fn pod_network_counters_rise_when_the_pod_is_sent_traffic() {
    let world = World::new().await;
    world.env.bridge_network("cridst0", "10.251.150.0/24");
    let mut config = world.pod_config("pinged", cri::NamespaceMode::Container);
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .and_then(|context| context.namespace_options.as_mut())
    {
        options.network = cri::NamespaceMode::Pod.into();
    }
    let pod = world
        .rt()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
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
