//! What only the image crate's tests need, on top of the workspace's one
//! registry fixture, `e2e::registry` (Debian's docker-registry on 127.0.0.1,
//! test images built from busybox-static and pushed with oci-client): an
//! image whose layers carry every entry type, a whiteout and an opaque dir,
//! in gzip, zstd and plain tar. Test traffic goes only to 127.0.0.1. Shared
//! by tests/pull.rs and examples/pull_bench.rs, each using part of it.

#![allow(dead_code)]

pub use e2e::registry::*;

/// The layers of the main test image: busybox with the usual entry types,
/// then a zstd layer with a whiteout and an opaque dir, then a plain tar.
pub fn busybox_layers() -> Vec<Blob> {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("cannot read {BUSYBOX} ({e}): install the Debian package `busybox-static`")
    });
    let mut l1 = Layer::new();
    l1.dir("bin/")
        .file("bin/busybox", 0o755, &busybox)
        .symlink("bin/sh", "busybox")
        .hardlink("bin/ls", "bin/busybox")
        .dir("dev/")
        .chardev("dev/null", 1, 3)
        .dir("etc/")
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/motd", 0o644, b"welcome\n")
        .dir("var/")
        .dir("var/cache/")
        .file("var/cache/old", 0o644, b"old\n")
        .symlink("var/run", "/run")
        .dir("run/")
        .fifo("run/fifo");
    let mut l2 = Layer::new();
    l2.dir("etc/")
        .file("etc/.wh.motd", 0o644, b"")
        .file("etc/hostname", 0o644, b"crid\n")
        .dir("var/")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", 0o644, b"")
        .file("var/cache/new", 0o644, b"new\n");
    let mut l3 = Layer::new();
    l3.dir("data/")
        .file("data/hello.txt", 0o600, b"hello from layer 3\n");
    vec![
        l1.compress(Compression::Gzip),
        l2.compress(Compression::Zstd),
        l3.compress(Compression::None),
    ]
}

/// The runtime config of the main test image: every field crid reads.
pub fn busybox_config() -> serde_json::Value {
    serde_json::json!({
        "User": "1000:1000",
        "Env": ["PATH=/bin", "GREETING=hi"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hello"],
        "WorkingDir": "/data",
        "ExposedPorts": {"8080/tcp": {}},
        "Volumes": {"/data": {}},
        "Labels": {"org.crid.test": "yes"},
        "StopSignal": "SIGQUIT"
    })
}

/// Pushes the main test image as a multi-arch index (amd64 = the 3 layers,
/// arm64 = a one-layer image) under `repo:multi`, and the amd64 image with
/// Docker media types (gzip + plain layers) under `repo:docker`. Returns the
/// multi-arch one.
pub async fn push_multi_arch(p: &Pusher, repo: &str) -> PushedImage {
    let layers = busybox_layers();
    let pushed = p
        .multi_arch_with(repo, "multi", &busybox_config(), &layers)
        .await;
    let docker_layers = [
        compress(&layers[0].tar(), Compression::Gzip, true),
        compress(&layers[2].tar(), Compression::None, true),
    ];
    p.image_with(
        repo,
        "docker",
        &busybox_config(),
        &docker_layers,
        Schema::Docker,
    )
    .await;
    pushed
}

/// Pushes a single-platform (linux/amd64) image of `layers` with the main
/// test image's config under `repo:tag`.
pub async fn push_image(p: &Pusher, repo: &str, tag: &str, layers: &[Blob]) -> PushedImage {
    p.image_with(repo, tag, &busybox_config(), layers, Schema::Oci)
        .await
}

/// `tar` as a layer blob, with Docker media types if `docker`, else OCI ones.
pub fn compress(tar: &[u8], compression: Compression, docker: bool) -> Blob {
    let schema = if docker { Schema::Docker } else { Schema::Oci };
    Blob::new(tar, compression, schema)
}
