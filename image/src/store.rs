//! The content store and the pull pipeline.
//!
//! Layout under the store root:
//! ```text
//! blobs/sha256/<hex>   manifests, indexes, configs and compressed layers
//! layers/<chain hex>/  one unpacked layer, an overlayfs lower dir
//! tmp/                 work in progress; emptied at open
//! ```
//! Anything appears under `blobs/` or `layers/` only by a rename from
//! `tmp/` after its digest (and for layers the diff id) was verified.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::auth::Credentials;
use crate::digest::{HashingReader, chain_ids, sha256_digest, sha256_hex};
use crate::error::{ImageError, Result};
use crate::manifest::{
    ACCEPTED_MANIFEST_TYPES, AnyManifest, DOCKER_SCHEMA1, Descriptor, ImageConfig,
    MAX_DOCUMENT_SIZE, RawImageConfig, is_layer_media_type, select_platform,
};
use crate::reference::Reference;
use crate::registry::{Endpoint, RegistryConfig, endpoints_for, error_chain, map_error};
use crate::unpack::{UnpackError, unpack_layer};

/// The platform we pull for.
const OS: &str = "linux";
const ARCH: &str = "amd64";
/// Chunks buffered between the download and the unpacking thread, per layer.
const CHANNEL_CHUNKS: usize = 64;
const IO_BUF: usize = 256 * 1024;
/// Temp names are unique per process (pid + sequence), even across stores.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);
/// How often a layer download in progress says how far it got.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How a store pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullLimits {
    /// Layers fetched and unpacked at once, across all pulls (at least 1).
    pub max_concurrent_layers: usize,
    /// A pull fails once its registry has sent nothing for this long (while
    /// a document or a layer is being fetched): kubelet sets no deadline on
    /// PullImage, and a registry that stalls must not hold a pull forever.
    pub progress_timeout: Duration,
}

impl Default for PullLimits {
    /// containerd's: 3 layers at once, 5 minutes without progress.
    fn default() -> Self {
        PullLimits {
            max_concurrent_layers: 3,
            progress_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// One layer of a pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the blob as stored in the registry (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar (from the image config).
    pub diff_id: String,
    /// Chain id: names the unpacked directory, see [`ImageStore::layer_dir`].
    pub chain_id: String,
    /// Compressed size.
    pub size: u64,
    pub media_type: String,
}

/// What a successful pull produced. Serializable so the caller can keep it
/// in its own metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledImage {
    /// Image id: the config digest, `sha256:<hex>`.
    pub id: String,
    /// `registry/repo:tag`, if the reference had a tag.
    pub repo_tag: Option<String>,
    /// `registry/repo@<digest the reference resolved to>`: the index's digest
    /// for a multi-platform image (as containerd reports), else the manifest's.
    pub repo_digest: String,
    /// Digest of the linux/amd64 image manifest.
    pub manifest_digest: String,
    /// Digest of the index, if the reference named one.
    pub index_digest: Option<String>,
    /// Compressed layer sizes plus the config size.
    pub size: u64,
    /// The config's `User`.
    pub user: String,
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<LayerRecord>,
}

impl PulledImage {
    /// Chain ids, bottom layer first (overlayfs wants the reverse order).
    pub fn chain_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.chain_id.clone()).collect()
    }

    /// Every blob this image keeps in the store (for GC).
    pub fn blob_digests(&self) -> Vec<String> {
        let mut v = vec![self.id.clone(), self.manifest_digest.clone()];
        v.extend(self.index_digest.clone());
        v.extend(self.layers.iter().map(|l| l.digest.clone()));
        v
    }
}

/// Pull counters, readable at any time (e.g. by a metrics exporter).
#[derive(Debug, Default)]
pub struct PullMetrics {
    /// Bytes received from registries (blobs and documents).
    pub bytes_downloaded: AtomicU64,
    /// Uncompressed layer bytes applied.
    pub bytes_unpacked: AtomicU64,
    pub layers_unpacked: AtomicU64,
    /// Layers that were already present and not fetched again.
    pub layers_reused: AtomicU64,
    pub pulls_started: AtomicU64,
    pub pulls_succeeded: AtomicU64,
    pub pulls_failed: AtomicU64,
}

/// Usage of the store, for CRI ImageFsInfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsUsage {
    /// Bytes used by the store's files (allocated blocks).
    pub used_bytes: u64,
    /// Inodes used by the store.
    pub inodes_used: u64,
    /// Mount point of the file system the store lives on.
    pub mountpoint: PathBuf,
}

/// What [`ImageStore::remove_unreferenced`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub layers_removed: Vec<String>,
    pub blobs_removed: Vec<String>,
}

/// The image store. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    blobs: PathBuf,
    layers: PathBuf,
    tmp: PathBuf,
    registries: BTreeMap<String, RegistryConfig>,
    layer_permits: Arc<Semaphore>,
    progress_timeout: Duration,
    /// Per chain id: held while a layer is fetched and unpacked, so that
    /// concurrent pulls of the same layer wait for one another.
    layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Digests and chain ids used by pulls in progress; GC leaves them alone.
    pins: Mutex<HashMap<String, usize>>,
    metrics: Arc<PullMetrics>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

