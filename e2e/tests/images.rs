//! The CRI ImageService of the real crid against a real registry (Debian's
//! docker-registry on 127.0.0.1, see `e2e::registry`): pull by tag, digest
//! and index, through a mirror and with auth; status, list, remove, image GC
//! and image fs info; records across a restart; a kill -9 of crid mid-pull.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use e2e::registry::{
    Blob, Layer, PushedImage, Registry, StallingProxy, count_entries, dead_port, sha256_digest,
};
use e2e::{Crid, TestEnv};
use nix::sys::signal::Signal;
use proto::cri;
use proto::cri::image_service_client::ImageServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

type Client = ImageServiceClient<Channel>;

/// A test env whose crid pulls from `registry` over plain HTTP.
fn env_for(registry: &Registry) -> TestEnv {
    let mut env = TestEnv::new();
    env.extra_config = registry.crid_config();
    env
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn client(crid: &Crid) -> Client {
    crid.images().await.expect("image client")
}

async fn pull_with(
    client: &mut Client,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, Status> {
    client
        .pull_image(cri::PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn pull(client: &mut Client, image: &str) -> String {
    pull_with(client, image, None)
        .await
        .unwrap_or_else(|e| panic!("PullImage {image}: {e}"))
}

async fn status_verbose(
    client: &mut Client,
    image: &str,
    verbose: bool,
) -> cri::ImageStatusResponse {
    client
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .unwrap_or_else(|e| panic!("ImageStatus {image}: {e}"))
        .into_inner()
}

async fn status(client: &mut Client, image: &str) -> Option<cri::Image> {
    status_verbose(client, image, false).await.image
}

async fn list(client: &mut Client, filter: Option<&str>) -> Vec<cri::Image> {
    client
        .list_images(cri::ListImagesRequest {
            filter: filter.map(|f| cri::ImageFilter { image: spec(f) }),
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn remove(client: &mut Client, image: &str) {
    client
        .remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .unwrap_or_else(|e| panic!("RemoveImage {image}: {e}"));
}

fn layers_dir(env: &TestEnv) -> PathBuf {
    env.root().join("images").join("layers")
}

fn blobs_dir(env: &TestEnv) -> PathBuf {
    env.root().join("images").join("blobs").join("sha256")
}

fn layer_path(env: &TestEnv, chain_id: &str) -> PathBuf {
    layers_dir(env).join(chain_id.trim_start_matches("sha256:"))
}

fn tmp_dir(env: &TestEnv) -> PathBuf {
    env.root().join("images").join("tmp")
}

/// The names of the entries directly in `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `len` bytes of incompressible pseudo-random data (splitmix64 from `seed`).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An uncompressed tar layer (OCI `...layer.v1.tar`) holding one file of
/// `len` pseudo-random bytes: random data does not compress, and a plain tar
/// keeps building the test image cheap.
fn noise_layer(seed: u64, len: usize) -> Blob {
    let mut layer = Layer::new();
    layer
        .dir("noise/")
        .file(&format!("noise/{seed}"), 0o644, &noise(seed, len));
    let tar = layer.tar();
    let digest = sha256_digest(&tar);
    Blob {
        diff_id: digest.clone(),
        digest,
        data: tar,
        media_type: "application/vnd.oci.image.layer.v1.tar".to_string(),
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) -> Status {
    match result {
        Ok(value) => panic!("{what}: expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{what}: {status}");
            status
        }
    }
}

fn assert_layers_on_disk(env: &TestEnv, image: &PushedImage) {
    for chain_id in image.chain_ids() {
        let dir = layer_path(env, &chain_id);
        assert!(
            dir.is_dir(),
            "layer {} not unpacked at {}",
            chain_id,
            dir.display()
        );
    }
}

#[tokio::test]
async fn pull_by_tag_and_digest_then_status_and_list_agree() {
    let registry = Registry::start();
    let pusher = registry.pusher();
    let pushed = pusher.busybox("e2e/busybox", "v1").await;
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    let image_ref = pull(&mut images, &pushed.reference).await;
    assert_eq!(
        image_ref, pushed.id,
        "image_ref is the image id (config digest)"
    );
    assert_layers_on_disk(&env, &pushed);

    let image = status(&mut images, &pushed.reference)
        .await
        .expect("status by tag");
    assert_eq!(image.id, image_ref);
    assert_eq!(image.repo_tags, vec![pushed.reference.clone()]);
    assert_eq!(image.repo_digests, vec![pushed.digest_reference.clone()]);
    assert_eq!(image.size, pushed.size);
    assert_eq!(image.uid, Some(cri::Int64Value { value: 1000 }));
    assert_eq!(image.username, "");
    assert!(!image.pinned);
    assert_eq!(
        image.spec.as_ref().map(|s| s.image.as_str()),
        Some(image_ref.as_str())
    );

    // The same image by digest, full id, bare hex id and an id prefix.
    let hex = image_ref.trim_start_matches("sha256:").to_string();
    for name in [
        pushed.digest_reference.clone(),
        image_ref.clone(),
        hex.clone(),
        hex[..12].to_string(),
        format!("sha256:{}", &hex[..12]),
    ] {
        let found = status(&mut images, &name).await;
        assert_eq!(
            found.as_ref().map(|i| i.id.as_str()),
            Some(image_ref.as_str()),
            "{name}"
        );
    }

    // Pulling by digest and pulling again find the same image: one record.
    assert_eq!(pull(&mut images, &pushed.digest_reference).await, image_ref);
    assert_eq!(pull(&mut images, &pushed.reference).await, image_ref);
    let all = list(&mut images, None).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0], image, "ListImages and ImageStatus agree");

    // Filtered lists.
    assert_eq!(
        list(&mut images, Some(&pushed.reference)).await,
        vec![image.clone()]
    );
    assert_eq!(
        list(&mut images, Some(&image_ref)).await,
        vec![image.clone()]
    );
    assert!(
        list(&mut images, Some(&registry.reference("e2e/busybox", "v2")))
            .await
            .is_empty()
    );

    // Verbose: containerd's `info` JSON with the image config.
    let verbose = status_verbose(&mut images, &pushed.reference, true).await;
    let info: serde_json::Value =
        serde_json::from_str(verbose.info.get("info").expect("info key")).expect("info is JSON");
    assert_eq!(info["imageSpec"]["architecture"], "amd64");
    assert_eq!(info["imageSpec"]["config"]["User"], "1000:1000");
    assert_eq!(info["chainID"], pushed.chain_ids()[0].as_str());
    assert_eq!(info["layers"].as_array().map(Vec::len), Some(1));

    crid.stop().await;
}

#[tokio::test]
async fn a_multi_arch_index_pulls_the_amd64_image() {
    let registry = Registry::start();
    let pushed = registry.pusher().multi_arch("e2e/multi", "v1").await;
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    assert_eq!(pull(&mut images, &pushed.reference).await, pushed.id);
    let image = status(&mut images, &pushed.reference)
        .await
        .expect("status");
    assert_eq!(
        image.repo_digests,
        vec![pushed.digest_reference.clone()],
        "the index digest"
    );
    assert_eq!(image.uid, None, "no user in the config");
    assert_layers_on_disk(&env, &pushed);
    assert_eq!(count_entries(&layers_dir(&env)), 1, "only the amd64 layer");
    crid.stop().await;
}

#[tokio::test]
async fn bad_references_and_missing_images() {
    let registry = Registry::start();
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    for bad in ["", "e2e/Upper:v1", "busybox:bad tag", "a@sha256:short"] {
        let refused = assert_code(
            pull_with(&mut images, bad, None).await,
            Code::InvalidArgument,
            bad,
        );
        assert!(
            refused.message().contains("image.image"),
            "{bad}: {refused}"
        );
    }
    let no_spec = images.pull_image(cri::PullImageRequest::default()).await;
    let refused = assert_code(no_spec, Code::InvalidArgument, "no image spec");
    assert!(refused.message().contains("image.image"), "{refused}");

    let missing = registry.reference("e2e/nothere", "v1");
    assert_code(
        pull_with(&mut images, &missing, None).await,
        Code::NotFound,
        &missing,
    );

    // Not present: ImageStatus is an empty response, RemoveImage succeeds.
    assert_eq!(
        status_verbose(&mut images, &missing, true).await,
        cri::ImageStatusResponse::default()
    );
    assert_eq!(
        status(&mut images, &format!("sha256:{}", "0".repeat(64))).await,
        None
    );
    remove(&mut images, &missing).await;
    let empty = images
        .image_status(cri::ImageStatusRequest {
            image: spec(""),
            verbose: false,
        })
        .await;
    assert_code(empty, Code::InvalidArgument, "ImageStatus of an empty name");

    assert!(list(&mut images, None).await.is_empty());
    assert_eq!(count_entries(&layers_dir(&env)), 0);
    crid.stop().await;
}

#[tokio::test]
async fn a_registry_with_auth_refuses_without_credentials() {
    let registry = Registry::start_with_auth("crid", "s3cret");
    let pushed = registry.pusher().busybox("e2e/private", "v1").await;
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    let auth = |password: &str| cri::AuthConfig {
        username: "crid".into(),
        password: password.into(),
        ..Default::default()
    };
    let refused = pull_with(&mut images, &pushed.reference, None).await;
    let refused = assert_code(refused, Code::PermissionDenied, "no credentials");
    assert!(refused.message().contains(&pushed.reference), "{refused}");
    let wrong = pull_with(&mut images, &pushed.reference, Some(auth("wrong"))).await;
    assert_code(wrong, Code::PermissionDenied, "wrong password");
    assert!(list(&mut images, None).await.is_empty(), "nothing recorded");

    // Credentials for another registry are not sent.
    let elsewhere = cri::AuthConfig {
        server_address: "https://registry.example.invalid".into(),
        ..auth("s3cret")
    };
    let not_sent = pull_with(&mut images, &pushed.reference, Some(elsewhere)).await;
    assert_code(
        not_sent,
        Code::PermissionDenied,
        "credentials of another registry",
    );
    assert!(list(&mut images, None).await.is_empty(), "nothing recorded");

    let image_ref = pull_with(&mut images, &pushed.reference, Some(auth("s3cret")))
        .await
        .expect("pull with username and password");
    assert_eq!(image_ref, pushed.id);
    assert_layers_on_disk(&env, &pushed);

    // The `auth` field (base64 of user:password), as kubelet sends from a
    // docker config secret.
    let other = registry.pusher().layered("e2e/private", "v2", "v2").await;
    let encoded = cri::AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("crid:s3cret"),
        server_address: registry.host(),
        ..Default::default()
    };
    let image_ref = pull_with(&mut images, &other.reference, Some(encoded))
        .await
        .expect("pull with the auth field");
    assert_eq!(image_ref, other.id);
    let bad = cri::AuthConfig {
        auth: "***".into(),
        ..Default::default()
    };
    let refused = pull_with(&mut images, &other.reference, Some(bad)).await;
    assert_code(refused, Code::InvalidArgument, "malformed auth field");
    crid.stop().await;
}

#[tokio::test]
async fn start_collects_layers_and_blobs_no_image_needs() {
    let registry = Registry::start();
    let pushed = registry.pusher().busybox("e2e/gc", "v1").await;
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;
    pull(&mut images, &pushed.reference).await;
    drop(images);
    crid.stop().await;

    // What a pull that failed after verifying a layer leaves behind.
    let orphan_layer = layers_dir(&env).join("ab".repeat(32));
    std::fs::create_dir(&orphan_layer).expect("plant layer");
    std::fs::write(orphan_layer.join("file"), b"x").expect("plant file");
    let orphan_blob = blobs_dir(&env).join("cd".repeat(32));
    std::fs::write(&orphan_blob, b"blob").expect("plant blob");

    let mut crid = env.start().await;
    // GC runs in the background at start: wait (bounded) for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (orphan_layer.exists() || orphan_blob.exists()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!orphan_layer.exists(), "orphaned layer kept");
    assert!(!orphan_blob.exists(), "orphaned blob kept");
    assert_layers_on_disk(&env, &pushed);
    let mut images = client(&crid).await;
    assert!(status(&mut images, &pushed.reference).await.is_some());
    crid.stop().await;
}

#[tokio::test]
async fn remove_by_tag_or_id_removes_every_tag_and_the_layers() {
    let registry = Registry::start();
    let pusher = registry.pusher();
    let v1 = pusher.busybox("e2e/app", "v1").await;
    let v2 = pusher.busybox("e2e/app", "v2").await;
    assert_eq!(v1.id, v2.id, "one image, two tags");
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    for by_id in [false, true] {
        pull(&mut images, &v1.reference).await;
        pull(&mut images, &v2.reference).await;
        let all = list(&mut images, None).await;
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(
            all[0].repo_tags,
            [v1.reference.clone(), v2.reference.clone()]
        );
        assert!(count_entries(&layers_dir(&env)) > 0);

        let name = if by_id {
            v1.id.clone()
        } else {
            v1.reference.clone()
        };
        remove(&mut images, &name).await;
        assert!(list(&mut images, None).await.is_empty(), "every tag went");
        assert_eq!(status(&mut images, &v2.reference).await, None);
        remove(&mut images, &name).await; // idempotent
        assert_eq!(
            count_entries(&layers_dir(&env)),
            0,
            "layers left after the last image went"
        );
        assert_eq!(
            count_entries(&blobs_dir(&env)),
            0,
            "blobs left after the last image went"
        );
    }
    crid.stop().await;
}

#[tokio::test]
async fn a_shared_base_layer_stays_while_an_image_needs_it() {
    let registry = Registry::start();
    let pusher = registry.pusher();
    let a = pusher.layered("e2e/a", "v1", "a").await;
    let b = pusher.layered("e2e/b", "v1", "b").await;
    assert_eq!(a.chain_ids()[0], b.chain_ids()[0], "same base layer");
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    pull(&mut images, &a.reference).await;
    pull(&mut images, &b.reference).await;
    assert_eq!(count_entries(&layers_dir(&env)), 3, "base + two tops");
    let b_status = status(&mut images, &b.reference).await.expect("b");
    assert_eq!(b_status.username, "nobody");
    assert_eq!(b_status.uid, None);

    remove(&mut images, &a.reference).await;
    assert_layers_on_disk(&env, &b);
    assert!(
        !layer_path(&env, &a.chain_ids()[1]).exists(),
        "a's own layer went"
    );
    assert_eq!(count_entries(&layers_dir(&env)), 2);
    assert_eq!(list(&mut images, None).await, [b_status]);

    remove(&mut images, &b.id).await;
    assert_eq!(count_entries(&layers_dir(&env)), 0);
    crid.stop().await;
}

#[tokio::test]
async fn a_moved_tag_leaves_the_old_image_untagged() {
    let registry = Registry::start();
    let pusher = registry.pusher();
    let old = pusher.busybox("e2e/moving", "v1").await;
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    pull(&mut images, &old.reference).await;
    let new = pusher.layered("e2e/moving", "v1", "new").await;
    assert_ne!(old.id, new.id);
    assert_eq!(pull(&mut images, &new.reference).await, new.id);

    let now = status(&mut images, &new.reference).await.expect("tag");
    assert_eq!(now.id, new.id);
    let before = status(&mut images, &old.id).await.expect("old image kept");
    assert!(before.repo_tags.is_empty(), "{before:?}");
    assert_eq!(before.repo_digests, vec![old.digest_reference.clone()]);
    assert_eq!(list(&mut images, None).await.len(), 2);
    crid.stop().await;
}

#[tokio::test]
async fn concurrent_pulls_of_one_reference_both_succeed() {
    let registry = Registry::start();
    let pushed = registry.pusher().layered("e2e/same", "v1", "same").await;
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut first = client(&crid).await;
    let mut second = client(&crid).await;
    let (a, b) = tokio::join!(
        pull_with(&mut first, &pushed.reference, None),
        pull_with(&mut second, &pushed.reference, None)
    );
    assert_eq!(a.expect("first pull"), pushed.id);
    assert_eq!(b.expect("second pull"), pushed.id);
    assert_eq!(list(&mut first, None).await.len(), 1);
    assert_layers_on_disk(&env, &pushed);
    crid.stop().await;
}

#[tokio::test]
async fn image_fs_info_reports_the_root_file_system() {
    let registry = Registry::start();
    let pushed = registry.pusher().busybox("e2e/fs", "v1").await;
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;
    pull(&mut images, &pushed.reference).await;

    let info = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    assert_eq!(info.image_filesystems.len(), 1, "{info:?}");
    let fs = &info.image_filesystems[0];
    let mountpoint = fs
        .fs_id
        .as_ref()
        .map(|f| f.mountpoint.clone())
        .unwrap_or_default();
    assert!(
        !mountpoint.is_empty() && env.root().starts_with(&mountpoint),
        "mountpoint {mountpoint:?} does not hold the root {}",
        env.root().display()
    );
    assert!(fs.timestamp > 0);
    let used = fs.used_bytes.as_ref().map(|v| v.value).unwrap_or_default();
    // busybox-static alone is over a megabyte, unpacked and as a blob.
    assert!(used > 1_000_000, "used bytes {used}");
    assert!(fs.inodes_used.as_ref().map(|v| v.value).unwrap_or_default() > 0);
    assert_eq!(info.container_filesystems.len(), 1);
    let container_fs = &info.container_filesystems[0];
    assert_eq!(container_fs.fs_id, fs.fs_id);
    crid.stop().await;
}

#[tokio::test]
async fn a_mirror_serves_a_registry_that_is_down() {
    let registry = Registry::start();
    let pushed = registry.pusher().busybox("e2e/mirrored", "v1").await;
    // The image is named after a registry nobody listens on; its mirrors are
    // a dead port first, then the real registry.
    let upstream = format!("127.0.0.1:{}", dead_port());
    let mut env = TestEnv::new();
    env.extra_config = format!(
        "[registries.{upstream:?}]\nendpoints = [\"http://127.0.0.1:{dead}\", {real:?}]\n",
        dead = dead_port(),
        real = registry.url()
    );
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    let reference = format!("{upstream}/e2e/mirrored:v1");
    assert_eq!(pull(&mut images, &reference).await, pushed.id);
    let image = status(&mut images, &reference).await.expect("status");
    assert_eq!(
        image.repo_tags,
        vec![reference.clone()],
        "named after the upstream"
    );
    assert_layers_on_disk(&env, &pushed);
    crid.stop().await;
}

#[tokio::test]
async fn a_registry_that_stops_sending_ends_the_pull_and_leaves_nothing() {
    let registry = Registry::start();
    let pushed = registry.pusher().busybox("e2e/stalled", "v1").await;
    // The bottom layer stalls after its first kilobyte.
    let proxy = StallingProxy::start(&registry.host(), &pushed.layers[0].digest).await;
    let mut env = TestEnv::new();
    env.extra_config = format!(
        "[images]\npull_progress_timeout = \"2s\"\n\n[registries.{proxy:?}]\ninsecure = true\n\n{direct}",
        proxy = proxy.host,
        direct = registry.crid_config()
    );
    let mut crid = env.start().await;
    let mut images = client(&crid).await;

    let stalled = format!("{}/e2e/stalled:v1", proxy.host);
    let error = assert_code(
        pull_with(&mut images, &stalled, None).await,
        Code::Unavailable,
        "a pull from a registry that went silent",
    );
    assert!(
        error.message().contains("pull_progress_timeout")
            && error.message().contains(&pushed.layers[0].digest),
        "names the setting and the layer: {}",
        error.message()
    );
    assert!(proxy.stalls() > 0, "the layer was asked for and stalled");
    assert_eq!(
        entries(&tmp_dir(&env)),
        Vec::<String>::new(),
        "temp files left"
    );
    assert!(
        list(&mut images, None).await.is_empty(),
        "no image recorded"
    );

    // The same image from the registry itself: nothing in the way.
    assert_eq!(pull(&mut images, &pushed.reference).await, pushed.id);
    assert_layers_on_disk(&env, &pushed);
    crid.stop().await;
}

#[tokio::test]
async fn images_survive_a_crid_restart() {
    let registry = Registry::start();
    let pushed = registry.pusher().layered("e2e/kept", "v1", "kept").await;
    let env = env_for(&registry);
    let mut crid = env.start().await;
    let mut images = client(&crid).await;
    pull(&mut images, &pushed.reference).await;
    let before = list(&mut images, None).await;
    drop(images);
    crid.stop().await;

    let mut crid = env.start().await;
    let mut images = client(&crid).await;
    assert_eq!(list(&mut images, None).await, before);
    let image = status(&mut images, &pushed.reference)
        .await
        .expect("status after restart");
    assert_eq!(image.id, pushed.id);
    // The GC crid runs at start keeps what the records need.
    assert_layers_on_disk(&env, &pushed);
    remove(&mut images, &pushed.reference).await;
    assert_eq!(count_entries(&layers_dir(&env)), 0);
    crid.stop().await;
}

/// With the registry configured as its own `http://` endpoint, crid still
/// tries HTTPS to the host last; the registry's own "not found" must be what
/// the caller hears, not that last connection error.
#[tokio::test]
async fn a_missing_image_is_not_found_when_the_registry_is_its_own_http_endpoint() {
    let registry = Registry::start();
    let mut env = TestEnv::new();
    env.extra_config = format!(
        "[registries.{host:?}]\nendpoints = [\"http://{host}\"]\n",
        host = registry.host()
    );
    let mut crid = env.start().await;
    let mut images = client(&crid).await;
    let missing = registry.reference("e2e/nothere", "v1");
    assert_code(
        pull_with(&mut images, &missing, None).await,
        Code::NotFound,
        &missing,
    );
    crid.stop().await;
}

/// A kill -9 of crid while it pulls leaves nothing: after the restart there
/// is no image record, no temp file and (once the start-up GC ran) no layer
/// or blob of the image; the same pull then succeeds.
#[tokio::test]
async fn crid_killed_mid_pull_leaves_nothing_after_restart() {
    /// Upper bound for waits, not an expectation.
    const DEADLINE: Duration = Duration::from_secs(120);
    let registry = Registry::start();
    // Big enough that the pull is in progress for a while: 4 layers of
    // 24 MiB each, downloaded and unpacked in parallel.
    let layers: Vec<Blob> = (1..=4).map(|seed| noise_layer(seed, 24 << 20)).collect();
    let pushed = registry.pusher().image("e2e/big", "v1", "", &layers).await;
    let env = env_for(&registry);
    let mut crid = env.start().await;

    let mut puller = client(&crid).await;
    let reference = pushed.reference.clone();
    let pulling = tokio::spawn(async move { pull_with(&mut puller, &reference, None).await });

    // A layer being fetched has a `layer-*` dir (and a `blob-*` file) in
    // images/tmp from the moment its download starts until it is renamed
    // into place; documents (`doc-*`) are written there too, only briefly.
    let tmp = tmp_dir(&env);
    let deadline = Instant::now() + DEADLINE;
    let in_progress = loop {
        let names = entries(&tmp);
        if names
            .iter()
            .any(|n| n.starts_with("layer-") || n.starts_with("blob-"))
        {
            break Some(names);
        }
        if pulling.is_finished() || Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let Some(in_progress) = in_progress else {
        crid.kill();
        panic!(
            "never saw the pull in progress in {} (pull finished: {}); \
             the image must be bigger for this test to mean anything",
            tmp.display(),
            pulling.is_finished()
        );
    };
    crid.stop_with(nix::sys::signal::Signal::SIGKILL).await;
    let interrupted = tokio::time::timeout(DEADLINE, pulling)
        .await
        .expect("the PullImage call ends once crid is gone")
        .expect("pull task");
    assert!(
        interrupted.is_err(),
        "the pull finished before crid was killed (saw {in_progress:?} in tmp): {interrupted:?}"
    );

    let mut crid = env.start().await;
    let mut images = client(&crid).await;
    assert_eq!(
        list(&mut images, None).await,
        Vec::new(),
        "an image record after a killed pull"
    );
    assert_eq!(
        status_verbose(&mut images, &pushed.reference, true).await,
        cri::ImageStatusResponse::default(),
        "ImageStatus of the reference a killed pull was fetching"
    );
    assert_eq!(entries(&tmp), Vec::<String>::new(), "temp files kept");
    // The start-up GC runs in the background: wait (bounded) for it. This
    // env holds no other image, so nothing may stay under layers/ or blobs/.
    let deadline = Instant::now() + DEADLINE;
    while (count_entries(&layers_dir(&env)) > 0 || count_entries(&blobs_dir(&env)) > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        entries(&layers_dir(&env)),
        Vec::<String>::new(),
        "layers of the killed pull kept (its chain ids: {:?})",
        pushed.chain_ids()
    );
    assert_eq!(
        entries(&blobs_dir(&env)),
        Vec::<String>::new(),
        "blobs of the killed pull kept (config {}, manifest {})",
        pushed.id,
        pushed.digest
    );

    // The store is consistent: the same pull succeeds, and removal empties it.
    assert_eq!(pull(&mut images, &pushed.reference).await, pushed.id);
    assert_layers_on_disk(&env, &pushed);
    let image = status(&mut images, &pushed.reference)
        .await
        .expect("status after the pull");
    assert_eq!(image.size, pushed.size);
    remove(&mut images, &pushed.reference).await;
    assert!(list(&mut images, None).await.is_empty());
    assert_eq!(count_entries(&layers_dir(&env)), 0);
    assert_eq!(count_entries(&blobs_dir(&env)), 0);
    assert_eq!(entries(&tmp), Vec::<String>::new());
    crid.stop().await;
}

/// `dir` empty, waiting (bounded) for the GC crid runs at start.
async fn wait_empty(dir: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_entries(dir) > 0 {
        assert!(Instant::now() < deadline, "{what}: {:?} left", entries(dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// crid killed between PullImage's fetch and its record, and between
/// RemoveImage's forgetting and its GC: after a restart the image is
/// listed exactly when its record was written, nothing unrecorded stays on
/// disk, and the call, repeated, succeeds.
#[tokio::test]
async fn crid_killed_inside_pull_and_remove_leaves_no_phantom_and_no_orphan() {
    let registry = Registry::start();
    let pushed = registry.pusher().busybox("e2e/crash", "v1").await;
    let env = env_for(&registry);

    let mut crid = env.start_crashing_at("image.pull.fetched").await;
    let mut images = client(&crid).await;
    pull_with(&mut images, &pushed.reference, None)
        .await
        .expect_err("crid dies in the pull");
    drop(images);
    assert!(
        !crid.stop_with(Signal::SIGKILL).await.success(),
        "crid did not crash"
    );
    let mut crid = env.start().await;
    let mut images = client(&crid).await;
    assert!(list(&mut images, None).await.is_empty(), "a phantom image");
    wait_empty(&layers_dir(&env), "unrecorded layers").await;
    pull(&mut images, &pushed.reference).await;
    drop(images);
    crid.stop().await;

    let mut crid = env.start_crashing_at("image.remove.forgotten").await;
    let mut images = client(&crid).await;
    assert!(status(&mut images, &pushed.reference).await.is_some());
    images
        .remove_image(cri::RemoveImageRequest {
            image: spec(&pushed.reference),
        })
        .await
        .expect_err("crid dies in the removal");
    drop(images);
    assert!(
        !crid.stop_with(Signal::SIGKILL).await.success(),
        "crid did not crash"
    );
    let mut crid = env.start().await;
    let mut images = client(&crid).await;
    assert!(
        list(&mut images, None).await.is_empty(),
        "the removed image is back"
    );
    wait_empty(&layers_dir(&env), "the removed image's layers").await;
    remove(&mut images, &pushed.reference).await;
    drop(images);
    crid.stop().await;
    assert!(env.leaks().is_empty(), "{:?}", env.leaks());
}
