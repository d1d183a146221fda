//! Pulls from a real docker-registry on 127.0.0.1 (the fixture of
//! e2e/src/registry.rs, plus common/mod.rs).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::Ordering;

use common::*;
use image::{
    AuthConfig, Credentials, ImageError, ImageStore, PullLimits, PulledImage, Reference,
    RegistryConfig, sha256_digest,
};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Registries config marking `host` insecure (HTTPS tried, then HTTP).
fn insecure(host: &str) -> BTreeMap<String, RegistryConfig> {
    let mut m = BTreeMap::new();
    m.insert(
        host.to_string(),
        RegistryConfig {
            endpoints: vec![],
            insecure: true,
        },
    );
    m
}

/// The default limits but `layers` layers at once.
fn limits(layers: usize) -> PullLimits {
    PullLimits {
        max_concurrent_layers: layers,
        ..PullLimits::default()
    }
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The store holds no temp file, and no layer or blob outside `keep`.
fn assert_clean(store_root: &Path) {
    let tmp = store_root.join("tmp");
    let n = fs::read_dir(&tmp).map(|r| r.count()).unwrap_or(0);
    assert_eq!(n, 0, "temp files left in {}", tmp.display());
}

/// A pull that failed on the bottom layer left neither it unpacked nor its
/// blob stored.
fn assert_bottom_layer_not_kept(store: &ImageStore, pushed: &PushedImage, why: &str) {
    let diff_ids: Vec<String> = pushed.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chain = image::chain_ids(&diff_ids);
    assert!(
        !store.layer_dir(&chain[0]).expect("dir").exists(),
        "the {why} layer is unpacked"
    );
    assert!(
        !store
            .blob_path(&pushed.layers[0].digest)
            .expect("path")
            .exists(),
        "the {why} blob is stored"
    );
}

fn check_busybox_image(store: &ImageStore, img: &PulledImage, pushed: &PushedImage, host: &str) {
    assert_eq!(img.id, pushed.id);
    assert_eq!(img.manifest_digest, pushed.manifest);
    assert_eq!(img.user, "1000:1000");
    assert_eq!(img.config.cmd, Some(vec!["echo hello".to_string()]));
    assert_eq!(
        img.config.entrypoint,
        Some(vec!["/bin/sh".to_string(), "-c".to_string()])
    );
    assert_eq!(img.config.working_dir, "/data");
    assert_eq!(img.config.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(img.config.stop_signal.as_deref(), Some("SIGQUIT"));
    assert_eq!(
        img.config.labels.get("org.crid.test").map(String::as_str),
        Some("yes")
    );
    assert_eq!(img.size, pushed.size);
    assert_eq!(img.layers.len(), 3);
    let diff_ids: Vec<String> = pushed.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(img.chain_ids(), image::chain_ids(&diff_ids));
    assert!(
        img.repo_digest
            .starts_with(&format!("{host}/{}@sha256:", pushed.repo))
    );
    assert!(store.has_layers(img));

    let l1 = store.layer_dir(&img.layers[0].chain_id).expect("dir");
    let l2 = store.layer_dir(&img.layers[1].chain_id).expect("dir");
    let l3 = store.layer_dir(&img.layers[2].chain_id).expect("dir");
    let busybox = fs::read(BUSYBOX).expect("busybox");
    assert_eq!(fs::read(l1.join("bin/busybox")).expect("busybox"), busybox);
    assert_eq!(
        fs::metadata(l1.join("bin/busybox")).expect("md").mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::read_link(l1.join("bin/sh")).expect("sh"),
        Path::new("busybox")
    );
    assert_eq!(
        fs::metadata(l1.join("bin/ls")).expect("ls").ino(),
        fs::metadata(l1.join("bin/busybox")).expect("bb").ino()
    );
    let null = fs::symlink_metadata(l1.join("dev/null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(
        fs::symlink_metadata(l1.join("run/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        fs::read_link(l1.join("var/run")).expect("var/run"),
        Path::new("/run")
    );
    // Layer 2: overlay whiteout and opaque dir.
    let wh = fs::symlink_metadata(l2.join("etc/motd")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(
        l2.join("var/cache").as_path(),
        "trusted.overlay.opaque",
        &mut buf,
    )
    .expect("opaque xattr");
    assert_eq!(&buf[..n], b"y");
    assert_eq!(fs::read(l2.join("var/cache/new")).expect("new"), b"new\n");
    assert_eq!(
        fs::read(l3.join("data/hello.txt")).expect("hello"),
        b"hello from layer 3\n"
    );
    // Blobs are in the store under their digests.
    for d in img.blob_digests() {
        assert!(
            store.blob_path(&d).expect("path").is_file(),
            "blob {d} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_multi_arch_by_tag_and_digest_then_reuse() {
    init_tracing();
    let reg = Registry::start();
    let host = reg.host();
    let pushed = push_multi_arch(&reg.pusher(), "test/busybox").await;
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(3)).expect("open");

    let img = store
        .pull(&reference(&format!("{host}/test/busybox:multi")), None)
        .await
        .expect("pull by tag");
    check_busybox_image(&store, &img, &pushed, &host);
    assert_eq!(
        img.repo_tag.as_deref(),
        Some(format!("{host}/test/busybox:multi").as_str())
    );
    assert_eq!(img.index_digest.as_deref(), Some(pushed.digest.as_str()));
    assert_eq!(
        img.repo_digest,
        format!("{host}/test/busybox@{}", pushed.digest)
    );
    let m = store.metrics();
    assert_eq!(m.layers_unpacked.load(Ordering::Relaxed), 3);
    // Never the arm64 layer.
    assert!(!store.blob_path(&sha256_digest(b"arm")).expect("p").exists());

    // Again: nothing but documents is downloaded.
    let before = m.bytes_downloaded.load(Ordering::Relaxed);
    let again = store
        .pull(&reference(&format!("{host}/test/busybox:multi")), None)
        .await
        .expect("pull again");
    assert_eq!(again, img);
    let delta = m.bytes_downloaded.load(Ordering::Relaxed) - before;
    let smallest_layer = pushed
        .layers
        .iter()
        .map(|l| l.data.len())
        .min()
        .unwrap_or(0) as u64;
    assert!(
        delta < 4096 && delta < smallest_layer.max(4096),
        "re-pull downloaded {delta} bytes"
    );
    assert_eq!(m.layers_unpacked.load(Ordering::Relaxed), 3);
    assert_eq!(m.layers_reused.load(Ordering::Relaxed), 3);

    // By index digest and by manifest digest: all in the store already, so
    // not a byte from the registry.
    let before = m.bytes_downloaded.load(Ordering::Relaxed);
    let by_index = store
        .pull(
            &reference(&format!("{host}/test/busybox@{}", pushed.digest)),
            None,
        )
        .await
        .expect("pull by index digest");
    assert_eq!(by_index.id, img.id);
    assert_eq!(by_index.repo_tag, None);
    let by_manifest = store
        .pull(
            &reference(&format!("{host}/test/busybox:ignored@{}", pushed.manifest)),
            None,
        )
        .await
        .expect("pull by manifest digest");
    assert_eq!(by_manifest.id, img.id);
    assert_eq!(by_manifest.index_digest, None);
    assert_eq!(
        by_manifest.repo_digest,
        format!("{host}/test/busybox@{}", pushed.manifest)
    );
    assert_eq!(
        m.bytes_downloaded.load(Ordering::Relaxed),
        before,
        "pull by digest of a present image"
    );
    assert_clean(root.path());

    // A digest the registry does not have.
    let missing = format!("{host}/test/busybox@{}", sha256_digest(b"nope"));
    match store.pull(&reference(&missing), None).await {
        Err(ImageError::NotFound { reference, .. }) => assert_eq!(reference, missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_and_missing_tag() {
    init_tracing();
    let reg = Registry::start();
    let host = reg.host();
    let pushed = push_multi_arch(&reg.pusher(), "lib/bb").await;
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(2)).expect("open");
    let img = store
        .pull(&reference(&format!("{host}/lib/bb:docker")), None)
        .await
        .expect("pull docker manifest");
    assert_eq!(img.layers.len(), 2);
    assert_eq!(
        img.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(img.index_digest, None);
    let l1 = store.layer_dir(&img.layers[0].chain_id).expect("dir");
    assert_eq!(
        fs::read(l1.join("bin/busybox")).expect("bb"),
        fs::read(BUSYBOX).expect("bb")
    );
    // The first layer is the same tar as in the OCI image: same chain id.
    assert_eq!(img.layers[0].chain_id, pushed.layers[0].diff_id);

    match store
        .pull(&reference(&format!("{host}/lib/bb:nosuchtag")), None)
        .await
    {
        Err(e @ ImageError::NotFound { .. }) => assert!(e.to_string().contains("nosuchtag"), "{e}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match store
        .pull(&reference(&format!("{host}/no/such/repo:1")), None)
        .await
    {
        Err(ImageError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_clean(root.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_the_work() {
    init_tracing();
    let reg = Registry::start();
    let host = reg.host();
    let pushed = push_multi_arch(&reg.pusher(), "test/shared").await;
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(3)).expect("open");
    let r = reference(&format!("{host}/test/shared:multi"));
    let (a, b, c) = tokio::join!(
        store.pull(&r, None),
        store.pull(&r, None),
        store.pull(&r, None)
    );
    let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
    assert_eq!(a, b);
    assert_eq!(b, c);
    check_busybox_image(&store, &a, &pushed, &host);
    let m = store.metrics();
    // Each layer was downloaded and unpacked exactly once.
    assert_eq!(m.layers_unpacked.load(Ordering::Relaxed), 3);
    assert_eq!(m.layers_reused.load(Ordering::Relaxed), 6);
    assert_clean(root.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_credentials() {
    init_tracing();
    let reg = Registry::start_with_auth("alice", "wonderland");
    let host = reg.host();
    push_multi_arch(&reg.pusher(), "private/bb").await;
    let r = reference(&format!("{host}/private/bb:multi"));

    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(2)).expect("open");
    match store.pull(&r, None).await {
        Err(e @ ImageError::Unauthorized { .. }) => {
            assert!(e.to_string().contains("private/bb"), "{e}")
        }
        other => panic!("anonymous: expected Unauthorized, got {other:?}"),
    }
    let wrong = Credentials::from_auth_config(
        &AuthConfig {
            username: "alice".into(),
            password: "wrong".into(),
            ..AuthConfig::default()
        },
        &host,
    )
    .expect("creds");
    match store.pull(&r, wrong).await {
        Err(ImageError::Unauthorized { .. }) => {}
        other => panic!("wrong password: expected Unauthorized, got {other:?}"),
    }
    assert_clean(root.path());
    assert_eq!(count_entries(&root.path().join("layers")), 0);

    let good = Credentials::from_auth_config(
        &AuthConfig {
            username: "alice".into(),
            password: "wonderland".into(),
            ..AuthConfig::default()
        },
        &host,
    )
    .expect("creds");
    let img = store.pull(&r, good).await.expect("pull with password");
    assert!(store.has_layers(&img));

    // The `auth` field (base64 user:pass), into a fresh store so every blob
    // is fetched with it.
    let root2 = tempfile::tempdir().expect("tempdir");
    let store2 = ImageStore::open(root2.path(), insecure(&host), limits(2)).expect("open");
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:wonderland");
    let creds = Credentials::from_auth_config(
        &AuthConfig {
            auth,
            ..AuthConfig::default()
        },
        &host,
    )
    .expect("creds");
    let img2 = store2.pull(&r, creds).await.expect("pull with auth field");
    assert_eq!(img2.id, img.id);
    assert!(store2.has_layers(&img2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blob_is_refused_and_nothing_of_it_is_kept() {
    init_tracing();
    let reg = Registry::start();
    let host = reg.host();
    let pushed = push_multi_arch(&reg.pusher(), "test/tampered").await;
    // Corrupt the gzip busybox layer in the registry's own storage.
    let victim = &pushed.layers[0];
    let file = reg.blob_file(&victim.digest);
    let mut data = fs::read(&file).expect("registry blob");
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    data[mid + 7] ^= 0x55;
    fs::write(&file, &data).expect("tamper");

    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(3)).expect("open");
    let r = reference(&format!("{host}/test/tampered:multi"));
    match store.pull(&r, None).await {
        Err(e @ ImageError::DigestMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&victim.digest), "{msg}");
            assert!(msg.contains("test/tampered"), "{msg}");
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert_clean(root.path());
    assert_bottom_layer_not_kept(&store, &pushed, "tampered");
    // Without the bottom layer no chain can have been completed... but the
    // layers are keyed by chain id, so the others may be done; all of them
    // go away with GC since no image references them.
    let report = store
        .remove_unreferenced(&HashSet::new(), &HashSet::new())
        .await
        .expect("gc");
    assert!(report.layers_removed.len() <= 2);
    assert_eq!(count_entries(&root.path().join("layers")), 0);
    assert_eq!(count_entries(&root.path().join("blobs/sha256")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_is_tried_first_and_dead_endpoints_are_skipped() {
    init_tracing();
    let reg = Registry::start();
    let host = reg.host();
    let pushed = push_multi_arch(&reg.pusher(), "test/mirrored").await;
    // The image names a registry nobody listens on; its mirrors are a dead
    // port, then the real registry. All on 127.0.0.1.
    let upstream = format!("127.0.0.1:{}", dead_port());
    let dead_mirror = format!("http://127.0.0.1:{}", dead_port());
    let mut regs = BTreeMap::new();
    regs.insert(
        upstream.clone(),
        RegistryConfig {
            endpoints: vec![dead_mirror, format!("http://{host}")],
            insecure: false,
        },
    );
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), regs, limits(2)).expect("open");
    let img = store
        .pull(&reference(&format!("{upstream}/test/mirrored:multi")), None)
        .await
        .expect("pull via mirror");
    assert_eq!(img.id, pushed.id);
    assert_eq!(
        img.repo_tag.as_deref(),
        Some(format!("{upstream}/test/mirrored:multi").as_str())
    );
    assert!(store.has_layers(&img));
    assert_clean(root.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_is_unavailable() {
    init_tracing();
    let host = format!("127.0.0.1:{}", dead_port());
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(2)).expect("open");
    match store.pull(&reference(&format!("{host}/x/y:1")), None).await {
        Err(e @ ImageError::Registry { .. }) => {
            assert!(e.to_string().contains(&host), "{e}");
        }
        other => panic!("expected Registry error, got {other:?}"),
    }
    assert_clean(root.path());
    assert_eq!(
        count_entries(&root.path().join("blobs")),
        1,
        "only the empty sha256 dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layer_from_registry_is_refused() {
    init_tracing();
    let reg = Registry::start();
    let host = reg.host();
    let p = reg.pusher();
    let mut ok = Layer::new();
    ok.file("fine", 0o644, b"fine");
    let mut evil = Layer::new();
    evil.symlink("escape", "/")
        .file("escape/tmp/crid-hostile-marker", 0o644, b"pwned");
    let layers = vec![ok.gzip(), evil.gzip()];
    push_image(&p, "test/evil", "1", &layers).await;
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(2)).expect("open");
    match store
        .pull(&reference(&format!("{host}/test/evil:1")), None)
        .await
    {
        Err(e @ ImageError::UnsafeLayer { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&layers[1].digest) && msg.contains("escape"),
                "{msg}"
            );
        }
        other => panic!("expected UnsafeLayer, got {other:?}"),
    }
    assert!(!Path::new("/tmp/crid-hostile-marker").exists());
    assert_clean(root.path());
    let chain = image::chain_ids(&layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>());
    assert!(!store.layer_dir(&chain[1]).expect("dir").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_and_fs_usage() {
    init_tracing();
    let reg = Registry::start();
    let host = reg.host();
    let p = reg.pusher();
    let pushed = push_multi_arch(&p, "test/gc").await;
    // A second image sharing the bottom layer.
    let mut extra = Layer::new();
    extra.file("extra", 0o644, b"extra");
    let two = vec![pushed.layers[0].clone(), extra.compress(Compression::Zstd)];
    push_image(&p, "test/gc2", "1", &two).await;

    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(2)).expect("open");
    let empty = store.fs_usage().await.expect("usage");
    let a = store
        .pull(&reference(&format!("{host}/test/gc:multi")), None)
        .await
        .expect("a");
    let b = store
        .pull(&reference(&format!("{host}/test/gc2:1")), None)
        .await
        .expect("b");
    assert_eq!(
        a.layers[0].chain_id, b.layers[0].chain_id,
        "shared bottom layer"
    );
    let full = store.fs_usage().await.expect("usage");
    assert!(
        full.used_bytes > empty.used_bytes + 1_000_000,
        "{full:?} vs {empty:?}"
    );
    assert!(
        full.inodes_used > empty.inodes_used + 20,
        "{full:?} vs {empty:?}"
    );
    assert!(full.mountpoint.is_dir());
    assert!(
        root.path()
            .canonicalize()
            .expect("canon")
            .starts_with(&full.mountpoint)
    );

    // Keep only b.
    let keep_chains: HashSet<String> = b.chain_ids().into_iter().collect();
    let keep_blobs: HashSet<String> = b.blob_digests().into_iter().collect();
    let report = store
        .remove_unreferenced(&keep_chains, &keep_blobs)
        .await
        .expect("gc");
    assert_eq!(report.layers_removed.len(), 2, "{report:?}");
    assert!(store.has_layers(&b));
    assert!(!store.has_layers(&a));
    for d in b.blob_digests() {
        assert!(store.blob_path(&d).expect("p").is_file());
    }
    for d in [&a.id, &a.manifest_digest] {
        assert!(!store.blob_path(d).expect("p").exists());
    }
    // a comes back, fetching only what GC removed.
    let again = store
        .pull(&reference(&format!("{host}/test/gc:multi")), None)
        .await
        .expect("a again");
    assert_eq!(again.id, a.id);
    assert!(store.has_layers(&again));
    // Then everything goes.
    store
        .remove_unreferenced(&HashSet::new(), &HashSet::new())
        .await
        .expect("gc all");
    assert_eq!(count_entries(&root.path().join("layers")), 0);
    assert_eq!(count_entries(&root.path().join("blobs/sha256")), 0);
    assert_clean(root.path());
}

#[test]
fn open_clears_leftovers_and_refuses_bad_config() {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("tmp/layer-123-0/etc")).expect("mkdir");
    fs::write(root.path().join("tmp/blob-123-1"), b"partial").expect("write");
    ImageStore::open(root.path(), BTreeMap::new(), limits(1)).expect("open");
    assert_eq!(
        count_entries(&root.path().join("tmp")),
        0,
        "crash leftovers removed"
    );

    let mut bad = BTreeMap::new();
    bad.insert(
        "docker.io".to_string(),
        RegistryConfig {
            endpoints: vec!["ftp://mirror".into()],
            insecure: false,
        },
    );
    match ImageStore::open(root.path(), bad, limits(1)) {
        Err(e @ ImageError::InvalidConfig { .. }) => {
            assert!(e.to_string().contains("ftp://mirror"), "{e}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_pull_leaves_no_temp_files() {
    init_tracing();
    let reg = Registry::start();
    let host = reg.host();
    push_multi_arch(&reg.pusher(), "test/dropped").await;
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(root.path(), insecure(&host), limits(3)).expect("open");
    let r = reference(&format!("{host}/test/dropped:multi"));
    // Give up on the pull almost at once (wherever it is by then).
    let _ = tokio::time::timeout(std::time::Duration::from_millis(5), store.pull(&r, None)).await;
    // Its workers notice and clean up; wait for that (bounded), not for a time.
    for _ in 0..400 {
        if count_entries(&root.path().join("tmp")) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_clean(root.path());
    // Whatever finished is complete; the next pull fills in the rest.
    let img = store.pull(&r, None).await.expect("pull after drop");
    assert!(store.has_layers(&img));
    assert_clean(root.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_stops_sending_ends_the_pull_and_nothing_is_kept() {
    init_tracing();
    let reg = Registry::start();
    let pushed = push_multi_arch(&reg.pusher(), "test/stalled").await;
    // The busybox layer, the largest: it is still arriving when the
    // registry goes silent.
    let victim = pushed.layers[0].digest.clone();
    let proxy = StallingProxy::start(&reg.host(), &victim).await;
    let mut registries = insecure(&proxy.host);
    registries.extend(insecure(&reg.host()));
    let root = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(
        root.path(),
        registries,
        PullLimits {
            progress_timeout: std::time::Duration::from_secs(2),
            ..PullLimits::default()
        },
    )
    .expect("open");

    let stalled = reference(&format!("{}/test/stalled:multi", proxy.host));
    match store.pull(&stalled, None).await {
        Err(e @ ImageError::Registry { .. }) => {
            let message = e.to_string();
            assert!(message.contains("pull_progress_timeout"), "{message}");
            assert!(message.contains(&victim), "names the layer: {message}");
        }
        other => panic!("expected the stalled pull to fail, got {other:?}"),
    }
    assert!(
        proxy.stalls() > 0,
        "the proxy never saw the layer asked for"
    );
    assert_clean(root.path());
    assert_bottom_layer_not_kept(&store, &pushed, "stalled");

    // The same image from a registry that answers: the store is usable.
    let direct = reference(&format!("{}/test/stalled:multi", reg.host()));
    let img = store
        .pull(&direct, None)
        .await
        .expect("pull from the registry");
    assert!(store.has_layers(&img));
    assert_clean(root.path());
}
