//! `/metrics`: the container points of a scrape and crid's own metrics in
//! the OpenMetrics text format (prometheus-client's encoder), or in
//! Prometheus's classic text format for scrapers that do not ask for
//! OpenMetrics; and the HTTP server that answers it.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::own;
use crate::series::{DESCRIPTORS, Kind, Point};

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a scrape shows of the containers: their points, gathered by the
/// daemon from the collector.
pub type PointsSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<Point>> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ExpositionError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving /metrics: {0}")]
    Serve(std::io::Error),
}

/// One scrape's points, as a prometheus-client collector.
#[derive(Debug)]
struct ScrapePoints(Vec<Point>);

impl Collector for ScrapePoints {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Families in the table's order, each with all its points.
        for descriptor in DESCRIPTORS {
            let mut points = self
                .0
                .iter()
                .filter(|point| std::ptr::eq(point.descriptor, *descriptor))
                .peekable();
            if points.peek().is_none() {
                continue;
            }
            let (name, metric_type) = match descriptor.kind {
                // The encoder adds `_total` to a counter's samples.
                Kind::Counter => (
                    descriptor
                        .name
                        .strip_suffix("_total")
                        .unwrap_or(descriptor.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (descriptor.name, MetricType::Gauge),
            };
            let mut family = encoder.encode_descriptor(name, descriptor.help, None, metric_type)?;
            let keys = descriptor.label_keys();
            for point in points {
                let labels: Vec<(&str, &str)> = keys
                    .iter()
                    .copied()
                    .zip(point.label_values.iter().map(String::as_str))
                    .collect();
                let sample = family.encode_family(&labels)?;
                match descriptor.kind {
                    Kind::Counter => ConstCounter::new(point.value).encode(sample)?,
                    Kind::Gauge => ConstGauge::new(point.value).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// The whole endpoint's text in OpenMetrics.
pub fn encode_openmetrics(points: Vec<Point>) -> Result<String, std::fmt::Error> {
    let mut scrape = Registry::default();
    scrape.register_collector(Box::new(ScrapePoints(points)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode_registry(&mut text, &scrape)?;
    own::encode(&mut text)?;
    prometheus_client::encoding::text::encode_eof(&mut text)?;
    Ok(text)
}

/// OpenMetrics text as Prometheus's classic text format (0.0.4): no
/// `# EOF` or `# UNIT`, and a counter family named as its samples are.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                let _ = writeln!(text, "{prefix}{name}{suffix} {tail}");
            }
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// Whether the scraper asked for OpenMetrics (Prometheus does, first).
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"))
}

/// Binds the endpoint's address: at start, so a bad `[metrics] address`
/// stops crid there.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, ExpositionError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ExpositionError::Bind { address, source })
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: PointsSource,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ExpositionError> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let source = source.clone();
            async move { scrape(source, headers).await }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ExpositionError::Serve)
}

async fn scrape(source: PointsSource, headers: HeaderMap) -> Response {
    let points = source().await;
    let text = match encode_openmetrics(points) {
        Ok(text) => text,
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response();
        }
    };
    let (body, content_type) = if wants_openmetrics(&headers) {
        (text, OPENMETRICS_CONTENT_TYPE)
    } else {
        (to_classic(&text), CLASSIC_CONTENT_TYPE)
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{CPU_USAGE, Labels, MEMORY_WORKING_SET, NETWORK_RX_BYTES};

    fn point(
        descriptor: &'static crate::series::Descriptor,
        extra: Option<&str>,
        value: f64,
    ) -> Point {
        let labels = Labels {
            container: "app".into(),
            pod: "web".into(),
            namespace: "default".into(),
            id: "/crid/p/c".into(),
            image: "busybox:1".into(),
            name: "c".into(),
        };
        let mut label_values = vec![
            labels.container,
            labels.pod,
            labels.namespace,
            labels.id,
            labels.image,
            labels.name,
        ];
        label_values.extend(extra.map(str::to_owned));
        Point {
            descriptor,
            label_values,
            value,
        }
    }

    #[test]
    fn points_become_families_in_both_formats() {
        let text = encode_openmetrics(vec![
            point(&CPU_USAGE, Some("total"), 1.5),
            point(&MEMORY_WORKING_SET, None, 1024.0),
            point(&NETWORK_RX_BYTES, Some("eth0"), 7.0),
        ])
        .expect("encode");
        assert!(
            text.contains("# TYPE container_cpu_usage_seconds counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "container_cpu_usage_seconds_total{container=\"app\",pod=\"web\",namespace=\"default\",id=\"/crid/p/c\",image=\"busybox:1\",name=\"c\",cpu=\"total\"} 1.5"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE container_memory_working_set_bytes gauge"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            !text.contains("container_memory_rss"),
            "no point, no family"
        );

        let classic = to_classic(&text);
        assert!(
            classic.contains("# TYPE container_cpu_usage_seconds_total counter"),
            "{classic}"
        );
        assert!(
            classic.contains("# HELP container_network_receive_bytes_total Cumulative"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE container_memory_working_set_bytes gauge"),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
    }

    #[test]
    fn openmetrics_only_when_asked() {
        let mut headers = HeaderMap::new();
        assert!(!wants_openmetrics(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            ),
        );
        assert!(wants_openmetrics(&headers));
    }
}
