//! A real registry for the tests: Debian's `docker-registry` on 127.0.0.1 at
//! a free port, with its own config and storage in a temp dir (never the
//! package's /etc config), optionally behind htpasswd Basic auth; killed on
//! drop. Plus test images built here from Debian's busybox-static and pushed
//! with oci-client (OCI or Docker schema 2 media types; gzip, zstd or plain
//! layers). Traffic goes only to 127.0.0.1. The one registry fixture of the
//! workspace: the image crate's tests use it too.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

pub const BUSYBOX: &str = "/bin/busybox";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Upper bound for the registry to listen, not an expectation.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn require(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` not found: install the Debian package `{package}` (apt-get install {package})"
    );
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// OCI chain ids of `diff_ids` (bottom layer first): crid names each
/// unpacked layer directory `<root>/images/layers/<chain hex>`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A port nothing listens on (bound, then released).
pub fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A running docker-registry. Killed and reaped on drop.
pub struct Registry {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
    auth: Option<(String, String)>,
}

impl Registry {
    /// An open registry (no auth).
    pub fn start() -> Registry {
        Self::start_with(None)
    }

    /// A registry that wants htpasswd Basic auth for `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Registry {
        require("docker-registry", "docker-registry");
        // The port is picked free, released, then bound by the registry;
        // should another process take it in between, the registry exits and
        // we try again with another port.
        for _ in 0..5 {
            let mut registry = Self::spawn(auth);
            match registry.wait_listening() {
                Ok(()) => return registry,
                Err(true) => continue,
                Err(false) => panic!(
                    "docker-registry did not listen on 127.0.0.1:{} within {START_TIMEOUT:?}: {}",
                    registry.port,
                    registry.log()
                ),
            }
        }
        panic!("docker-registry exited at start 5 times (see its logs above)")
    }

    fn spawn(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("crid-e2e-registry-")
            .tempdir()
            .expect("registry temp dir");
        let mut auth_yaml = String::new();
        if let Some((user, password)) = auth {
            require("htpasswd", "apache2-utils");
            let output = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(output.status.success(), "htpasswd -Bbn failed");
            let path = dir.path().join("htpasswd");
            fs::write(&path, &output.stdout).expect("write htpasswd");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: crid-e2e\n    path: {}\n",
                path.display()
            );
        }
        let port = dead_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_yaml}",
            storage = dir.path().join("storage").display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        Registry {
            port,
            dir,
            child,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        }
    }

    /// Ok once the port accepts connections; Err(true) if the registry
    /// exited, Err(false) on timeout.
    fn wait_listening(&mut self) -> Result<(), bool> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(true);
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// `registry/repo:tag` (or `registry/repo@digest`).
    pub fn reference(&self, repo: &str, tag_or_digest: &str) -> String {
        let sep = if tag_or_digest.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!("{}/{repo}{sep}{tag_or_digest}", self.host())
    }

    /// crid config (TOML) that lets crid pull from this registry over plain
    /// HTTP: `[registries."127.0.0.1:PORT"] insecure = true` (HTTPS is tried
    /// first, then HTTP).
    pub fn crid_config(&self) -> String {
        format!(
            "[registries.{host:?}]\ninsecure = true\n",
            host = self.host()
        )
    }

    /// A pusher with this registry's credentials (if any).
    pub fn pusher(&self) -> Pusher {
        Pusher::new(
            &self.host(),
            self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        )
    }

    /// The registry's storage directory.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The file in the registry's storage that holds a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
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
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, name: &str, mode: u32, size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        let bytes = name.as_bytes();
        assert!(bytes.len() <= 100, "name too long for the test builder");
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header
    }

    fn push(&mut self, mut header: Header, data: &[u8]) -> &mut Self {
        header.set_cksum();
        self.builder
            .append(&header, data)
            .expect("append tar entry");
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

    fn link(&mut self, kind: EntryType, name: &str, mode: u32, target: &str) -> &mut Self {
        let mut header = Self::header(kind, name, mode, 0);
        assert!(
            target.len() <= 100,
            "link target too long for the test builder"
        );
        header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.push(header, b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(EntryType::Symlink, name, 0o777, target)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(EntryType::Link, name, 0o644, target)
    }

    pub fn chardev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut header = Self::header(EntryType::Char, name, 0o666, 0);
        header.set_device_major(major).expect("device major");
        header.set_device_minor(minor).expect("device minor");
        self.push(header, b"")
    }

    pub fn fifo(&mut self, name: &str) -> &mut Self {
        self.push(Self::header(EntryType::Fifo, name, 0o600, 0), b"")
    }

    pub fn tar(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish tar")
    }

    /// The layer as a gzip blob.
    pub fn gzip(self) -> Blob {
        self.compress(Compression::Gzip)
    }

    /// The layer as a blob with OCI media types.
    pub fn compress(self, compression: Compression) -> Blob {
        Blob::new(&self.tar(), compression, Schema::Oci)
    }
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// Which media types an image is pushed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    Oci,
    /// Docker image manifest v2 schema 2.
    Docker,
}

