//! ImageService logic: the image records kept in the metadata store, how a
//! CRI image string (tag, digest, id or id prefix) resolves to one, and
//! image garbage collection.
//!
//! A record is keyed by the image id (the config digest) and carries every
//! repo tag and repo digest that points at it. A tag names one image: when a
//! pull moves it to another image, the old record loses it (and stays, as
//! `<none>`, if nothing else names it, as containerd does). Every record a
//! pull changes is written in one transaction, so no crash leaves a tag on
//! two records.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use image::{Credentials, FsUsage, GcReport, ImageError, ImageStore, PulledImage, Reference};
use pod_sandbox::fault;
use proto::cri;

use crate::error::CridError;
use crate::limits::LIST_BUDGET_BYTES;
use crate::objects::{ContainerRecord, ImageRecord};
use crate::records::RecordStore;
use crate::rpc::{blocking, now_nanos};

/// The request field every image RPC names the image in.
pub const IMAGE_FIELD: &str = "image.image";
/// How often a pull is retried when a concurrent GC removed what it fetched
/// before it could be recorded (rare: needs a RemoveImage in that window).
const RECORD_ATTEMPTS: usize = 3;

/// The image controller: the image records, the content store under them,
/// and image GC, which keeps every layer a container still uses.
pub struct ImageController {
    records: Arc<RecordStore<ImageRecord>>,
    /// Read only: their layers and configs are kept by GC.
    containers: Arc<RecordStore<ContainerRecord>>,
    store: ImageStore,
    /// Serialises image record updates against image GC.
    lock: tokio::sync::Mutex<()>,
}

pub fn parse_reference(image: &str) -> Result<Reference, CridError> {
    Reference::parse(image).map_err(|error| match error {
        ImageError::InvalidReference { reason, .. } => {
            CridError::invalid(IMAGE_FIELD, image, reason)
        }
        other => CridError::Image(other),
    })
}

