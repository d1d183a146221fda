//! What keeps the node's answers readable: kubelet's CRI client refuses any
//! message over 16 MiB, and a List answer that grows past it fails for every
//! client, so kubelet's relist fails node-wide.
//!
//! * One pod's or container's labels plus annotations are capped
//!   (`[runtime] max_labels_annotations_bytes`, 1 MiB by default).
//! * The List entries of all pods and containers together are kept under
//!   what one answer can carry ([`ListBudget`]). Each record is charged the
//!   encoded size of its List entry (labels, annotations, names, image
//!   references: everything it adds to ListPodSandbox or ListContainers)
//!   plus a margin for its stats, when it is written; it is refunded when
//!   it is removed; the totals are recomputed from the records at start. A
//!   create that would go past the budget is ResourceExhausted.
//!
//! Pods and containers share one budget rather than having one each:
//! ListPodSandboxStats nests every container's stats (with its labels and
//! annotations) inside its pod's, so it carries both kinds in one answer.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use prost::Message;

use crate::error::CridError;
use crate::store::Table;

/// The largest gRPC message crid accepts or sends: kubelet's CRI client
/// caps at 16 MiB, so crid accepts as much and never answers more.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// tonic refuses a message over its size limit with OUT_OF_RANGE; gRPC's
/// code for it is RESOURCE_EXHAUSTED (what grpc-go, so kubelet, expects).
/// crid itself never answers OUT_OF_RANGE, so every such answer is tonic's
/// limit (the refusal comes before any handler, as a trailers-only answer).
pub fn size_refusal_as_resource_exhausted<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    let headers = response.headers_mut();
    if headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == out_of_range.as_bytes())
    {
        let exhausted = (tonic::Code::ResourceExhausted as i32).to_string();
        if let Ok(value) = tonic::codegen::http::HeaderValue::from_str(&exhausted) {
            headers.insert("grpc-status", value);
        }
    }
    response
}

/// What the output of one ExecSync may add up to: the monitor keeps up to
/// 16 MiB per stream (kubelet's figure per stream), but kubelet takes no
/// answer over [`MAX_MESSAGE_BYTES`] in all, so both streams share that,
/// less room for the framing and the notice of a cut.
pub const EXEC_OUTPUT_BUDGET: usize = MAX_MESSAGE_BYTES - 4096;

/// Fits an exec's output into [`EXEC_OUTPUT_BUDGET`]: each stream keeps at
/// least half of it if it needs that much, and what one leaves unused the
/// other may take. A cut is said in a line at the end of stderr, as the
/// monitor says its own.
pub fn fit_exec_output(mut stdout: Vec<u8>, mut stderr: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    if stdout.len() + stderr.len() <= EXEC_OUTPUT_BUDGET {
        return (stdout, stderr);
    }
    let half = EXEC_OUTPUT_BUDGET / 2;
    let stderr_keep = stderr
        .len()
        .min(half.max(EXEC_OUTPUT_BUDGET.saturating_sub(stdout.len())));
    let stdout_keep = stdout.len().min(EXEC_OUTPUT_BUDGET - stderr_keep);
    let mut notice = String::new();
    for (name, stream, keep) in [
        ("stdout", &mut stdout, stdout_keep),
        ("stderr", &mut stderr, stderr_keep),
    ] {
        if stream.len() > keep {
            notice.push_str(&format!(
                "crid: exec {name} truncated to {keep} bytes to fit the {MAX_MESSAGE_BYTES}-byte answer ({} more bytes dropped)\n",
                stream.len() - keep
            ));
            stream.truncate(keep);
        }
    }
    if !stderr.is_empty() && !stderr.ends_with(b"\n") {
        stderr.push(b'\n');
    }
    stderr.extend_from_slice(notice.as_bytes());
    (stdout, stderr)
}

/// The default of `[runtime] max_labels_annotations_bytes`. Kubernetes
/// itself allows 256 KiB of annotations per object.
pub const DEFAULT_MAX_LABELS_ANNOTATIONS_BYTES: u64 = 1024 * 1024;

/// What `[runtime] max_labels_annotations_bytes` may be: kubelet's own
/// labels and annotations fit in the lower bound; the upper leaves a List
/// answer room for more than one such object.
pub const MAX_LABELS_ANNOTATIONS_RANGE: RangeInclusive<u64> = 4096..=8 * 1024 * 1024;

