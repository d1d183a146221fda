//! Test harness: Debian's docker-registry on 127.0.0.1 at a free port with
//! its own config and storage in a temp dir, and test images built here from
//! busybox-static and pushed with oci-client. Test traffic goes only to
//! 127.0.0.1.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image::sha256_digest;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use tar::{EntryType, Header};

pub const BUSYBOX: &str = "/bin/busybox";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

fn require(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` not found: install the Debian package `{package}` (apt-get install {package})"
    );
}

/// A port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A running docker-registry. Killed and reaped on drop.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with(None)
    }

    /// With `Some((user, password))`, the registry wants htpasswd Basic auth.
    pub fn start_with(auth: Option<(&str, &str)>) -> Registry {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut auth_yaml = String::new();
        if let Some((user, pass)) = auth {
            require("htpasswd", "apache2-utils");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let path = dir.path().join("htpasswd");
            fs::write(&path, &out.stdout).expect("write htpasswd");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: crid-test\n    path: {}\n",
                path.display()
            );
        }
        // The port is picked free, then released for the registry to bind.
        let port = dead_port();
        let cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
            dir.path().join("storage").display()
        );
        let cfg_path = dir.path().join("config.yml");
        fs::write(&cfg_path, cfg).expect("write config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut reg = Registry { port, dir, child };
        // Readiness: the port accepts connections (bounded wait, ~10 s).
        for _ in 0..200 {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", reg.log());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return reg;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on 127.0.0.1:{port}: {}",
            reg.log()
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file in the registry's storage that holds a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds tar layers.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, name: &str, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let n = name.as_bytes();
        assert!(n.len() <= 100, "name too long for the test builder");
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        h
    }

    fn push(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).expect("append");
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.push(Self::header(EntryType::Directory, name, 0o755, 0), b"")
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.push(
            Self::header(EntryType::Regular, name, mode, data.len() as u64),
            data,
        )
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(EntryType::Symlink, name, 0o777, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.push(h, b"")
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(EntryType::Link, name, 0o644, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.push(h, b"")
    }

    pub fn chardev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(EntryType::Char, name, 0o666, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.push(h, b"")
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        self.push(Self::header(EntryType::Fifo, name, 0o600, 0), b"")
    }

    pub fn tar(self) -> Vec<u8> {
        self.b.into_inner().expect("tar")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// A layer as pushed: the blob, its media type and diff id.
#[derive(Clone, Debug)]
pub struct Blob {
    pub data: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
}

pub fn compress(tar: &[u8], c: Compression, docker: bool) -> Blob {
    let data = match c {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            e.finish().expect("gzip")
        }
        Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
        Compression::None => tar.to_vec(),
    };
    let media_type = match (docker, c) {
        (true, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (true, _) => "application/vnd.docker.image.rootfs.diff.tar",
        (false, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (false, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (false, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
    };
    Blob {
        digest: sha256_digest(&data),
        diff_id: sha256_digest(tar),
        data,
        media_type: media_type.to_string(),
    }
}

/// The layers of the main test image: busybox with the usual entry types,
/// then a zstd layer with a whiteout and an opaque dir, then a plain tar.
pub fn busybox_layers() -> Vec<Blob> {
    let busybox = fs::read(BUSYBOX).unwrap_or_else(|e| {
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
        compress(&l1.tar(), Compression::Gzip, false),
        compress(&l2.tar(), Compression::Zstd, false),
        compress(&l3.tar(), Compression::None, false),
    ]
}

pub fn config_json(arch: &str, layers: &[Blob]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": "1000:1000",
            "Env": ["PATH=/bin", "GREETING=hi"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hello"],
            "WorkingDir": "/data",
            "ExposedPorts": {"8080/tcp": {}},
            "Volumes": {"/data": {}},
            "Labels": {"org.crid.test": "yes"},
            "StopSignal": "SIGQUIT"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": []
    }))
    .expect("json")
}

pub fn manifest_json(docker: bool, config: &[u8], layers: &[Blob]) -> Vec<u8> {
    let (mt, cmt) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (OCI_MANIFEST, OCI_CONFIG)
    };
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.data.len()}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": cmt, "digest": sha256_digest(config), "size": config.len()},
        "layers": layers
    }))
    .expect("json")
}

/// Pushes blobs and manifests with oci-client (monolithic uploads).
pub struct Pusher {
    client: oci_client::Client,
    auth: RegistryAuth,
    host: String,
}

impl Pusher {
    pub fn new(host: &str, auth: Option<(&str, &str)>) -> Pusher {
        // As ImageStore::open does: reqwest has no built-in TLS provider here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            use_monolithic_push: true,
            ..ClientConfig::default()
        });
        Pusher {
            client,
            auth: match auth {
                Some((u, p)) => RegistryAuth::Basic(u.to_string(), p.to_string()),
                None => RegistryAuth::Anonymous,
            },
            host: host.to_string(),
        }
    }

    fn oref(&self, repo: &str, tag: &str) -> oci_client::Reference {
        if tag.starts_with("sha256:") {
            oci_client::Reference::with_digest(self.host.clone(), repo.to_string(), tag.to_string())
        } else {
            oci_client::Reference::with_tag(self.host.clone(), repo.to_string(), tag.to_string())
        }
    }

    pub async fn blob(&self, repo: &str, data: &[u8]) -> String {
        let r = self.oref(repo, "latest");
        self.client
            .auth(&r, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .expect("auth for push");
        let d = sha256_digest(data);
        self.client
            .push_blob(&r, data.to_vec(), &d)
            .await
            .expect("push blob");
        d
    }

    /// Pushes a manifest or index under `tag` (or under its digest if `tag`
    /// is a digest). Returns its digest.
    pub async fn manifest(&self, repo: &str, tag: &str, body: &[u8], media_type: &str) -> String {
        let r = self.oref(repo, tag);
        self.client
            .auth(&r, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .expect("auth for push");
        self.client
            .push_manifest_raw(
                &r,
                body.to_vec(),
                http::HeaderValue::from_str(media_type).expect("header"),
            )
            .await
            .expect("push manifest");
        sha256_digest(body)
    }
}

/// What [`push_multi_arch`] pushed.
pub struct Pushed {
    pub repo: String,
    pub layers: Vec<Blob>,
    pub config: Vec<u8>,
    pub amd64_manifest: String,
    pub arm64_manifest: String,
    pub index: String,
}

/// Pushes the busybox image as a multi-arch index (amd64 = the 3 layers,
/// arm64 = a one-layer image) under `repo:multi`, and the amd64 image with
/// Docker media types under `repo:docker`.
pub async fn push_multi_arch(p: &Pusher, repo: &str) -> Pushed {
    let layers = busybox_layers();
    for l in &layers {
        p.blob(repo, &l.data).await;
    }
    let config = config_json("amd64", &layers);
    p.blob(repo, &config).await;
    let amd64 = manifest_json(false, &config, &layers);
    let amd64_digest = p
        .manifest(repo, &sha256_digest(&amd64), &amd64, OCI_MANIFEST)
        .await;

    let mut arm = Layer::new();
    arm.file("arm64-only", 0o644, b"arm\n");
    let arm_layers = vec![compress(&arm.tar(), Compression::Gzip, false)];
    p.blob(repo, &arm_layers[0].data).await;
    let arm_config = config_json("arm64", &arm_layers);
    p.blob(repo, &arm_config).await;
    let arm64 = manifest_json(false, &arm_config, &arm_layers);
    let arm64_digest = p
        .manifest(repo, &sha256_digest(&arm64), &arm64, OCI_MANIFEST)
        .await;

    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": arm64_digest, "size": arm64.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": amd64_digest, "size": amd64.len(),
             "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    }))
    .expect("json");
    let index_digest = p.manifest(repo, "multi", &index, OCI_INDEX).await;

    // The same amd64 image with Docker schema 2 media types (gzip + plain).
    let docker_layers: Vec<Blob> = vec![
        compress(&layers_tar(&layers[0]), Compression::Gzip, true),
        compress(&layers_tar(&layers[2]), Compression::None, true),
    ];
    for l in &docker_layers {
        p.blob(repo, &l.data).await;
    }
    let docker_config = config_json("amd64", &docker_layers);
    p.blob(repo, &docker_config).await;
    let docker_manifest = manifest_json(true, &docker_config, &docker_layers);
    p.manifest(repo, "docker", &docker_manifest, DOCKER_MANIFEST)
        .await;

    Pushed {
        repo: repo.to_string(),
        layers,
        config,
        amd64_manifest: amd64_digest,
        arm64_manifest: arm64_digest,
        index: index_digest,
    }
}

/// The uncompressed tar of a test blob.
pub fn layers_tar(b: &Blob) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    if b.media_type.ends_with("gzip") {
        flate2::read::MultiGzDecoder::new(&b.data[..])
            .read_to_end(&mut out)
            .expect("gunzip");
    } else if b.media_type.ends_with("zstd") {
        out = zstd::decode_all(&b.data[..]).expect("unzstd");
    } else {
        out = b.data.clone();
    }
    out
}

/// Pushes a single-platform image made of `layers` under `repo:tag`.
pub async fn push_image(p: &Pusher, repo: &str, tag: &str, layers: &[Blob]) -> (String, String) {
    for l in layers {
        p.blob(repo, &l.data).await;
    }
    let config = config_json("amd64", layers);
    p.blob(repo, &config).await;
    let m = manifest_json(false, &config, layers);
    let d = p.manifest(repo, tag, &m, OCI_MANIFEST).await;
    (sha256_digest(&config), d)
}

/// Files under `dir` (recursive count, symlinks not followed).
pub fn count_entries(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            n += 1;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                n += count_entries(&e.path());
            }
        }
    }
    n
}
