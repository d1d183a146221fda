//! crid's own operation metrics: one registry for the process, fed where
//! the operations happen (every RPC passes through cri-server's `traced`).

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// RPC latency buckets: 0.5 ms to ~16 s, doubling.
#[derive(Clone)]
struct RpcBuckets;

impl MetricConstructor<Histogram> for RpcBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0005, 2.0, 16))
    }
}

type RpcLabels = Vec<(&'static str, String)>;

struct Own {
    registry: Registry,
    rpc_duration: Family<RpcLabels, Histogram, RpcBuckets>,
}

static OWN: LazyLock<Own> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let rpc_duration = Family::new_with_constructor(RpcBuckets);
    registry.register(
        "crid_rpc_duration_seconds",
        "How long crid took to answer a CRI RPC, by method and gRPC code.",
        rpc_duration.clone(),
    );
    Own {
        registry,
        rpc_duration,
    }
});

/// One answered RPC.
pub fn observe_rpc(method: &'static str, code: &str, seconds: f64) {
    OWN.rpc_duration
        .get_or_create(&vec![
            ("method", method.to_owned()),
            ("code", code.to_owned()),
        ])
        .observe(seconds);
}

/// crid's own families, OpenMetrics text without the final `# EOF`.
pub fn encode(text: &mut String) -> Result<(), std::fmt::Error> {
    encode_registry(text, &OWN.registry)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rpcs_are_counted_by_method_and_code() {
        super::observe_rpc("Version", "OK", 0.001);
        super::observe_rpc("Version", "OK", 0.002);
        let mut text = String::new();
        super::encode(&mut text).expect("encode");
        assert!(
            text.contains("crid_rpc_duration_seconds_count{method=\"Version\",code=\"OK\"} 2"),
            "{text}"
        );
    }
}