/// Room a List answer keeps beyond its entries: the response's own framing
/// and the gRPC frame are a few bytes; the rest is slack for fields a later
/// crid may add.
const LIST_HEADROOM_BYTES: u64 = 256 * 1024;

/// What the List entries of all pods and containers may add up to.
pub const LIST_BUDGET_BYTES: u64 = MAX_MESSAGE_BYTES as u64 - LIST_HEADROOM_BYTES;

/// Charged per record on top of its List entry: what its entry in the
/// stats answers adds beyond the attributes (cpu, memory, filesystem,
/// network figures; a pod's interfaces).
const STATS_MARGIN_BYTES: u64 = 1024;

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

/// What `entry` adds to a List answer: its encoded size as an element of
/// the answer's repeated field (one tag byte and the length prefix).
fn framed_len(entry: &impl Message) -> u64 {
    let len = entry.encoded_len();
    (1 + prost::length_delimiter_len(len) + len) as u64
}

/// The encoded size of a List answer made of `entries`.
pub fn answer_len<M: Message>(entries: impl IntoIterator<Item = M>) -> u64 {
    entries.into_iter().map(|entry| framed_len(&entry)).sum()
}

/// The charge of a record whose List entry is `entry`: what the entry adds
/// to the answer, plus [`STATS_MARGIN_BYTES`].
pub fn entry_charge(entry: &impl Message) -> u64 {
    framed_len(entry) + STATS_MARGIN_BYTES
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub pods: u64,
    pub containers: u64,
}

impl Usage {
    fn total(self) -> u64 {
        self.pods.saturating_add(self.containers)
    }

    fn of(&mut self, table: Table) -> Option<&mut u64> {
        match table {
            Table::Pods => Some(&mut self.pods),
            Table::Containers => Some(&mut self.containers),
            Table::Images => None,
        }
    }
}

/// The node-wide running total of what the pods' and containers' List
/// entries weigh (see the module docs).
#[derive(Debug)]
pub struct ListBudget {
    limit: u64,
    usage: Mutex<Usage>,
}

impl ListBudget {
    pub fn new(limit: u64) -> ListBudget {
        ListBudget {
            limit,
            usage: Mutex::new(Usage::default()),
        }
    }

    /// Adds what the records of `table` weigh (at start, before serving:
    /// [`crate::records::RecordStore::charge_loaded`]). Records over the
    /// budget (an older crid's) are kept: new ones are refused until enough
    /// are removed.
    pub fn load(&self, table: Table, bytes: u64) {
        let mut usage = self.lock();
        if let Some(used) = usage.of(table) {
            *used = used.saturating_add(bytes);
        }
        if usage.total() > self.limit {
            tracing::warn!(
                pods_bytes = usage.pods,
                containers_bytes = usage.containers,
                limit_bytes = self.limit,
                "the stored pods and containers weigh more than a List answer can carry; \
                 new ones are refused until some are removed"
            );
        }
    }

    /// Charges `bytes` to `table`'s total, or refuses with ResourceExhausted
    /// when all pods and containers together would weigh more than the
    /// budget.
    pub fn charge(&self, table: Table, bytes: u64) -> Result<(), CridError> {
        let mut usage = self.lock();
        let total = usage.total();
        if total.saturating_add(bytes) > self.limit {
            let kind = match table {
                Table::Pods => "pod sandbox",
                Table::Containers => "container",
                Table::Images => "image",
            };
            return Err(CridError::ResourceExhausted(format!(
                "the node's List answers are full: its pods weigh {} bytes and its containers \
                 {} bytes in ListPodSandbox/ListContainers (with stats), of the {} bytes one \
                 answer may carry under kubelet's {} byte message limit; this {kind} would add \
                 {bytes} bytes. Remove pods or containers, or give them fewer labels and \
                 annotations",
                usage.pods, usage.containers, self.limit, MAX_MESSAGE_BYTES
            )));
        }
        if let Some(used) = usage.of(table) {
            *used = used.saturating_add(bytes);
        }
        Ok(())
    }

    /// Gives back what a removed record was charged.
    pub fn refund(&self, table: Table, bytes: u64) {
        if let Some(used) = self.lock().of(table) {
            *used = used.saturating_sub(bytes);
        }
    }

    pub fn usage(&self) -> Usage {
        *self.lock()
    }

