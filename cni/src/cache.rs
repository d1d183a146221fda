//! The on-disk result cache: what ADD used and returned, so DEL after a crid
//! restart or a conf dir change undoes exactly what ADD did.
//!
//! Layout (like libcni's): `<cache_dir>/results/<network>-<container>-<ifname>`,
//! one JSON file per attachment, written to a temp file, fsync'd and renamed.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::task::spawn_blocking;

use crate::error::CniError;

const KIND: &str = "cridCniCacheV1";
const RESULTS_DIR: &str = "results";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub network_name: String,
    pub container_id: String,
    pub if_name: String,
    pub netns: PathBuf,
    pub cni_args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The file the network config list was loaded from (its extension tells
    /// a `.conflist` from a single-plugin `.conf`).
    pub config_path: PathBuf,
    /// The network config list as loaded.
    pub config: Value,
    /// The final ADD result; `None` while the ADD is still in flight (or
    /// crid died during it), so a later DEL still knows the config.
    pub result: Option<Value>,
}

impl CacheEntry {
    pub(crate) fn kind() -> String {
        KIND.to_string()
    }
}

/// Checks a name that becomes part of a file name and of plugin state
/// (libcni's rule for container ids and network names).
pub(crate) fn validate_id(field: &'static str, value: &str) -> Result<(), CniError> {
    let invalid = |reason| CniError::InvalidAttachment {
        field,
        value: value.to_string(),
        reason,
    };
    let mut chars = value.chars();
    match chars.next() {
        None => return Err(invalid("must not be empty")),
        Some(first) if !first.is_ascii_alphanumeric() => {
            return Err(invalid("must start with a letter or digit"));
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err(invalid("may only hold letters, digits, '_', '.' and '-'"));
    }
    if value.len() > 253 {
        return Err(invalid("is longer than 253 bytes"));
    }
    Ok(())
}

/// Checks an interface name the way the kernel (and libcni) would.
pub(crate) fn validate_ifname(value: &str) -> Result<(), CniError> {
    let invalid = |reason| CniError::InvalidAttachment {
        field: "ifname",
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.len() > 15 {
        return Err(invalid("is longer than 15 bytes"));
    }
    if value == "." || value == ".." {
        return Err(invalid("is not an interface name"));
    }
    if value
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid("must not contain '/', ':' or whitespace"));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub(crate) struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    pub(crate) fn new(cache_dir: &Path) -> ResultCache {
        ResultCache {
            dir: cache_dir.join(RESULTS_DIR),
        }
    }

    /// The entry's file; every part is validated so none can add a path
    /// component.
    pub(crate) fn path(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<PathBuf, CniError> {
        validate_id("network name", network)?;
        validate_id("container id", container_id)?;
        validate_ifname(ifname)?;
        Ok(self.dir.join(format!("{network}-{container_id}-{ifname}")))
    }

    pub(crate) async fn write(&self, entry: &CacheEntry) -> Result<PathBuf, CniError> {
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name)?;
        let bytes = serde_json::to_vec(entry).map_err(|e| CniError::Cache {
            path: path.clone(),
            reason: format!("cannot serialize: {e}"),
        })?;
        let dir = self.dir.clone();
        let target = path.clone();
        spawn_blocking(move || write_atomic(&dir, &target, &bytes))
            .await?
            .map_err(|e| cache_error(&path, e))?;
        Ok(path)
    }

    /// The entry at `path`; `Ok(None)` if there is none.
    pub(crate) async fn read_path(&self, path: &Path) -> Result<Option<CacheEntry>, CniError> {
        let bytes = match tokio::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cache_error(path, e)),
        };
        let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| CniError::Cache {
            path: path.to_path_buf(),
            reason: format!("corrupt entry: {e}"),
        })?;
        if entry.kind != KIND {
            return Err(CniError::Cache {
                path: path.to_path_buf(),
                reason: format!("unknown kind {:?}", entry.kind),
            });
        }
        Ok(Some(entry))
    }

    /// Every entry file that may belong to `container_id` + `ifname`, in any
    /// network (the conf dir may have changed since ADD). Callers check the
    /// entry's own fields: a `-` in names makes the file name ambiguous.
    pub(crate) async fn candidates(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<PathBuf>, CniError> {
        validate_id("container id", container_id)?;
        validate_ifname(ifname)?;
        let suffix = format!("-{container_id}-{ifname}");
        let mut found = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(cache_error(&self.dir, e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| cache_error(&self.dir, e))?
        {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(&suffix) && !name.starts_with('.') {
                found.push(entry.path());
            }
        }
        found.sort();
        Ok(found)
    }

    pub(crate) async fn remove(&self, path: &Path) -> Result<(), CniError> {
        let dir = self.dir.clone();
        let target = path.to_path_buf();
        spawn_blocking(move || {
            match fs::remove_file(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            // The removal must be durable too, or a crash brings back an
            // entry whose DEL already ran (harmless, but noisy).
            fs::File::open(&dir)?.sync_all()
        })
        .await?
        .map_err(|e| cache_error(path, e))
    }
}

fn cache_error(path: &Path, e: io::Error) -> CniError {
    CniError::Cache {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// temp file + fsync + rename + fsync(dir): a crash leaves the old entry or
/// the new one, never a torn file.
fn write_atomic(dir: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let file_name = target
        .file_name()
        .ok_or_else(|| io::Error::other("cache path has no file name"))?;
    let temp = dir.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, target)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(network: &str, container: &str) -> CacheEntry {
        CacheEntry {
            kind: CacheEntry::kind(),
            network_name: network.into(),
            container_id: container.into(),
            if_name: "eth0".into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "p".into())],
            capability_args: json!({"portMappings": []})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            config_path: "/etc/cni/net.d/10.conflist".into(),
            config: json!({"name": network}),
            result: Some(json!({"cniVersion": "1.0.0"})),
        }
    }

    #[tokio::test]
    async fn write_read_remove_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ResultCache::new(dir.path());
        let written = entry("net", "abc123");
        let path = cache.write(&written).await.expect("write");
        assert_eq!(path, dir.path().join("results/net-abc123-eth0"));
        assert_eq!(cache.read_path(&path).await.expect("read"), Some(written));
        // No temp file is left beside it.
        let names: Vec<_> = fs::read_dir(dir.path().join("results"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["net-abc123-eth0"]);

        cache.write(&entry("other", "abc123")).await.expect("write");
        cache.write(&entry("net", "zzz")).await.expect("write");
        let found = cache.candidates("abc123", "eth0").await.expect("scan");
        assert_eq!(
            found,
            [
                dir.path().join("results/net-abc123-eth0"),
                dir.path().join("results/other-abc123-eth0")
            ]
        );

        cache.remove(&path).await.expect("remove");
        assert_eq!(cache.read_path(&path).await.expect("read"), None);
        cache.remove(&path).await.expect("removing twice is fine");
    }

    #[tokio::test]
    async fn corrupt_entry_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ResultCache::new(dir.path());
        let path = cache.path("net", "abc", "eth0").expect("path");
        fs::create_dir_all(dir.path().join("results")).expect("mkdir");
        fs::write(&path, b"{not json").expect("write");
        let error = cache.read_path(&path).await.expect_err("corrupt");
        assert!(error.to_string().contains("net-abc-eth0"), "{error}");
    }

    #[test]
    fn hostile_names_are_refused() {
        let cache = ResultCache::new(Path::new("/var/lib/crid/cni-cache"));
        for bad in ["", "..", ".", "../x", "a/b", "-x", "a b", "a\0b", "ä"] {
            assert!(cache.path("net", bad, "eth0").is_err(), "container {bad:?}");
            assert!(cache.path(bad, "abc", "eth0").is_err(), "network {bad:?}");
        }
        for bad in ["", "..", "a/b", "eth0:1", "a b", "sixteen-bytes-xx"] {
            assert!(cache.path("net", "abc", bad).is_err(), "ifname {bad:?}");
        }
        assert!(cache.path("my-net.v1", "a_b.c-1", "eth0").is_ok());
    }
}
