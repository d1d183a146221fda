//! The registry documents we read: manifests, indexes and the image config.
//! Our own lenient serde types (unknown fields ignored, most fields
//! optional) so that Docker schema 2 and OCI documents both parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Media types we ask the registry for, best first.
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// Largest manifest or config we accept; real ones are a few KiB.
pub const MAX_DOCUMENT_SIZE: u64 = 8 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    // `urls` (foreign layers) is deliberately not read: we fetch blobs only
    // from the registry endpoints, never from URLs a manifest names.
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest or an index: which one is told by `mediaType`, or by the
/// presence of `manifests` / `layers`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnyManifest {
    pub schema_version: i64,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
}

impl AnyManifest {
    pub fn is_index(&self) -> bool {
        match self.media_type.as_deref() {
            Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
            Some(_) => false,
            None => self.manifests.is_some() && self.layers.is_none(),
        }
    }
}

/// Picks the linux/amd64 manifest (no variant preferred) from an index.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    os: &str,
    arch: &str,
) -> Option<&'a Descriptor> {
    let matching = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    };
    manifests
        .iter()
        .filter(matching)
        .find(|d| d.platform.as_ref().is_some_and(|p| p.variant.is_none()))
        .or_else(|| manifests.iter().find(matching))
}

/// The parts of the image config JSON we read.
#[derive(Debug, Clone, Deserialize)]
pub struct RawImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RawContainerConfig>,
    pub rootfs: RawRootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawRootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// What a container needs from the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    /// `User` (may be empty, a name, a uid, `user:group`).
    pub user: String,
    pub env: Vec<String>,
    /// `None` when the image has no entrypoint (null and [] differ for Docker).
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: String,
    /// Keys of `ExposedPorts`, e.g. `80/tcp`.
    pub exposed_ports: Vec<String>,
    /// Keys of `Volumes`.
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

impl From<&RawImageConfig> for ImageConfig {
    fn from(raw: &RawImageConfig) -> Self {
        let c = raw.config.clone().unwrap_or_default();
        ImageConfig {
            os: raw.os.clone(),
            architecture: raw.architecture.clone(),
            user: c.user.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            working_dir: c.working_dir.unwrap_or_default(),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            volumes: c.volumes.unwrap_or_default().into_keys().collect(),
            labels: c.labels.unwrap_or_default(),
            stop_signal: c.stop_signal.filter(|s| !s.is_empty()),
        }
    }
}

/// Whether a layer media type is a (possibly compressed) tar we can apply.
pub fn is_layer_media_type(mt: &str) -> bool {
    // Docker: ...rootfs.diff.tar.gzip, ...rootfs.foreign.diff.tar.gzip;
    // OCI: ...image.layer.v1.tar[+gzip|+zstd], also the nondistributable ones.
    // An empty media type (very old manifests) is taken as a tar too.
    mt.is_empty()
        || (mt.starts_with("application/vnd.docker.image.rootfs.") && mt.contains(".tar"))
        || (mt.starts_with("application/vnd.oci.image.layer.")
            && (mt.ends_with(".tar") || mt.ends_with(".tar+gzip") || mt.ends_with(".tar+zstd")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_detection_and_platform() {
        let idx: AnyManifest = serde_json::from_str(
            r#"{"schemaVersion":2,"manifests":[
              {"mediaType":"x","digest":"sha256:a","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
              {"mediaType":"x","digest":"sha256:b","size":1,"platform":{"architecture":"amd64","os":"linux","variant":"v3"}},
              {"mediaType":"x","digest":"sha256:c","size":1,"platform":{"architecture":"amd64","os":"linux"}}]}"#,
        )
        .expect("parse");
        assert!(idx.is_index());
        let m = idx.manifests.as_deref().unwrap_or_default();
        assert_eq!(
            select_platform(m, "linux", "amd64").map(|d| d.digest.as_str()),
            Some("sha256:c")
        );
        assert_eq!(
            select_platform(m, "linux", "arm64").map(|d| d.digest.as_str()),
            Some("sha256:a")
        );
        assert!(select_platform(m, "windows", "amd64").is_none());
        let man: AnyManifest = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
               "config":{"mediaType":"c","digest":"sha256:d","size":2},"layers":[]}"#,
        )
        .expect("parse");
        assert!(!man.is_index());
    }

    #[test]
    fn config_subset() {
        let raw: RawImageConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","config":{"User":"1000:1000","Env":["A=b"],
               "Cmd":["sh"],"Entrypoint":null,"WorkingDir":"/w","ExposedPorts":{"80/tcp":{}},
               "Volumes":{"/data":{}},"Labels":{"k":"v"},"StopSignal":"SIGQUIT","Healthcheck":{}},
               "rootfs":{"type":"layers","diff_ids":["sha256:1"]},"history":[]}"#,
        )
        .expect("parse");
        let c = ImageConfig::from(&raw);
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.exposed_ports, vec!["80/tcp"]);
        assert_eq!(c.volumes, vec!["/data"]);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(raw.rootfs.diff_ids, vec!["sha256:1"]);
    }

    #[test]
    fn layer_media_types() {
        for ok in [
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        ] {
            assert!(is_layer_media_type(ok), "{ok}");
        }
        for bad in [
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            "application/wasm",
        ] {
            assert!(!is_layer_media_type(bad), "{bad}");
        }
    }
}
