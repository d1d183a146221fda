//! What keeps the node's answers readable: kubelet's CRI client refuses any
//! message over 16 MiB. One pod's or container's labels plus annotations
//! are capped (`[runtime] max_labels_annotations_bytes`, 1 MiB by default).

use std::collections::HashMap;
use std::ops::RangeInclusive;

use crate::error::CridError;

/// The largest gRPC message crid accepts or sends: kubelet's CRI client
/// caps at 16 MiB, so crid accepts as much and never answers more.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The default of `[runtime] max_labels_annotations_bytes`. Kubernetes
/// itself allows 256 KiB of annotations per object.
pub const DEFAULT_MAX_LABELS_ANNOTATIONS_BYTES: u64 = 1024 * 1024;

/// What `[runtime] max_labels_annotations_bytes` may be: kubelet's own
/// labels and annotations fit in the lower bound; the upper leaves a List
/// answer room for more than one such object.
pub const MAX_LABELS_ANNOTATIONS_RANGE: RangeInclusive<u64> = 4096..=8 * 1024 * 1024;

fn bytes_of(map: &HashMap<String, String>) -> u64 {
    map.iter()
        .map(|(key, value)| (key.len() + value.len()) as u64)
        .sum()
}

/// Refuses labels plus annotations (keys and values) over `max` bytes,
/// naming the larger of the two fields. `kind` is "pod sandbox" or
/// "container".
pub fn check_labels_and_annotations(
    kind: &str,
    labels: &HashMap<String, String>,
    annotations: &HashMap<String, String>,
    max: u64,
) -> Result<(), CridError> {
    let (labels, annotations) = (bytes_of(labels), bytes_of(annotations));
    if labels.saturating_add(annotations) <= max {
        return Ok(());
    }
    let field = if annotations >= labels {
        "config.annotations"
    } else {
        "config.labels"
    };
    Err(CridError::invalid(
        field,
        format!("annotations {annotations} bytes + labels {labels} bytes"),
        format!(
            "the labels and annotations of a {kind} may have at most {max} bytes together \
             (keys and values; [runtime] max_labels_annotations_bytes)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn map(entries: &[(&str, usize)]) -> HashMap<String, String> {
        entries
            .iter()
            .map(|(key, len)| (key.to_string(), "v".repeat(*len)))
            .collect()
    }

    #[test]
    fn labels_and_annotations_are_capped_together() {
        let max = 1000;
        // Keys count: "a" + 499 and "l" + 500 = 1000 bytes.
        let annotations = map(&[("a", 499)]);
        let labels = map(&[("l", 499)]);
        check_labels_and_annotations("pod sandbox", &labels, &annotations, max)
            .expect("exactly at the cap");

        let over = map(&[("a", 500)]);
        let status = Status::from(
            check_labels_and_annotations("pod sandbox", &labels, &over, max)
                .expect_err("one byte over"),
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        let message = status.message();
        assert!(message.starts_with("config.annotations:"), "{message}");
        assert!(message.contains("annotations 501 bytes + labels 500 bytes"));
        assert!(message.contains("at most 1000 bytes") && message.contains("pod sandbox"));

        // The larger of the two is named.
        let big_labels = map(&[("l", 900), ("m", 200)]);
        let status = Status::from(
            check_labels_and_annotations("container", &big_labels, &annotations, max)
                .expect_err("labels over"),
        );
        assert!(status.message().starts_with("config.labels:"), "{status:?}");
        assert!(status.message().contains("container"));
    }
}