fn mkdir_p(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| ImageError::io(path, e))
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`, removes what an
    /// interrupted earlier run left in `tmp/`, and checks `registries`.
    /// Pulls keep to `limits`.
    pub fn open(
        root: &Path,
        registries: BTreeMap<String, RegistryConfig>,
        limits: PullLimits,
    ) -> Result<ImageStore> {
        crate::registry::validate(&registries)?;
        // reqwest is built without a default TLS provider (to avoid the
        // aws-lc C build); install ring unless the process already chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let blobs = root.join("blobs").join("sha256");
        let layers = root.join("layers");
        let tmp = root.join("tmp");
        mkdir_p(&blobs)?;
        mkdir_p(&layers)?;
        if tmp.exists() {
            // std's remove_dir_all does not follow symlinks.
            fs::remove_dir_all(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
        }
        mkdir_p(&tmp)?;
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                blobs,
                layers,
                tmp,
                registries,
                layer_permits: Arc::new(Semaphore::new(limits.max_concurrent_layers.max(1))),
                progress_timeout: limits.progress_timeout,
                layer_locks: Mutex::new(HashMap::new()),
                pins: Mutex::new(HashMap::new()),
                metrics: Arc::new(PullMetrics::default()),
            }),
        })
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Pull counters.
    pub fn metrics(&self) -> Arc<PullMetrics> {
        self.inner.metrics.clone()
    }

    /// The unpacked directory of a layer, by chain id (`sha256:<hex>`), to
    /// be used as an overlayfs lower dir. It exists once a pull has
    /// completed that layer.
    pub fn layer_dir(&self, chain_id: &str) -> Result<PathBuf> {
        let hex = sha256_hex(chain_id).ok_or_else(|| ImageError::InvalidConfig {
            what: "chain id".to_string(),
            reason: format!("{chain_id:?} is not sha256:<64 hex>"),
        })?;
        Ok(self.inner.layers.join(hex))
    }

    /// Path of a blob by digest.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = sha256_hex(digest).ok_or_else(|| ImageError::InvalidConfig {
            what: "digest".to_string(),
            reason: format!("{digest:?} is not sha256:<64 hex>"),
        })?;
        Ok(self.inner.blobs.join(hex))
    }

    /// Reads a (small) blob, e.g. an image config for a verbose ImageStatus.
    pub async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        tokio::fs::read(&p).await.map_err(|e| ImageError::io(&p, e))
    }

    /// Whether every layer of `image` is unpacked in the store.
    pub fn has_layers(&self, image: &PulledImage) -> bool {
        image
            .layers
            .iter()
            .all(|l| self.layer_dir(&l.chain_id).is_ok_and(|d| d.is_dir()))
    }

    /// Pulls `reference` (with `creds`, if any): resolves it to the
    /// linux/amd64 manifest, fetches the config and every layer that is not
    /// in the store yet, verifying each, and unpacks the layers.
    pub async fn pull(
        &self,
        reference: &Reference,
        creds: Option<Credentials>,
    ) -> Result<PulledImage> {
        let m = &self.inner.metrics;
        m.pulls_started.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        tracing::info!(image = %reference, "pulling image");
        let res = self.pull_inner(reference, creds.as_ref()).await;
        match &res {
            Ok((img, endpoint)) => {
                m.pulls_succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    image = %reference,
                    endpoint = %endpoint,
                    id = %img.id,
                    size = img.size,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "pulled image"
                );
            }
            Err(e) => {
                m.pulls_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(image = %reference, error = %e, "pull failed");
            }
        }
        res.map(|(img, _)| img)
    }

    async fn pull_inner(
        &self,
        reference: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<(PulledImage, String)> {
        let auth = Credentials::to_registry_auth(creds);
        let endpoints = endpoints_for(&self.inner.registries, reference.registry());
        let mut last_err = None;
        let mut resolved = None;
        for ep in &endpoints {
            match self.resolve(reference, ep, &auth).await {
                Ok(r) => {
                    resolved = Some((r, ep.url()));
                    break;
                }
                Err(e) => {
                    tracing::info!(image = %reference, endpoint = %ep.url(), error = %e, "endpoint failed");
                    // What an endpoint that answered said (not found, refused)
                    // tells more than a later endpoint that could not be reached.
                    let keep_earlier = matches!(e, ImageError::Registry { .. })
                        && last_err
                            .as_ref()
                            .is_some_and(|earlier| !matches!(earlier, ImageError::Registry { .. }));
                    if !keep_earlier {
                        last_err = Some(e);
                    }
                }
            }
        }
        let Some((r, endpoint)) = resolved else {
            return Err(last_err.unwrap_or_else(|| ImageError::Registry {
                reference: reference.to_string(),
                detail: "no endpoint to pull from".to_string(),
            }));
        };
        Ok((self.fetch_layers(reference, r).await?, endpoint))
    }

    /// Fetches and checks the manifest (through an index if need be) and
    /// the config from one endpoint.
    async fn resolve(
        &self,
        reference: &Reference,
        ep: &Endpoint,
        auth: &RegistryAuth,
    ) -> Result<Resolved> {
        let shown = reference.to_string();
        let client = ep.client(self.inner.progress_timeout);
        let mut oref = match (reference.digest(), reference.tag()) {
            (Some(d), _) => oci_client::Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                d.to_string(),
            ),
            (None, t) => oci_client::Reference::with_tag(
                reference.registry().to_string(),
                reference.repository().to_string(),
                t.unwrap_or("latest").to_string(),
            ),
        };
        if ep.mirror {
            oref.set_mirror_registry(ep.host.clone());
        }
        let (top_bytes, top_digest) = self
            .fetch_document(&client, &oref, auth, &shown, "manifest", reference.digest())
            .await?;
        let top = parse_manifest(&shown, &top_bytes)?;

        let (index, manifest_bytes, manifest_digest, manifest) = if top.is_index() {
            let entries = top.manifests.as_deref().unwrap_or_default();
            let entry = select_platform(entries, OS, ARCH).ok_or_else(|| ImageError::NotFound {
                reference: shown.clone(),
                detail: format!("the image index {top_digest} has no {OS}/{ARCH} manifest"),
            })?;
            if sha256_hex(&entry.digest).is_none() {
                return Err(bad(
                    &shown,
                    format!("index entry digest {:?} is not sha256", entry.digest),
                ));
            }
            let mref = oref.clone_with_digest(entry.digest.clone());
            let (bytes, digest) = self
                .fetch_document(
                    &client,
                    &mref,
                    auth,
                    &shown,
                    "platform manifest",
                    Some(&entry.digest),
                )
                .await?;
            let m = parse_manifest(&shown, &bytes)?;
            if m.is_index() {
                return Err(bad(
                    &shown,
                    format!("index entry {digest} is another index"),
                ));
            }
            (Some((top_bytes, top_digest)), bytes, digest, m)
        } else {
            (None, top_bytes, top_digest, top)
        };

        let config_desc = manifest
            .config
            .clone()
            .ok_or_else(|| bad(&shown, format!("manifest {manifest_digest} has no config")))?;
        if sha256_hex(&config_desc.digest).is_none() {
            return Err(bad(
                &shown,
                format!("config digest {:?} is not sha256", config_desc.digest),
            ));
        }
        if !(0..=MAX_DOCUMENT_SIZE as i64).contains(&config_desc.size) {
            return Err(bad(
                &shown,
                format!("config size {} is out of range", config_desc.size),
            ));
        }
        let config_bytes = match self.read_local_verified(&config_desc.digest).await {
            Some(b) => b,
            None => {
                let mut buf = Vec::with_capacity(config_desc.size as usize);
                self.progressing(
                    &shown,
                    "image config",
                    client.pull_blob(&oref, config_desc.digest.as_str(), &mut buf),
                )
                .await?
                .map_err(|e| map_error(&shown, e))?;
                self.count_download(buf.len());
                let got = sha256_digest(&buf);
                if got != config_desc.digest {
                    return Err(ImageError::DigestMismatch {
                        reference: shown,
                        what: "image config".to_string(),
                        expected: config_desc.digest,
                        actual: got,
                    });
                }
                buf
            }
        };
        let config: RawImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad(&shown, format!("image config {}: {e}", config_desc.digest)))?;
        Ok(Resolved {
            client,
            oref,
            index,
            manifest_bytes: manifest_bytes.to_vec(),
            manifest_digest,
            manifest,
            config_desc,
            config_bytes,
            config,
        })
    }

    /// A manifest or index: from the store when its digest is known and it
    /// is there (a pull by digest of a present image needs no registry),
    /// else from the registry, checked.
    async fn fetch_document(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        auth: &RegistryAuth,
        shown: &str,
        what: &str,
        expected: Option<&str>,
    ) -> Result<(Vec<u8>, String)> {
        if let Some(d) = expected
            && let Some(b) = self.read_local_verified(d).await
        {
            return Ok((b, d.to_string()));
        }
        let (bytes, reported) = self
            .progressing(
                shown,
                what,
                client.pull_manifest_raw(oref, auth, ACCEPTED_MANIFEST_TYPES),
            )
            .await?
            .map_err(|e| map_error(shown, e))?;
        self.count_download(bytes.len());
        let digest = check_document(shown, what, &bytes, expected, &reported)?;
        Ok((bytes.to_vec(), digest))
    }

    /// `fetch`, unless the registry stays silent for the progress timeout
    /// (a document arrives in one piece, so its whole fetch is bounded).
    async fn progressing<T>(
        &self,
        shown: &str,
        what: &str,
        fetch: impl Future<Output = T>,
    ) -> Result<T> {
        tokio::time::timeout(self.inner.progress_timeout, fetch)
            .await
            .map_err(|_| self.stalled(shown, what))
    }

    fn stalled(&self, shown: &str, what: &str) -> ImageError {
        ImageError::Registry {
            reference: shown.to_string(),
            detail: format!(
                "the registry sent nothing for {:?} while {what} was fetched \
                 ([images] pull_progress_timeout)",
                self.inner.progress_timeout
            ),
        }
    }

    async fn read_local_verified(&self, digest: &str) -> Option<Vec<u8>> {
        let p = self.blob_path(digest).ok()?;
        let b = tokio::fs::read(&p).await.ok()?;
        (sha256_digest(&b) == digest).then_some(b)
    }

    fn count_download(&self, n: usize) {
        self.inner
            .metrics
            .bytes_downloaded
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    async fn fetch_layers(&self, reference: &Reference, r: Resolved) -> Result<PulledImage> {
        let shown = reference.to_string();
        let descs = r.manifest.layers.clone().unwrap_or_default();
        let diff_ids = r.config.rootfs.diff_ids.clone();
        if r.config.rootfs.kind != "layers" {
            return Err(bad(
                &shown,
                format!("rootfs type {:?} is not \"layers\"", r.config.rootfs.kind),
            ));
        }
        if descs.len() != diff_ids.len() {
            return Err(bad(
                &shown,
                format!(
                    "manifest {} has {} layers but the config lists {} diff ids",
                    r.manifest_digest,
                    descs.len(),
                    diff_ids.len()
                ),
            ));
        }
        for (d, diff) in descs.iter().zip(&diff_ids) {
            if sha256_hex(&d.digest).is_none() || sha256_hex(diff).is_none() {
                return Err(bad(
                    &shown,
                    format!(
                        "layer digest {:?} / diff id {diff:?} is not sha256",
                        d.digest
                    ),
                ));
            }
            if !is_layer_media_type(&d.media_type) {
                return Err(bad(
                    &shown,
                    format!(
                        "layer {} has unsupported media type {:?}",
                        d.digest, d.media_type
                    ),
                ));
            }
            if d.size < 0 {
                return Err(bad(
                    &shown,
                    format!("layer {} has a negative size", d.digest),
                ));
            }
        }
        let chains = chain_ids(&diff_ids);
        let layers: Vec<LayerRecord> = descs
            .iter()
            .zip(diff_ids.iter().zip(&chains))
            .map(|(d, (diff, chain))| LayerRecord {
                digest: d.digest.clone(),
                diff_id: diff.clone(),
                chain_id: chain.clone(),
                size: d.size as u64,
                media_type: d.media_type.clone(),
            })
            .collect();

        let mut pinned: Vec<String> = vec![r.config_desc.digest.clone(), r.manifest_digest.clone()];
        if let Some((_, d)) = &r.index {
            pinned.push(d.clone());
        }
        for l in &layers {
            pinned.push(l.digest.clone());
            pinned.push(l.chain_id.clone());
        }
        let _pins = PinGuard::new(self.inner.clone(), pinned);

        // The small documents go in first: they are verified already.
        let docs_store = self.clone();
        let config_digest = r.config_desc.digest.clone();
        let config_bytes = r.config_bytes.clone();
        let manifest_digest = r.manifest_digest.clone();
        let manifest_bytes = r.manifest_bytes.clone();
        let index = r.index.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            docs_store.write_blob(&config_digest, &config_bytes)?;
            docs_store.write_blob(&manifest_digest, &manifest_bytes)?;
            if let Some((b, d)) = index {
                docs_store.write_blob(&d, &b)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| join_error(&shown, e))??;

        let abort = Arc::new(AtomicBool::new(false));
        // If the caller drops this pull, the blocking workers stop reading
        // and remove their temp files.
        let _abort_on_drop = AbortOnDrop(abort.clone());
        let client = Arc::new(r.client);
        let oref = Arc::new(r.oref);
        let futs = layers.iter().map(|l| {
            let ctx = LayerCtx {
                reference: shown.clone(),
                client: client.clone(),
                oref: oref.clone(),
                abort: abort.clone(),
            };
            let l = l.clone();
            async move {
                let res = self.fetch_layer(&ctx, &l).await;
                if res.is_err() {
                    // Let the other layers stop early; they clean up after themselves.
                    ctx.abort.store(true, Ordering::SeqCst);
                }
                res
            }
        });
        // join_all, not try_join_all: every layer task must have finished
        // (and removed its temp files) before the pull returns.
        let results = futures::future::join_all(futs).await;
        let mut first_err = None;
        for res in results {
            match res {
                Ok(()) => {}
                Err(LayerFail::Aborted) => {}
                Err(LayerFail::Error(e)) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if abort.load(Ordering::SeqCst) {
            return Err(ImageError::Registry {
                reference: shown,
                detail: "pull aborted".to_string(),
            });
        }

        let size = layers.iter().map(|l| l.size).sum::<u64>() + r.config_desc.size as u64;
        let config = ImageConfig::from(&r.config);
        let repo_digest_of = r
            .index
            .as_ref()
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| r.manifest_digest.clone());
        Ok(PulledImage {
            id: r.config_desc.digest.clone(),
            repo_tag: reference.repo_tag(),
            repo_digest: reference.repo_digest(&repo_digest_of),
            manifest_digest: r.manifest_digest.clone(),
            index_digest: r.index.map(|(_, d)| d),
            size,
            user: config.user.clone(),
            config,
            layers,
        })
    }

    fn layer_lock(&self, chain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = lock(&self.inner.layer_locks);
        map.entry(chain_id.to_string()).or_default().clone()
    }

    fn release_layer_lock(&self, chain_id: &str, lock_arc: Arc<tokio::sync::Mutex<()>>) {
        let mut map = lock(&self.inner.layer_locks);
        // Only the map and our handle left: nobody else waits, forget it.
        if Arc::strong_count(&lock_arc) <= 2 {
            map.remove(chain_id);
        }
    }

    async fn fetch_layer(&self, ctx: &LayerCtx, l: &LayerRecord) -> Result<(), LayerFail> {
        let lock_arc = self.layer_lock(&l.chain_id);
        let res = {
            let _guard = lock_arc.lock().await;
            self.fetch_layer_locked(ctx, l).await
        };
        self.release_layer_lock(&l.chain_id, lock_arc);
        res
    }

    async fn fetch_layer_locked(&self, ctx: &LayerCtx, l: &LayerRecord) -> Result<(), LayerFail> {
        let final_dir = self.layer_dir(&l.chain_id)?;
        if final_dir.is_dir() {
            self.inner
                .metrics
                .layers_reused
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(image = %ctx.reference, layer = %l.digest, "layer already present");
            return Ok(());
        }
        let permit: OwnedSemaphorePermit = self
            .inner
            .layer_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LayerFail::Aborted)?;
        if ctx.abort.load(Ordering::SeqCst) {
            return Err(LayerFail::Aborted);
        }
        let started = Instant::now();
        let blob_path = self.blob_path(&l.digest)?;
        let local = blob_path.is_file();
        let job = LayerJob {
            reference: ctx.reference.clone(),
            layer: l.clone(),
            tmp_dir: self.tmp_path("layer"),
            final_dir,
            tmp_blob: (!local).then(|| self.tmp_path("blob")),
            final_blob: blob_path.clone(),
            layers_dir: self.inner.layers.clone(),
            blobs_dir: self.inner.blobs.clone(),
            metrics: self.inner.metrics.clone(),
            abort: ctx.abort.clone(),
        };
        tracing::info!(image = %ctx.reference, layer = %l.digest, size = l.size, from_store = local, "fetching layer");
        let res = if local {
            let abort = ctx.abort.clone();
            tokio::task::spawn_blocking(move || {
                let f = File::open(&blob_path)
                    .map_err(|e| LayerFail::Error(ImageError::io(&blob_path, e)))?;
                apply_layer(AbortableReader { inner: f, abort }, job)
            })
            .await
            .map_err(|e| LayerFail::Error(join_error(&ctx.reference, e)))?
        } else {
            self.download_and_apply(ctx, l, job).await
        };
        drop(permit);
        if res.is_ok() {
            tracing::info!(
                image = %ctx.reference,
                layer = %l.digest,
                chain_id = %l.chain_id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "layer ready"
            );
        }
        res
    }

    async fn download_and_apply(
        &self,
        ctx: &LayerCtx,
        l: &LayerRecord,
        job: LayerJob,
    ) -> Result<(), LayerFail> {
        let reference = ctx.reference.clone();
        let what = format!("layer {}", l.digest);
        let mut stream = self
            .progressing(
                &reference,
                &what,
                ctx.client.pull_blob_stream(&ctx.oref, l.digest.as_str()),
            )
            .await?
            .map_err(|e| LayerFail::Error(map_error(&reference, e)))?;
        let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let done = Arc::new(AtomicBool::new(false));
        let reader = ChannelReader {
            rx,
            cur: Bytes::new(),
            done: done.clone(),
            abort: ctx.abort.clone(),
        };
        let worker = tokio::task::spawn_blocking(move || apply_layer(reader, job));
        let mut received: u64 = 0;
        let mut fwd_err: Option<ImageError> = None;
        let mut complete = true;
        let mut last_report = Instant::now();
        loop {
            // No byte for the progress timeout: the registry stalled.
            let Ok(next) = tokio::time::timeout(self.inner.progress_timeout, stream.next()).await
            else {
                complete = false;
                fwd_err = Some(self.stalled(&reference, &what));
                break;
            };
            let Some(item) = next else { break };
            if ctx.abort.load(Ordering::SeqCst) {
                complete = false;
                break;
            }
            if last_report.elapsed() >= PROGRESS_LOG_INTERVAL {
                last_report = Instant::now();
                tracing::info!(image = %reference, layer = %l.digest, received, size = l.size, "layer download in progress");
            }
            match item {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    self.count_download(chunk.len());
                    if received > l.size {
                        // Do not let a registry fill the disk.
                        complete = false;
                        fwd_err = Some(ImageError::DigestMismatch {
                            reference: reference.clone(),
                            what: format!("layer {} (size)", l.digest),
                            expected: format!("{} bytes", l.size),
                            actual: format!("more than {} bytes", l.size),
                        });
                        break;
                    }
                    if tx.send(chunk).await.is_err() {
                        // The worker gave up; its error says why.
                        complete = false;
                        break;
                    }
                }
                // oci-client reports its own digest check as an error after
                // the last byte: then our check (which names the layer) decides.
                Err(_) if received == l.size => break,
                Err(e) => {
                    complete = false;
                    fwd_err = Some(ImageError::Registry {
                        reference: reference.clone(),
                        detail: format!("downloading layer {}: {}", l.digest, error_chain(&e)),
                    });
                    break;
                }
            }
        }
        if complete {
            done.store(true, Ordering::SeqCst);
        }
        drop(tx);
        let res = worker
            .await
            .map_err(|e| LayerFail::Error(join_error(&reference, e)))?;
        match (res, fwd_err) {
            (Ok(()), _) => Ok(()),
            (
                Err(LayerFail::Error(
                    e @ (ImageError::DigestMismatch { .. } | ImageError::UnsafeLayer { .. }),
                )),
                _,
            ) => Err(LayerFail::Error(e)),
            (Err(_), Some(f)) => Err(LayerFail::Error(f)),
            (Err(e), None) => Err(e),
        }
    }

    fn tmp_path(&self, kind: &str) -> PathBuf {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        self.inner
            .tmp
            .join(format!("{kind}-{}-{n}", std::process::id()))
    }

    /// Writes a verified small blob (temp file, fsync, rename).
    fn write_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        let dest = self.blob_path(digest)?;
        if dest.is_file() {
            return Ok(());
        }
        let tmp = self.tmp_path("doc");
        let res = (|| -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, &dest)?;
            File::open(&self.inner.blobs)?.sync_all()
        })();
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(ImageError::io(&dest, e));
        }
        Ok(())
    }

    /// Removes every layer whose chain id is not in `keep_chain_ids` and
    /// every blob whose digest is not in `keep_blob_digests`, except what a
    /// pull in progress uses. The caller must not record a new image between
    /// computing the keep sets and this call returning (hold your own lock).
    pub async fn remove_unreferenced(
        &self,
        keep_chain_ids: &HashSet<String>,
        keep_blob_digests: &HashSet<String>,
    ) -> Result<GcReport> {
        let store = self.clone();
        let keep_chain_ids = keep_chain_ids.clone();
        let keep_blob_digests = keep_blob_digests.clone();
        tokio::task::spawn_blocking(move || store.gc_blocking(&keep_chain_ids, &keep_blob_digests))
            .await
            .map_err(|e| join_error("garbage collection", e))?
    }

    fn gc_blocking(
        &self,
        keep_chains: &HashSet<String>,
        keep_blobs: &HashSet<String>,
    ) -> Result<GcReport> {
        let mut report = GcReport::default();
        let pinned: HashSet<String> = lock(&self.inner.pins).keys().cloned().collect();
        for (dir, is_layer) in [(&self.inner.layers, true), (&self.inner.blobs, false)] {
            let entries = fs::read_dir(dir).map_err(|e| ImageError::io(dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ImageError::io(dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let digest = format!("sha256:{name}");
                let keep = if is_layer { keep_chains } else { keep_blobs };
                if keep.contains(&digest) || pinned.contains(&digest) {
                    continue;
                }
                let path = entry.path();
                if is_layer {
                    // Rename first so that a crash never leaves a half-removed
                    // layer under its real name; open() clears tmp/.
                    let doomed = self.tmp_path("gc");
                    fs::rename(&path, &doomed).map_err(|e| ImageError::io(&path, e))?;
                    fs::remove_dir_all(&doomed).map_err(|e| ImageError::io(&doomed, e))?;
                    report.layers_removed.push(digest);
                } else {
                    fs::remove_file(&path).map_err(|e| ImageError::io(&path, e))?;
                    report.blobs_removed.push(digest);
                }
                tracing::info!(what = if is_layer { "layer" } else { "blob" }, digest = %format!("sha256:{name}"), "removed unreferenced");
            }
        }
        Ok(report)
    }

    /// Bytes and inodes used by the store, and the mount point of its file
    /// system.
    pub async fn fs_usage(&self) -> Result<FsUsage> {
        let root = self.inner.root.clone();
        tokio::task::spawn_blocking(move || fs_usage_blocking(&root))
            .await
            .map_err(|e| join_error("image fs usage", e))?
    }
}

struct Resolved {
    client: oci_client::Client,
    oref: oci_client::Reference,
    index: Option<(Vec<u8>, String)>,
    manifest_bytes: Vec<u8>,
    manifest_digest: String,
    manifest: AnyManifest,
    config_desc: Descriptor,
    config_bytes: Vec<u8>,
    config: RawImageConfig,
}

struct LayerCtx {
    reference: String,
    client: Arc<oci_client::Client>,
    oref: Arc<oci_client::Reference>,
    abort: Arc<AtomicBool>,
}

enum LayerFail {
    /// Stopped because another layer of the pull failed.
    Aborted,
    Error(ImageError),
}

impl From<ImageError> for LayerFail {
    fn from(e: ImageError) -> Self {
        LayerFail::Error(e)
    }
}

struct AbortOnDrop(Arc<AtomicBool>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct PinGuard {
    inner: Arc<Inner>,
    keys: Vec<String>,
}

impl PinGuard {
    fn new(inner: Arc<Inner>, keys: Vec<String>) -> PinGuard {
        {
            let mut pins = lock(&inner.pins);
            for k in &keys {
                *pins.entry(k.clone()).or_default() += 1;
            }
        }
        PinGuard { inner, keys }
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = lock(&self.inner.pins);
        for k in &self.keys {
            if let Some(n) = pins.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(k);
                }
            }
        }
    }
}

/// Locks a std mutex; a poisoned one still holds consistent data here (maps
/// of counters and lock handles), so keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bad(reference: &str, reason: String) -> ImageError {
    ImageError::BadImage {
        reference: reference.to_string(),
        reason,
    }
}

fn join_error(what: &str, e: tokio::task::JoinError) -> ImageError {
    ImageError::io(what, io::Error::other(format!("worker task failed: {e}")))
}

/// Checks a manifest/index document: size, and digest against what we asked
/// for (if by digest) — oci-client checks too, this is belt and braces.
fn check_document(
    shown: &str,
    what: &str,
    body: &[u8],
    expected: Option<&str>,
    reported: &str,
) -> Result<String> {
    if body.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(bad(
            shown,
            format!("{what} is larger than {MAX_DOCUMENT_SIZE} bytes"),
        ));
    }
    let actual = sha256_digest(body);
    if let Some(exp) = expected
        && exp != actual
    {
        return Err(ImageError::DigestMismatch {
            reference: shown.to_string(),
            what: what.to_string(),
            expected: exp.to_string(),
            actual,
        });
    }
    if reported != actual {
        tracing::debug!(image = shown, reported, actual = %actual, "registry reported another manifest digest");
    }
    Ok(actual)
}

fn parse_manifest(shown: &str, body: &[u8]) -> Result<AnyManifest> {
    let m: AnyManifest = serde_json::from_slice(body)
        .map_err(|e| bad(shown, format!("cannot parse manifest: {e}")))?;
    if m.schema_version != 2 || m.media_type.as_deref() == Some(DOCKER_SCHEMA1) {
        return Err(bad(
            shown,
            format!(
                "manifest schema version {} is not supported (only schema 2 / OCI)",
                m.schema_version
            ),
        ));
    }
    Ok(m)
}

/// Everything the blocking side of one layer needs.
struct LayerJob {
    reference: String,
    layer: LayerRecord,
    tmp_dir: PathBuf,
    final_dir: PathBuf,
    /// Where to stream the compressed blob (None: it is in the store already).
    tmp_blob: Option<PathBuf>,
    final_blob: PathBuf,
    layers_dir: PathBuf,
    blobs_dir: PathBuf,
    metrics: Arc<PullMetrics>,
    abort: Arc<AtomicBool>,
}

/// Removes the temp dir and temp blob unless disarmed.
struct Cleanup<'a> {
    job: &'a LayerJob,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.job.tmp_dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.job.tmp_dir.display(), error = %e, "cannot remove partial layer");
        }
        if let Some(b) = &self.job.tmp_blob
            && let Err(e) = fs::remove_file(b)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %b.display(), error = %e, "cannot remove partial blob");
        }
    }
}

/// Streams `src` (the compressed blob) through the blob file, the
/// decompressor and the unpacker at once; verifies digest and diff id; then
/// renames the layer (and blob) into place. Runs on a blocking thread.
fn apply_layer<R: Read>(src: R, job: LayerJob) -> Result<(), LayerFail> {
    let l = &job.layer;
    let ioerr = |p: &Path, e: io::Error| LayerFail::Error(ImageError::io(p, e));
    let mut cleanup = Cleanup {
        job: &job,
        armed: true,
    };
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&job.tmp_dir)
        .map_err(|e| ioerr(&job.tmp_dir, e))?;
    let blob_file = match &job.tmp_blob {
        Some(p) => Some(BufWriter::with_capacity(
            IO_BUF,
            File::create(p).map_err(|e| ioerr(p, e))?,
        )),
        None => None,
    };
    let tee = TeeReader {
        inner: src,
        out: blob_file,
    };
    let compressed = BufReader::with_capacity(IO_BUF, HashingReader::new(tee));
    let mut decoder = Decoder::new(compressed).map_err(|e| read_failure(&job, e))?;
    let mut diff = HashingReader::new(&mut decoder);
    let unpacked = unpack_layer(&mut diff, &job.tmp_dir);
    let unpack_err = match unpacked {
        // Hostile content is refused whatever its digest says.
        Err(UnpackError::Unsafe { path, reason }) => {
            return Err(LayerFail::Error(ImageError::UnsafeLayer {
                reference: job.reference.clone(),
                layer: l.digest.clone(),
                path,
                reason,
            }));
        }
        Ok(stats) => {
            job.metrics
                .bytes_unpacked
                .fetch_add(stats.file_bytes, Ordering::Relaxed);
            None
        }
        Err(other) => Some(other),
    };
    let diff_res = match unpack_err {
        None => Some(diff.finish().map(|(d, _, _)| d)),
        Some(_) => None,
    };
    // Drain the rest of the compressed stream: its digest tells whether bad
    // content (rather than a bad image) caused a failure.
    let compressed_res = decoder.into_compressed().finish();
    if job.abort.load(Ordering::SeqCst) {
        return Err(LayerFail::Aborted);
    }
    let (c_digest, _c_len, tee) = match compressed_res {
        Ok(v) => v,
        Err(e) => {
            return Err(match unpack_err {
                Some(u) => unpack_failure(&job, u),
                None => read_failure(&job, e),
            });
        }
    };
    // The compressed digest decides first: it is what the manifest names.
    if c_digest != l.digest {
        return Err(LayerFail::Error(ImageError::DigestMismatch {
            reference: job.reference.clone(),
            what: format!("layer {}", l.digest),
            expected: l.digest.clone(),
            actual: c_digest,
        }));
    }
    let d_digest = match (unpack_err, diff_res) {
        (Some(u), _) => return Err(unpack_failure(&job, u)),
        (None, Some(Ok(d))) => d,
        (None, Some(Err(e))) => return Err(read_failure(&job, e)),
        (None, None) => return Err(read_failure(&job, io::Error::other("layer not unpacked"))),
    };
    if d_digest != l.diff_id {
        return Err(LayerFail::Error(ImageError::DigestMismatch {
            reference: job.reference.clone(),
            what: format!("uncompressed layer {} (diff id)", l.digest),
            expected: l.diff_id.clone(),
            actual: d_digest,
        }));
    }
    // Durable before visible: a crash must not leave a layer or blob under
    // its real name with missing data.
    if let Some(mut w) = tee.out {
        w.flush().map_err(|e| ioerr(&job.final_blob, e))?;
        let f = w
            .into_inner()
            .map_err(|e| ioerr(&job.final_blob, e.into_error()))?;
        f.sync_data().map_err(|e| ioerr(&job.final_blob, e))?;
    }
    let dir = File::open(&job.tmp_dir).map_err(|e| ioerr(&job.tmp_dir, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| ioerr(&job.tmp_dir, e.into()))?;
    // A worker of an abandoned (dropped) pull may have won the race to
    // the same name: then its copy stands and ours is cleaned up.
    let lost_race = match fs::rename(&job.tmp_dir, &job.final_dir) {
        Ok(()) => false,
        Err(_) if job.final_dir.is_dir() => true,
        Err(e) => return Err(ioerr(&job.final_dir, e)),
    };
    if let Some(b) = &job.tmp_blob {
        match fs::rename(b, &job.final_blob) {
            Ok(()) => {}
            Err(_) if job.final_blob.is_file() => {}
            Err(e) => return Err(ioerr(&job.final_blob, e)),
        }
    }
    for d in [&job.layers_dir, &job.blobs_dir] {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| ioerr(d, e))?;
    }
    cleanup.armed = lost_race;
    job.metrics.layers_unpacked.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn unpack_failure(job: &LayerJob, e: UnpackError) -> LayerFail {
    match e {
        UnpackError::Read(e) => read_failure(job, e),
        UnpackError::Io { path, source } => LayerFail::Error(ImageError::Io {
            path: job.tmp_dir.join(path),
            source,
        }),
        UnpackError::Bad { path, reason } => LayerFail::Error(ImageError::BadImage {
            reference: job.reference.clone(),
            reason: format!("layer {}: entry {path:?}: {reason}", job.layer.digest),
        }),
        UnpackError::Unsafe { path, reason } => LayerFail::Error(ImageError::UnsafeLayer {
            reference: job.reference.clone(),
            layer: job.layer.digest.clone(),
            path,
            reason,
        }),
    }
}

/// A failure reading or unpacking a layer, named by its digest.
fn read_failure(job: &LayerJob, e: io::Error) -> LayerFail {
    if job.abort.load(Ordering::SeqCst) {
        return LayerFail::Aborted;
    }
    LayerFail::Error(ImageError::BadImage {
        reference: job.reference.clone(),
        reason: format!("layer {}: {e}", job.layer.digest),
    })
}

/// Gzip, zstd or plain, told by the first bytes.
enum Decoder<R: BufRead> {
    // Boxed: the gzip state is large and the enum lives on the stack.
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
    Plain(R),
}

impl<R: BufRead> Decoder<R> {
    fn new(mut r: R) -> io::Result<Self> {
        let head = r.fill_buf()?;
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(r)?)
        } else {
            Decoder::Plain(r)
        })
    }
}

impl<I: Read> Decoder<BufReader<HashingReader<I>>> {
    /// The compressed stream, for draining and hashing what is left.
    fn into_compressed(self) -> HashingReader<I> {
        match self {
            Decoder::Gzip(d) => d.into_inner().into_inner(),
            Decoder::Zstd(d) => d.finish().into_inner(),
            Decoder::Plain(r) => r.into_inner(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
            Decoder::Plain(r) => r.read(buf),
        }
    }
}

/// Copies what it reads into the temp blob file.
struct TeeReader<R> {
    inner: R,
    out: Option<BufWriter<File>>,
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(o) = &mut self.out {
            o.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// The blocking end of the download channel. A clean end is only when the
/// sender marked `done`; a dropped sender otherwise is an interruption.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
    done: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.abort.load(Ordering::SeqCst) {
                return Err(io::Error::other("pull aborted"));
            }
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None if self.done.load(Ordering::SeqCst) => return Ok(0),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "download interrupted",
                    ));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

struct AbortableReader<R> {
    inner: R,
    abort: Arc<AtomicBool>,
}

impl<R: Read> Read for AbortableReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.abort.load(Ordering::SeqCst) {
            return Err(io::Error::other("pull aborted"));
        }
        self.inner.read(buf)
    }
}

fn fs_usage_blocking(root: &Path) -> Result<FsUsage> {
    let mut used_bytes = 0u64;
    let mut inodes = 0u64;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            // Removed meanwhile (a concurrent GC or pull): not ours to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ImageError::io(&p, e)),
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        inodes += 1;
        used_bytes += md.blocks() * 512;
        if md.is_dir() {
            match fs::read_dir(&p) {
                Ok(rd) => {
                    for e in rd {
                        let e = e.map_err(|e| ImageError::io(&p, e))?;
                        stack.push(e.path());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io(&p, e)),
            }
        }
    }
    Ok(FsUsage {
        used_bytes,
        inodes_used: inodes,
        mountpoint: mountpoint_of(root)?,
    })
}

/// The longest mount point in /proc/self/mountinfo that contains `path`.
fn mountpoint_of(path: &Path) -> Result<PathBuf> {
    let canon = fs::canonicalize(path).map_err(|e| ImageError::io(path, e))?;
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| ImageError::io("/proc/self/mountinfo", e))?;
    let mut best = PathBuf::from("/");
    for line in info.lines() {
        let Some(mp) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        if canon.starts_with(&mp) && mp.components().count() > best.components().count() {
            best = mp;
        }
    }
    Ok(best)
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs the real blocking layer path (unpack, verify, rename or clean up)
/// on an in-memory blob, for unit tests. Returns the final layer dir.
#[cfg(test)]
pub(crate) fn apply_layer_for_test(
    root: &Path,
    blob: &[u8],
    digest: &str,
    diff_id: &str,
) -> Result<PathBuf> {
    let blobs = root.join("blobs/sha256");
    let layers = root.join("layers");
    let tmp = root.join("tmp");
    for d in [&blobs, &layers, &tmp] {
        mkdir_p(d)?;
    }
    let chain = diff_id.to_string();
    let hex = sha256_hex(&chain).unwrap_or("bad").to_string();
    let dhex = sha256_hex(digest).unwrap_or("bad").to_string();
    let job = LayerJob {
        reference: "test/image:1".to_string(),
        layer: LayerRecord {
            digest: digest.to_string(),
            diff_id: diff_id.to_string(),
            chain_id: chain,
            size: blob.len() as u64,
            media_type: String::new(),
        },
        tmp_dir: tmp.join("layer-test"),
        final_dir: layers.join(&hex),
        tmp_blob: Some(tmp.join("blob-test")),
        final_blob: blobs.join(dhex),
        layers_dir: layers.clone(),
        blobs_dir: blobs,
        metrics: Arc::new(PullMetrics::default()),
        abort: Arc::new(AtomicBool::new(false)),
    };
    match apply_layer(io::Cursor::new(blob.to_vec()), job) {
        Ok(()) => Ok(layers.join(hex)),
        Err(LayerFail::Error(e)) => Err(e),
        Err(LayerFail::Aborted) => Err(ImageError::io(root, io::Error::other("aborted"))),
    }
}