/// Finds the record `image` names: a full id (`sha256:<hex>`), a tag or
/// digest reference (normalised as kubelet does), or else an id prefix with
/// or without `sha256:` (as crictl users type). `Ok(None)` when nothing
/// matches; InvalidArgument when it is neither a reference nor an id prefix,
/// or when the prefix is ambiguous.
pub fn resolve<'a>(
    records: &'a [Arc<ImageRecord>],
    image: &str,
) -> Result<Option<&'a Arc<ImageRecord>>, CridError> {
    if let Some(hex) = image.strip_prefix("sha256:")
        && hex.len() == 64
        && is_hex(hex)
    {
        return Ok(records.iter().find(|r| r.id == image));
    }
    let parsed = parse_reference(image);
    if let Ok(reference) = &parsed {
        let found = match reference.digest() {
            Some(digest) => {
                let name = reference.repo_digest(digest);
                records.iter().find(|r| r.repo_digests.contains(&name))
            }
            None => reference
                .repo_tag()
                .and_then(|tag| records.iter().find(|r| r.repo_tags.contains(&tag))),
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    let prefix = image.strip_prefix("sha256:").unwrap_or(image);
    if prefix.is_empty() || prefix.len() > 64 || !is_hex(prefix) {
        return parsed.map(|_| None);
    }
    let mut matching = records.iter().filter(|r| {
        r.id.strip_prefix("sha256:")
            .is_some_and(|h| h.starts_with(prefix))
    });
    match (matching.next(), matching.next()) {
        (Some(_), Some(_)) => Err(CridError::invalid(
            IMAGE_FIELD,
            image,
            "the id prefix matches more than one image; give more of the id",
        )),
        (found, _) => Ok(found),
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `uid` when the config's user is numeric, else the user name (the part
/// before any `:group`), as containerd reports them.
fn user_of(user: &str) -> (Option<i64>, String) {
    let user = user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

pub fn to_cri(record: &ImageRecord) -> cri::Image {
    let (uid, username) = user_of(&record.image.user);
    cri::Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.iter().cloned().collect(),
        repo_digests: record.repo_digests.iter().cloned().collect(),
        size: record.image.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: record.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// Folds a pull into the records: returns the records to write, the pulled
/// image's first. The tag and digest the pull resolved leave every other
/// record.
fn merge(
    existing: &[Arc<ImageRecord>],
    pulled: &PulledImage,
    reference: &Reference,
    now: i64,
) -> Vec<ImageRecord> {
    // `name:tag@digest` pulls by digest; like containerd, the tag is not
    // recorded (it was never checked against the registry).
    let tag = if reference.digest().is_none() {
        pulled.repo_tag.clone()
    } else {
        None
    };
    let names: Vec<&String> = tag.iter().chain([&pulled.repo_digest]).collect();
    let mut record = match existing.iter().find(|r| r.id == pulled.id) {
        Some(found) => ImageRecord::clone(found),
        None => ImageRecord {
            id: pulled.id.clone(),
            repo_tags: BTreeSet::new(),
            repo_digests: BTreeSet::new(),
            pulled_at: now,
            blobs: BTreeSet::new(),
            image: pulled.clone(),
        },
    };
    record.repo_tags.extend(tag.clone());
    record.repo_digests.insert(pulled.repo_digest.clone());
    record.blobs.extend(pulled.blob_digests());
    record.image = pulled.clone();
    record.pulled_at = now.max(record.pulled_at);
    let mut changed = vec![record];
    for other in existing.iter().filter(|r| r.id != pulled.id) {
        let named = |held: &BTreeSet<String>| held.iter().any(|name| names.contains(&name));
        if named(&other.repo_tags) || named(&other.repo_digests) {
            let mut other = ImageRecord::clone(other);
            other.repo_tags.retain(|t| !names.contains(&t));
            other.repo_digests.retain(|d| !names.contains(&d));
            changed.push(other);
        }
    }
    changed
}

/// Refuses a pull whose records (`records` with `changed` written over
/// them) would make ListImages answer more than `limit` bytes: every tag
/// and digest of every image is in that one answer, and a client (kubelet:
/// 16 MiB) cannot read a larger one. The pulled content stays unreferenced
/// until the next image GC.
fn check_list_room(
    records: &[Arc<ImageRecord>],
    changed: &[ImageRecord],
    limit: u64,
) -> Result<(), CridError> {
    let replaced: HashSet<&str> = changed.iter().map(|r| r.id.as_str()).collect();
    let kept = records
        .iter()
        .map(|r| &**r)
        .filter(|r| !replaced.contains(r.id.as_str()));
    let bytes = crate::limits::answer_len(changed.iter().chain(kept).map(to_cri));
    if bytes > limit {
        return Err(CridError::ResourceExhausted(format!(
            "the node's image list is full: with this image, ListImages would answer {bytes} \
             bytes, over the {limit} bytes one answer may carry under kubelet's {} byte \
             message limit. Remove images or tags",
            crate::limits::MAX_MESSAGE_BYTES
        )));
    }
    Ok(())
}

impl ImageController {
    pub fn new(
        records: Arc<RecordStore<ImageRecord>>,
        containers: Arc<RecordStore<ContainerRecord>>,
        store: ImageStore,
    ) -> ImageController {
        ImageController {
            records,
            containers,
            store,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Resolves `image` against the current records (CreateContainer finds
    /// its image the same way).
    pub fn find(&self, image: &str) -> Result<Option<Arc<ImageRecord>>, CridError> {
        let records = self.records.all();
        Ok(resolve(&records, image)?.cloned())
    }

    /// The image `filter` names (nothing when it names nothing, or nothing
    /// valid), or every image.
    pub fn list(&self, filter: Option<&str>) -> Vec<Arc<ImageRecord>> {
        let records = self.records.all();
        match filter {
            Some(image) => match resolve(&records, image) {
                Ok(found) => found.cloned().into_iter().collect(),
                Err(_) => Vec::new(),
            },
            None => records,
        }
    }

    /// Where a layer's unpacked tree is (a container's rootfs lower dir).
    pub fn layer_dir(&self, chain_id: &str) -> Result<std::path::PathBuf, CridError> {
        Ok(self.store.layer_dir(chain_id)?)
    }

    pub async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, CridError> {
        Ok(self.store.read_blob(digest).await?)
    }

    pub async fn fs_usage(&self) -> Result<FsUsage, CridError> {
        Ok(self.store.fs_usage().await?)
    }

    /// Whether every blob and layer of `pulled` is still in the store.
    fn content_present(&self, pulled: &PulledImage) -> bool {
        self.store.has_layers(pulled)
            && pulled
                .blob_digests()
                .iter()
                .all(|d| self.store.blob_path(d).is_ok_and(|path| path.is_file()))
    }

    /// Pulls and records the image; its id.
    pub async fn pull(
        self: &Arc<Self>,
        reference: &Reference,
        creds: Option<Credentials>,
    ) -> Result<String, CridError> {
        let started = Instant::now();
        let pulled = self.pull_and_record(reference, creds, started).await;
        metrics::own::observe_image_pull(
            metrics::own::Outcome::of(&pulled),
            started.elapsed().as_secs_f64(),
        );
        pulled
    }

    /// The image store's pull figures since crid started.
    pub fn pull_totals(&self) -> metrics::own::PullTotals {
        let figures = self.store.metrics();
        metrics::own::PullTotals {
            bytes_downloaded: figures.bytes_downloaded.load(Ordering::Relaxed),
            layers_fetched: figures.layers_unpacked.load(Ordering::Relaxed),
            layers_reused: figures.layers_reused.load(Ordering::Relaxed),
        }
    }

    async fn pull_and_record(
        self: &Arc<Self>,
        reference: &Reference,
        creds: Option<Credentials>,
        started: Instant,
    ) -> Result<String, CridError> {
        for attempt in 1..=RECORD_ATTEMPTS {
            // Pulls run without the image lock; the store pins what a pull in
            // progress uses, so GC leaves it alone until the pull returns.
            let pulled = self.store.pull(reference, creds.clone()).await?;
            fault::point("image.pull.fetched");
            let _guard = self.lock.lock().await;
            let recorded = {
                let images = self.clone();
                let reference = reference.clone();
                let pulled = pulled.clone();
                blocking(move || {
                    // A GC between the pull's end and this lock may have removed
                    // what it fetched: then pull again rather than record an
                    // image without its layers.
                    if !images.content_present(&pulled) {
                        return Ok(false);
                    }
                    let records = images.records.all();
                    let changed = merge(&records, &pulled, &reference, now_nanos());
                    check_list_room(&records, &changed, LIST_BUDGET_BYTES)?;
                    // The new record and the tags it took from others: together.
                    images.records.put_all(changed)?;
                    Ok(true)
                })
                .await?
            };
            if recorded {
                tracing::info!(
                    image = %reference,
                    id = %pulled.id,
                    size = pulled.size,
                    layers = pulled.layers.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "image recorded"
                );
                return Ok(pulled.id);
            }
            tracing::warn!(image = %reference, attempt, "pulled content was collected before it was recorded; pulling again");
        }
        Err(CridError::FailedPrecondition(format!(
            "image {reference}: its content was removed by concurrent image removals {RECORD_ATTEMPTS} times; retry the pull"
        )))
    }

    /// Forgets the image `image` names (nothing when none: RemoveImage is
    /// idempotent) and collects what no record needs any more.
    pub async fn remove(self: &Arc<Self>, image: &str) -> Result<(), CridError> {
        let image = image.to_string();
        let _guard = self.lock.lock().await;
        let removed = {
            let images = self.clone();
            blocking(move || {
                let records = images.records.all();
                let Some(record) = resolve(&records, &image)? else {
                    return Ok(None);
                };
                images.records.remove(&record.id)?;
                Ok(Some(record.clone()))
            })
            .await?
        };
        if let Some(record) = removed {
            tracing::info!(id = %record.id, tags = ?record.repo_tags, "image removed");
            fault::point("image.remove.forgotten");
            self.records.compact_if_due();
            self.collect_garbage_locked().await?;
        }
        Ok(())
    }

    /// Everything that is still needed: every layer and blob of every
    /// image record.
    pub fn keep_sets(&self) -> KeepSets {
        let mut keep = KeepSets::default();
        for record in self.records.all() {
            keep.chain_ids.extend(record.image.chain_ids());
            keep.blobs.extend(record.image.blob_digests());
            keep.blobs.extend(record.blobs.iter().cloned());
        }
        // A container keeps its rootfs and image volumes' layers and image
        // configs even when their images were removed.
        for record in self.containers.all() {
            keep.chain_ids.extend(record.layers.iter().cloned());
            keep.blobs.insert(record.image_id.clone());
            for volume in &record.image_volumes {
                keep.chain_ids.extend(volume.layers.iter().cloned());
                keep.blobs.insert(volume.image_id.clone());
            }
        }
        keep
    }

    /// Image GC: removes every layer and blob no record needs. Takes the
    /// image lock (no image may be recorded between computing the keep sets
    /// and the removal). Also safe to run at start: a failed pull leaves
    /// verified layers behind until the next GC.
    pub async fn collect_garbage(&self) -> Result<GcReport, CridError> {
        let _guard = self.lock.lock().await;
        self.collect_garbage_locked().await
    }

    /// [`ImageController::collect_garbage`] for a caller that holds the image lock.
    async fn collect_garbage_locked(&self) -> Result<GcReport, CridError> {
        let keep = self.keep_sets();
        let report = self
            .store
            .remove_unreferenced(&keep.chain_ids, &keep.blobs)
            .await?;
        if !report.layers_removed.is_empty() || !report.blobs_removed.is_empty() {
            tracing::info!(
                layers = report.layers_removed.len(),
                blobs = report.blobs_removed.len(),
                "image garbage collected"
            );
        }
        Ok(report)
    }
}

/// What image GC must not remove.
#[derive(Debug, Default)]
pub struct KeepSets {
    pub chain_ids: HashSet<String>,
    pub blobs: HashSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, TestDaemon};

    /// The controller over the real stores: an image's layer outlives the
    /// image while a container's rootfs uses it, and goes with the
    /// container; a layer nothing names goes at the next collection.
    #[tokio::test]
    async fn removal_and_gc_keep_what_a_container_still_uses() {
        let test = TestDaemon::new().await;
        let images = test.daemon.images.clone();
        let stores = &test.daemon.stores;
        let (used, stray) = (
            format!("sha256:{}", "1".repeat(64)),
            format!("sha256:{}", "2".repeat(64)),
        );
        for chain in [&used, &stray] {
            std::fs::create_dir_all(images.layer_dir(chain).expect("layer dir")).expect("mkdir");
        }
        let record = testing::image("127.0.0.1:5000/app:v1", &used);
        stores.images.put(record.clone()).expect("recorded");
        let mut container = testing::container("c1", "p1");
        container.layers = vec![used.clone()];
        container.image_id = record.id.clone();
        test.add_container(container);

        // Found by tag, by id prefix; an unknown name finds nothing.
        assert!(
            images
                .find("127.0.0.1:5000/app:v1")
                .expect("valid")
                .is_some()
        );
        assert_eq!(images.list(Some("127.0.0.1:5000/none:v1")).len(), 0);
        assert_eq!(images.list(None).len(), 1);

        images
            .remove("127.0.0.1:5000/app:v1")
            .await
            .expect("removed");
        assert!(images.list(None).is_empty());
        // Idempotent, as kubelet expects.
        images.remove("127.0.0.1:5000/app:v1").await.expect("again");
        let layer = |chain: &str| images.layer_dir(chain).expect("layer dir").exists();
        assert!(layer(&used), "the container's rootfs layer was collected");
        assert!(!layer(&stray), "a layer nothing names was kept");

        stores.containers.remove("c1").expect("container forgotten");
        let report = images.collect_garbage().await.expect("gc");
        assert_eq!(report.layers_removed, std::slice::from_ref(&used));
        assert!(!layer(&used));
    }

    fn pulled(id_char: char, reference: &str) -> (PulledImage, Reference) {
        let reference = Reference::parse(reference).expect("reference");
        let id = format!("sha256:{}", id_char.to_string().repeat(64));
        let manifest = format!("sha256:{}", format!("e{id_char}").repeat(32));
        let image = PulledImage {
            id,
            repo_tag: reference.repo_tag(),
            repo_digest: reference.repo_digest(&manifest),
            manifest_digest: manifest,
            index_digest: None,
            size: 10,
            user: "1000:1000".into(),
            config: Default::default(),
            layers: vec![],
        };
        (image, reference)
    }

    fn record(image: &PulledImage, reference: &Reference, at: i64) -> Arc<ImageRecord> {
        Arc::new(merge(&[], image, reference, at).remove(0))
    }

    fn shared(records: Vec<ImageRecord>) -> impl Iterator<Item = Arc<ImageRecord>> {
        records.into_iter().map(Arc::new)
    }

    #[test]
    fn a_pull_that_would_overfill_list_images_is_refused() {
        let (a, r) = pulled('a', "127.0.0.1:5000/app:v1");
        let (b, rb) = pulled('b', "127.0.0.1:5000/other:v1");
        let mut existing = vec![record(&a, &r, 1)];
        let one = crate::limits::answer_len(existing.iter().map(|r| to_cri(r)));
        // Room for two records like these, not three.
        let limit = 2 * one + one / 2;
        let changed = merge(&existing, &b, &rb, 2);
        assert_eq!(changed.len(), 1, "a new record, the other untouched");
        check_list_room(&existing, &changed, limit).expect("two fit");
        existing.extend(shared(changed));
        let (c, rc) = pulled('c', "127.0.0.1:5000/third:v1");
        let changed = merge(&existing, &c, &rc, 3);
        let status = tonic::Status::from(
            check_list_room(&existing, &changed, limit).expect_err("three do not"),
        );
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("ListImages"), "{status:?}");
        // Pulling again what is there (a record rewritten, not added) fits.
        let again = merge(&existing, &b, &rb, 4);
        check_list_room(&existing, &again, limit).expect("a rewrite adds nothing");
    }

    #[test]
    fn a_moved_tag_leaves_the_old_image_which_stays_untagged() {
        let (old, r) = pulled('a', "127.0.0.1:5000/app:v1");
        let (new, _) = pulled('b', "127.0.0.1:5000/app:v1");
        let existing = vec![record(&old, &r, 1)];
        let changed = merge(&existing, &new, &r, 2);
        assert_eq!(changed.len(), 2);
        assert_eq!(changed[0].id, new.id);
        assert!(changed[0].repo_tags.contains("127.0.0.1:5000/app:v1"));
        assert_eq!(changed[1].id, old.id);
        assert!(changed[1].repo_tags.is_empty());
        assert_eq!(changed[1].repo_digests.len(), 1, "old digest kept");
    }

    #[test]
    fn pulls_of_one_image_merge_tags_and_digests() {
        let (a, r1) = pulled('a', "127.0.0.1:5000/app:v1");
        let (_, r2) = pulled('a', "127.0.0.1:5000/app:v2");
        let mut a2 = a.clone();
        a2.repo_tag = r2.repo_tag();
        let changed = merge(&[record(&a, &r1, 1)], &a2, &r2, 2);
        assert_eq!(changed.len(), 1);
        assert_eq!(
            changed[0].repo_tags.iter().collect::<Vec<_>>(),
            ["127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v2"]
        );
        // Pulling the same thing again changes nothing but the time.
        let again = merge(&shared(changed.clone()).collect::<Vec<_>>(), &a2, &r2, 3);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].repo_tags, changed[0].repo_tags);
    }

    #[test]
    fn resolve_by_tag_digest_id_and_prefix() {
        let (a, ra) = pulled('a', "busybox");
        let (b, rb) = pulled('b', "127.0.0.1:5000/app:v1");
        let records = vec![record(&a, &ra, 1), record(&b, &rb, 2)];
        let id_of = |s: &str| resolve(&records, s).expect(s).map(|r| r.id.clone());
        assert_eq!(id_of("busybox"), Some(a.id.clone()));
        assert_eq!(
            id_of("docker.io/library/busybox:latest"),
            Some(a.id.clone())
        );
        assert_eq!(id_of(&a.repo_digest), Some(a.id.clone()));
        assert_eq!(id_of(&b.id), Some(b.id.clone()));
        assert_eq!(id_of(&b.id["sha256:".len()..]), Some(b.id.clone()));
        assert_eq!(id_of("bbbb"), Some(b.id.clone()));
        assert_eq!(id_of("sha256:aaa"), Some(a.id.clone()));
        assert_eq!(id_of(&format!("sha256:{}", "c".repeat(64))), None);
        assert_eq!(id_of("nothere:v1"), None);
        assert_eq!(id_of("cccc"), None);
        let err = resolve(&records, "app/UPPER").expect_err("malformed");
        assert!(err.to_string().contains(IMAGE_FIELD), "{err}");
    }

    #[test]
    fn user_is_uid_or_name() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("0"), (Some(0), String::new()));
        assert_eq!(user_of("nobody:nogroup"), (None, "nobody".into()));
    }
}