impl Schema {
    fn manifest_type(self) -> &'static str {
        match self {
            Schema::Oci => OCI_MANIFEST,
            Schema::Docker => DOCKER_MANIFEST,
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            Schema::Oci => OCI_CONFIG,
            Schema::Docker => DOCKER_CONFIG,
        }
    }

    fn layer_type(self, compression: Compression) -> &'static str {
        match (self, compression) {
            (Schema::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (Schema::Docker, _) => "application/vnd.docker.image.rootfs.diff.tar",
            (Schema::Oci, Compression::Gzip) => OCI_LAYER_GZIP,
            (Schema::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (Schema::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// A layer as pushed.
#[derive(Clone, Debug)]
pub struct Blob {
    pub data: Vec<u8>,
    /// Digest of `data` (compressed).
    pub digest: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
    pub media_type: String,
}

impl Blob {
    /// `tar` compressed as asked, with the media type `schema` gives it.
    pub fn new(tar: &[u8], compression: Compression, schema: Schema) -> Blob {
        let data = match compression {
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(tar).expect("gzip");
                encoder.finish().expect("gzip")
            }
            Compression::Zstd => zstd::encode_all(tar, 3).expect("zstd"),
            Compression::None => tar.to_vec(),
        };
        Blob {
            digest: sha256_digest(&data),
            diff_id: sha256_digest(tar),
            data,
            media_type: schema.layer_type(compression).to_string(),
        }
    }

    /// `tar` as an OCI gzip layer.
    pub fn gzip(tar: &[u8]) -> Blob {
        Blob::new(tar, Compression::Gzip, Schema::Oci)
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        if self.media_type.ends_with("gzip") {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&self.data[..])
                .read_to_end(&mut out)
                .expect("gunzip");
            out
        } else if self.media_type.ends_with("zstd") {
            zstd::decode_all(&self.data[..]).expect("unzstd")
        } else {
            self.data.clone()
        }
    }
}

/// The base layer every test image shares: busybox-static as /bin/busybox
/// with /bin/sh, and a minimal /etc/passwd. Built once per test process.
pub fn busybox_layer() -> Blob {
    static LAYER: OnceLock<Blob> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            let busybox = fs::read(BUSYBOX).unwrap_or_else(|e| {
                panic!("cannot read {BUSYBOX} ({e}): install the Debian package `busybox-static`")
            });
            let mut layer = Layer::new();
            layer
                .dir("bin/")
                .file("bin/busybox", 0o755, &busybox)
                .symlink("bin/sh", "busybox")
                .dir("etc/")
                .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
                .dir("tmp/");
            layer.gzip()
        })
        .clone()
}

/// A small layer holding one file, for images that add to the base.
pub fn file_layer(path: &str, content: &[u8]) -> Blob {
    let mut layer = Layer::new();
    if let Some((dir, _)) = path.rsplit_once('/') {
        layer.dir(&format!("{dir}/"));
    }
    layer.file(path, 0o644, content);
    layer.gzip()
}

/// The runtime part (`config`) of the usual test image's config, its `User`
/// being `user`.
pub fn default_config(user: &str) -> serde_json::Value {
    serde_json::json!({
        "User": user,
        "Env": ["PATH=/bin"],
        "Cmd": ["/bin/sh"],
        "WorkingDir": "/",
        "Labels": {"org.crid.e2e": "yes"}
    })
}

/// The image config blob: `config` (as from [`default_config`]) for
/// linux/`arch`, with `layers` as its rootfs.
pub fn config_json(arch: &str, config: &serde_json::Value, layers: &[Blob]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": []
    }))
    .expect("config json")
}

pub fn manifest_json(schema: Schema, config: &[u8], layers: &[Blob]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.data.len()}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": schema.manifest_type(),
        "config": {"mediaType": schema.config_type(), "digest": sha256_digest(config), "size": config.len()},
        "layers": layers
    }))
    .expect("manifest json")
}