    /// Usage stays meaningful if a holder panicked: every update is one
    /// assignment.
    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::cri;
    use tonic::{Code, Status};

    fn map(entries: &[(&str, usize)]) -> HashMap<String, String> {
        entries
            .iter()
            .map(|(key, len)| (key.to_string(), "v".repeat(*len)))
            .collect()
    }

    #[test]
    fn exec_output_fits_one_answer_and_says_what_was_cut() {
        let small = fit_exec_output(b"out".to_vec(), b"err".to_vec());
        assert_eq!(small, (b"out".to_vec(), b"err".to_vec()));

        // Both streams full: each keeps half, and stderr says so.
        let full = 16 * 1024 * 1024;
        let (stdout, stderr) = fit_exec_output(vec![b'o'; full], vec![b'e'; full]);
        assert_eq!(stdout.len(), EXEC_OUTPUT_BUDGET / 2);
        let notice = &stderr[EXEC_OUTPUT_BUDGET / 2..];
        let notice = String::from_utf8_lossy(notice);
        assert!(
            notice.starts_with("\ncrid: exec stdout truncated"),
            "{notice}"
        );
        assert!(notice.contains("crid: exec stderr truncated"), "{notice}");
        assert!(stdout.len() + stderr.len() < MAX_MESSAGE_BYTES);

        // A short stderr leaves the rest to stdout.
        let (stdout, stderr) = fit_exec_output(vec![b'o'; full], b"warn\n".to_vec());
        assert_eq!(stdout.len(), EXEC_OUTPUT_BUDGET - 5);
        assert!(stderr.starts_with(b"warn\ncrid: exec stdout truncated"));
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

    #[test]
    fn the_budget_refuses_what_would_not_fit_and_takes_refunds() {
        let budget = ListBudget::new(10_000);
        budget.charge(Table::Pods, 6_000).expect("fits");
        budget
            .charge(Table::Containers, 4_000)
            .expect("fits exactly");
        let error = budget
            .charge(Table::Containers, 1)
            .expect_err("pods and containers share the budget");
        let status = Status::from(error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        let message = status.message();
        assert!(
            message.contains("pods weigh 6000 bytes") && message.contains("containers 4000"),
            "{message}"
        );
        assert!(
            message.contains("this container would add 1 bytes"),
            "{message}"
        );
        assert_eq!(
            budget.usage(),
            Usage {
                pods: 6_000,
                containers: 4_000
            },
            "a refusal charges nothing"
        );
        budget.refund(Table::Pods, 6_000);
        budget.charge(Table::Containers, 6_000).expect("room again");
        budget.refund(Table::Containers, 20_000);
        assert_eq!(budget.usage().containers, 0, "never below zero");
    }

    #[test]
    fn loaded_totals_count_and_may_exceed_the_budget() {
        let budget = ListBudget::new(10_000);
        budget.load(Table::Containers, 7_000);
        budget.load(Table::Images, 5_000);
        assert_eq!(
            budget.usage(),
            Usage {
                pods: 0,
                containers: 7_000
            },
            "images are not in the budget"
        );
        budget.charge(Table::Pods, 3_000).expect("what is left");
        budget.charge(Table::Pods, 1).expect_err("full");

        // Stored records over the budget (an older crid's) still load: new
        // ones are refused until enough are removed.
        let small = ListBudget::new(5_000);
        small.load(Table::Containers, 7_000);
        small.charge(Table::Containers, 1).expect_err("full");
        small.refund(Table::Containers, 4_000);
        small
            .charge(Table::Containers, 2_000)
            .expect("room after a removal");
    }

    #[test]
    fn an_entry_is_charged_its_encoded_size() {
        let entry = cri::PodSandbox {
            id: "p".repeat(64),
            annotations: [("a".to_string(), "v".repeat(300))].into(),
            ..Default::default()
        };
        let answer = cri::ListPodSandboxResponse {
            items: vec![entry.clone(), entry.clone(), entry.clone()],
        };
        // Three entries' charges cover the whole answer, stats margin aside.
        let framed = entry_charge(&entry) - STATS_MARGIN_BYTES;
        assert_eq!(answer.encoded_len() as u64, 3 * framed);
        assert_eq!(answer_len(answer.items.iter().cloned()), 3 * framed);
        assert!(framed > 64 + 300);
    }
}