/// What was pushed for one image (the linux/amd64 one for an index).
#[derive(Clone, Debug)]
pub struct PushedImage {
    pub repo: String,
    /// `127.0.0.1:PORT/repo:tag`.
    pub reference: String,
    /// `127.0.0.1:PORT/repo@<digest the tag points at>` (the index's for a
    /// multi-arch image).
    pub digest_reference: String,
    /// The image id crid must report: `sha256:` of the config.
    pub id: String,
    /// The digest the tag points at (manifest, or index).
    pub digest: String,
    /// The digest of the (linux/amd64) image manifest: `digest` unless the
    /// tag points at an index.
    pub manifest: String,
    pub layers: Vec<Blob>,
    /// Size crid reports: compressed layers plus config.
    pub size: u64,
}

impl PushedImage {
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.diff_ids())
    }
}

/// Pushes blobs and manifests with oci-client (monolithic uploads).
pub struct Pusher {
    client: oci_client::Client,
    auth: RegistryAuth,
    host: String,
}

impl Pusher {
    pub fn new(host: &str, auth: Option<(&str, &str)>) -> Pusher {
        // reqwest is built without a TLS provider here (as in the image crate).
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

    fn oci_reference(&self, repo: &str, tag_or_digest: &str) -> oci_client::Reference {
        if tag_or_digest.starts_with("sha256:") {
            oci_client::Reference::with_digest(
                self.host.clone(),
                repo.to_string(),
                tag_or_digest.to_string(),
            )
        } else {
            oci_client::Reference::with_tag(
                self.host.clone(),
                repo.to_string(),
                tag_or_digest.to_string(),
            )
        }
    }

    async fn authenticate(&self, reference: &oci_client::Reference) {
        self.client
            .auth(reference, &self.auth, oci_client::RegistryOperation::Push)
            .await
            .expect("authenticate to the test registry for push");
    }

    /// Pushes a blob; returns its digest.
    pub async fn blob(&self, repo: &str, data: &[u8]) -> String {
        let reference = self.oci_reference(repo, "latest");
        self.authenticate(&reference).await;
        let digest = sha256_digest(data);
        self.client
            .push_blob(&reference, data.to_vec(), &digest)
            .await
            .expect("push blob");
        digest
    }

    /// Pushes a manifest or index under `tag` (or under its own digest when
    /// `tag` is a digest); returns its digest.
    pub async fn manifest(&self, repo: &str, tag: &str, body: &[u8], media_type: &str) -> String {
        let reference = self.oci_reference(repo, tag);
        self.authenticate(&reference).await;
        self.client
            .push_manifest_raw(
                &reference,
                body.to_vec(),
                http::HeaderValue::from_str(media_type).expect("media type header"),
            )
            .await
            .expect("push manifest");
        sha256_digest(body)
    }

    /// Pushes a single-platform (linux/amd64) image of `layers` as
    /// `repo:tag`, its config's user being `user`.
    pub async fn image(&self, repo: &str, tag: &str, user: &str, layers: &[Blob]) -> PushedImage {
        self.image_with(repo, tag, &default_config(user), layers, Schema::Oci)
            .await
    }

    /// Pushes a single-platform (linux/amd64) image of `layers` with the
    /// runtime config `config` as `repo:tag`, in `schema`'s media types.
    pub async fn image_with(
        &self,
        repo: &str,
        tag: &str,
        config: &serde_json::Value,
        layers: &[Blob],
        schema: Schema,
    ) -> PushedImage {
        let (config, manifest) = self
            .image_parts("amd64", repo, config, layers, schema)
            .await;
        let digest = self
            .manifest(repo, tag, &manifest, schema.manifest_type())
            .await;
        self.pushed(repo, tag, &digest, &digest, &config, layers)
    }

    async fn image_parts(
        &self,
        arch: &str,
        repo: &str,
        config: &serde_json::Value,
        layers: &[Blob],
        schema: Schema,
    ) -> (Vec<u8>, Vec<u8>) {
        for layer in layers {
            self.blob(repo, &layer.data).await;
        }
        let config = config_json(arch, config, layers);
        self.blob(repo, &config).await;
        let manifest = manifest_json(schema, &config, layers);
        (config, manifest)
    }

    fn pushed(
        &self,
        repo: &str,
        tag: &str,
        digest: &str,
        manifest: &str,
        config: &[u8],
        layers: &[Blob],
    ) -> PushedImage {
        PushedImage {
            repo: repo.to_string(),
            reference: format!("{}/{repo}:{tag}", self.host),
            digest_reference: format!("{}/{repo}@{digest}", self.host),
            id: sha256_digest(config),
            digest: digest.to_string(),
            manifest: manifest.to_string(),
            layers: layers.to_vec(),
            size: layers.iter().map(|l| l.data.len() as u64).sum::<u64>() + config.len() as u64,
        }
    }

    /// The one-layer busybox image as `repo:tag`, running as uid 1000.
    pub async fn busybox(&self, repo: &str, tag: &str) -> PushedImage {
        self.image(repo, tag, "1000:1000", &[busybox_layer()]).await
    }

    /// busybox plus a layer with `/data/<name>` (so images made with
    /// different names share only the base layer).
    pub async fn layered(&self, repo: &str, tag: &str, name: &str) -> PushedImage {
        let extra = file_layer(&format!("data/{name}"), name.as_bytes());
        self.image(repo, tag, "nobody", &[busybox_layer(), extra])
            .await
    }

    /// A multi-arch index as `repo:tag`: linux/arm64 (a one-file layer) and
    /// linux/amd64 (busybox). Returns the amd64 image with the index digest.
    pub async fn multi_arch(&self, repo: &str, tag: &str) -> PushedImage {
        self.multi_arch_with(repo, tag, &default_config(""), &[busybox_layer()])
            .await
    }

    /// A multi-arch index as `repo:tag`: linux/arm64 (a one-file layer) and
    /// linux/amd64 (`amd_layers`), both with the runtime config `config`.
    /// Returns the amd64 image with the index digest.
    pub async fn multi_arch_with(
        &self,
        repo: &str,
        tag: &str,
        config: &serde_json::Value,
        amd_layers: &[Blob],
    ) -> PushedImage {
        let arm_layers = [file_layer("arm64-only", b"arm\n")];
        let (_, arm_manifest) = self
            .image_parts("arm64", repo, config, &arm_layers, Schema::Oci)
            .await;
        let arm_digest = self
            .manifest(
                repo,
                &sha256_digest(&arm_manifest),
                &arm_manifest,
                OCI_MANIFEST,
            )
            .await;
        let (amd_config, amd_manifest) = self
            .image_parts("amd64", repo, config, amd_layers, Schema::Oci)
            .await;
        let amd_digest = self
            .manifest(
                repo,
                &sha256_digest(&amd_manifest),
                &amd_manifest,
                OCI_MANIFEST,
            )
            .await;
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": arm_digest, "size": arm_manifest.len(),
                 "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "digest": amd_digest, "size": amd_manifest.len(),
                 "platform": {"architecture": "amd64", "os": "linux"}}
            ]
        }))
        .expect("index json");
        let index_digest = self.manifest(repo, tag, &index, OCI_INDEX).await;
        self.pushed(
            repo,
            tag,
            &index_digest,
            &amd_digest,
            &amd_config,
            amd_layers,
        )
    }
}

/// Entries directly in `dir` (0 if it does not exist).
pub fn count_entries(dir: &Path) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// A TCP proxy on 127.0.0.1 to a registry that passes everything through,
/// except that once a client asks for one blob, it forwards only the first
/// bytes of that answer and then nothing more, holding the connection open:
/// a registry that stops sending in the middle of a layer. Its tasks live
/// on the test's tokio runtime and end with it.
pub struct StallingProxy {
    pub host: String,
    stalls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StallingProxy {
    /// Headers and a little of the body get through.
    const BYTES_BEFORE_STALL: usize = 1024;

    /// Proxies to `upstream` (`127.0.0.1:PORT`), stalling `blob` (a digest).
    pub async fn start(upstream: &str, blob: &str) -> StallingProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stalling proxy");
        let host = listener.local_addr().expect("proxy address").to_string();
        let stalls = Arc::new(AtomicUsize::new(0));
        let (counted, upstream, path) = (
            stalls.clone(),
            upstream.to_string(),
            format!("/blobs/{blob}"),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let stall = Arc::new(AtomicBool::new(false));
                let (asked, counted, path) = (stall.clone(), counted.clone(), path.clone());
                // HTTP/1.1 asks one thing at a time on a connection: once the
                // blob is asked for, what comes back is its answer.
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
                        if String::from_utf8_lossy(&buffer[..n]).contains(&path) {
                            asked.store(true, Ordering::SeqCst);
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    let mut sent_since_stall = 0;
                    while let Ok(n @ 1..) = server_read.read(&mut buffer).await {
                        let stalling = stall.load(Ordering::SeqCst);
                        let end = if stalling {
                            n.min(Self::BYTES_BEFORE_STALL - sent_since_stall)
                        } else {
                            n
                        };
                        if client_write.write_all(&buffer[..end]).await.is_err() {
                            break;
                        }
                        if stalling {
                            sent_since_stall += end;
                            if sent_since_stall >= Self::BYTES_BEFORE_STALL {
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                });
            }
        });
        StallingProxy { host, stalls }
    }

    /// How many times the blob was asked for (and stalled).
    pub fn stalls(&self) -> usize {
        self.stalls.load(std::sync::atomic::Ordering::SeqCst)
    }
}
