//! crid's configuration: built-in defaults, overridden by the TOML file,
//! overridden by command-line flags. Unknown keys and bad values are refused
//! with the key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use image::RegistryConfig;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/crid/config.toml";
/// Drop-ins beside the config file (`/etc/crid/config.d/*.toml`), merged
/// over it in name order.
pub const DROP_IN_DIR: &str = "config.d";
/// Where `/metrics` is served unless configured: loopback only, a port no
/// common node agent uses (kubelet 10250, kube-proxy 10249, node-exporter 9100).
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:9337";
/// The kernel's limit for a unix socket path (`sun_path`, including the NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: metadata DB, content store, CNI result cache.
    pub root: PathBuf,
    /// Runtime state, gone at reboot.
    pub state: PathBuf,
    /// The CRI socket.
    pub listen: PathBuf,
    pub cni: CniConfig,
    pub streaming: StreamingConfig,
    pub metrics: MetricsConfig,
    pub runtime: RuntimeConfig,
    pub images: ImagesConfig,
    /// Per registry host (`registry.k8s.io`, `127.0.0.1:5000`, …).
    pub registries: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Exec/attach/port-forward server; port 0 picks a free port.
    pub address: SocketAddr,
    /// A session whose connection carries nothing for this long is closed
    /// (kubelet's and the peers' 4 hours).
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Streaming sessions at once; more are refused (503).
    pub max_sessions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub cgroup_driver: CgroupDriver,
    /// Labels plus annotations (keys and values) of one pod or container.
    pub max_labels_annotations_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Layers of one pull downloaded and unpacked at once (containerd: 3).
    pub max_concurrent_layers: usize,
    /// A pull fails once its registry has sent nothing for this long
    /// (containerd's `image_pull_progress_timeout`, 5 minutes).
    #[serde(with = "duration_text")]
    pub pull_progress_timeout: Duration,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        let limits = image::PullLimits::default();
        ImagesConfig {
            max_concurrent_layers: limits.max_concurrent_layers,
            pull_progress_timeout: limits.progress_timeout,
        }
    }
}

impl ImagesConfig {
    pub fn pull_limits(&self) -> image::PullLimits {
        image::PullLimits {
            max_concurrent_layers: self.max_concurrent_layers,
            progress_timeout: self.pull_progress_timeout,
        }
    }
}

/// What `pull_progress_timeout` may be: a pull must be able to end, and a
/// registry slower than one byte a second is no registry.
const PULL_PROGRESS_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(60 * 60);

/// Durations written as people write them (`"5m"`, `"90s"`, `"1h 30m"`).
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|error| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration like \"5m\" or \"90s\": {error}"
            ))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/crid"),
            state: PathBuf::from("/run/crid"),
            listen: PathBuf::from("/run/crid/crid.sock"),
            cni: CniConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            runtime: RuntimeConfig::default(),
            images: ImagesConfig::default(),
            registries: BTreeMap::new(),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            // The CNI convention first, then where Debian's containernetworking-plugins installs.
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            idle_timeout: Duration::from_secs(4 * 60 * 60),
            max_sessions: 1000,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 9337)),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cgroup_driver: CgroupDriver::Cgroupfs,
            max_labels_annotations_bytes: crate::limits::DEFAULT_MAX_LABELS_ANNOTATIONS_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: key `{key}`: {message}")]
    Parse {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("config: `{key}` = {value:?}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("config file {path}: {source}")]
    InFile {
        path: PathBuf,
        source: Box<ConfigError>,
    },
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub listen: Option<PathBuf>,
}

impl Config {
    /// Loads the effective config: defaults ← `file` (if given, it must
    /// exist; if not given, the default path is read when present) ← the
    /// drop-ins in `config.d/` beside it, in name order ← flags.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (main, required) = match file {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        let mut files = Vec::new();
        if required || main.exists() {
            files.push(main.to_path_buf());
        }
        if let Some(dir) = main.parent() {
            files.extend(drop_ins(&dir.join(DROP_IN_DIR))?);
        }
        let mut config = Config::from_files(&files)?;
        if let Some(root) = &overrides.root {
            config.root = root.clone();
        }
        if let Some(state) = &overrides.state {
            config.state = state.clone();
        }
        if let Some(listen) = &overrides.listen {
            config.listen = listen.clone();
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::from_files(&[path.to_path_buf()])
    }

    /// `files` merged in order, later ones winning key by key (tables
    /// merge, any other value is replaced). Each file must be a valid
    /// config on its own, so that an error names the file that has it.
    pub fn from_files(files: &[PathBuf]) -> Result<Config, ConfigError> {
        let mut merged = toml::Table::new();
        for path in files {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let parse_error = |(key, message)| ConfigError::Parse {
                path: path.clone(),
                key,
                message,
            };
            let alone = Config::from_toml(&text).map_err(parse_error)?;
            alone.validate().map_err(|error| ConfigError::InFile {
                path: path.clone(),
                source: Box::new(error),
            })?;
            let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
                parse_error((String::new(), error.to_string()))
            })?;
            merge_tables(&mut merged, table);
        }
        let text = toml::to_string(&merged).map_err(|error| ConfigError::Parse {
            path: files.last().cloned().unwrap_or_default(),
            key: String::new(),
            message: error.to_string(),
        })?;
        Config::from_toml(&text).map_err(|(key, message)| ConfigError::Parse {
            path: files.last().cloned().unwrap_or_default(),
            key,
            message: format!("{message} (after merging {files:?})"),
        })
    }

    /// Parses TOML, reporting the dotted path of the offending key.
    fn from_toml(text: &str) -> Result<Config, (String, String)> {
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| (String::new(), e.to_string()))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            // toml's message carries the line and a caret under the value.
            (key, e.into_inner().to_string().trim_end().to_string())
        })
    }

    /// The full TOML of this config, every key present (`crid config default`).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mut text = String::from(
            "# crid configuration. Every key is optional; shown here with its default.\n",
        );
        text.push_str(&toml::to_string_pretty(self)?);
        if self.registries.is_empty() {
            text.push_str(
                "\n# Per registry host: mirrors tried in order before the host itself, and\n\
                 # whether plain HTTP / unverified TLS to the host itself is allowed.\n\
                 # [registries.\"registry.k8s.io\"]\n\
                 # endpoints = [\"http://127.0.0.1:5000\"]\n\
                 # insecure = false\n",
            );
        }
        Ok(text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        absolute("root", &self.root)?;
        absolute("state", &self.state)?;
        absolute("listen", &self.listen)?;
        if self.listen.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return Err(invalid(
                "listen",
                self.listen.display(),
                format!("a unix socket path may have at most {MAX_SOCKET_PATH_BYTES} bytes"),
            ));
        }
        absolute("cni.conf_dir", &self.cni.conf_dir)?;
        if self.cni.bin_dirs.is_empty() {
            return Err(invalid(
                "cni.bin_dirs",
                "[]",
                "at least one directory is needed",
            ));
        }
        for (index, dir) in self.cni.bin_dirs.iter().enumerate() {
            absolute(&format!("cni.bin_dirs[{index}]"), dir)?;
        }
        let range = crate::limits::MAX_LABELS_ANNOTATIONS_RANGE;
        if !range.contains(&self.runtime.max_labels_annotations_bytes) {
            return Err(invalid(
                "runtime.max_labels_annotations_bytes",
                self.runtime.max_labels_annotations_bytes,
                format!(
                    "must be between {} and {} (a List answer must have room for several)",
                    range.start(),
                    range.end()
                ),
            ));
        }
        if !(1..=64).contains(&self.images.max_concurrent_layers) {
            return Err(invalid(
                "images.max_concurrent_layers",
                self.images.max_concurrent_layers,
                "must be between 1 and 64",
            ));
        }
        if !PULL_PROGRESS_TIMEOUT_RANGE.contains(&self.images.pull_progress_timeout) {
            return Err(invalid(
                "images.pull_progress_timeout",
                humantime::format_duration(self.images.pull_progress_timeout),
                "must be between 1s and 1h",
            ));
        }
        if self.streaming.idle_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "streaming.idle_timeout",
                humantime::format_duration(self.streaming.idle_timeout),
                "must be at least 1s",
            ));
        }
        if !(1..=65536).contains(&self.streaming.max_sessions) {
            return Err(invalid(
                "streaming.max_sessions",
                self.streaming.max_sessions,
                "must be between 1 and 65536",
            ));
        }
        for (host, registry) in &self.registries {
            validate_registry_host(host)?;
            for (index, endpoint) in registry.endpoints.iter().enumerate() {
                validate_endpoint(
                    &format!("registries.\"{host}\".endpoints[{index}]"),
                    endpoint,
                )?;
            }
        }
        Ok(())
    }
}

/// The `*.toml` files in `dir`, in name order; none if it does not exist.
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| ConfigError::Read {
                path: dir.to_path_buf(),
                source,
            })?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `over` onto `base`: tables merge key by key, anything else is replaced.
fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(over)) => merge_tables(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn invalid(key: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn absolute(key: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(invalid(key, path.display(), "must be an absolute path"))
    }
}

/// A registry key is a host with an optional port, as it appears in image
/// references (`docker.io`, `127.0.0.1:5000`), never a URL.
fn validate_registry_host(host: &str) -> Result<(), ConfigError> {
    let key = format!("registries.\"{host}\"");
    let well_formed = !host.is_empty()
        && host.parse::<tonic::transport::Uri>().is_ok_and(|uri| {
            uri.scheme().is_none()
                && uri
                    .authority()
                    .is_some_and(|authority| authority.as_str() == host)
        });
    if well_formed {
        Ok(())
    } else {
        Err(invalid(
            &key,
            host,
            "must be a registry host[:port], without scheme or path",
        ))
    }
}

/// The grammar is the image store's (one rule for what an endpoint is);
/// crid's config also wants the scheme spelled out.
fn validate_endpoint(key: &str, endpoint: &str) -> Result<(), ConfigError> {
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(invalid(
            key,
            endpoint,
            "must be an http:// or https:// URL with a host",
        ));
    }
    RegistryConfig::check_endpoint(endpoint).map_err(|reason| invalid(key, endpoint, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, (String, String)> {
        Config::from_toml(text)
    }

    #[test]
    fn default_toml_round_trips_and_names_every_key() {
        let text = Config::default().to_toml().expect("serialize");
        let parsed = parse(&text).expect("default TOML parses");
        assert_eq!(parsed, Config::default());
        for key in [
            "root",
            "state",
            "listen",
            "conf_dir",
            "bin_dirs",
            "[streaming]",
            "[metrics]",
            "cgroup_driver",
            "max_labels_annotations_bytes = 1048576",
            "pull_progress_timeout = \"5m\"",
            "idle_timeout = \"4h\"",
            "max_sessions = 1000",
        ] {
            assert!(text.contains(key), "missing {key} in\n{text}");
        }
        assert!(text.contains(DEFAULT_METRICS_ADDRESS));
        assert!(text.contains("[registries."), "registries example missing");
    }

    #[test]
    fn file_values_override_defaults_and_keep_the_rest() {
        let config = parse(
            r#"
            root = "/tmp/r"
            [runtime]
            cgroup_driver = "systemd"
            max_labels_annotations_bytes = 65536
            [images]
            pull_progress_timeout = "1m 30s"
            [registries."registry.k8s.io"]
            endpoints = ["http://127.0.0.1:5000"]
            "#,
        )
        .expect("parse");
        assert_eq!(config.images.pull_progress_timeout, Duration::from_secs(90));
        assert_eq!(config.root, PathBuf::from("/tmp/r"));
        assert_eq!(config.state, PathBuf::from("/run/crid"));
        assert_eq!(config.runtime.cgroup_driver, CgroupDriver::Systemd);
        assert_eq!(config.runtime.max_labels_annotations_bytes, 65536);
        assert_eq!(
            config.registries["registry.k8s.io"].endpoints,
            ["http://127.0.0.1:5000"]
        );
        assert!(!config.registries["registry.k8s.io"].insecure);
        config.validate().expect("valid");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let (key, message) = parse("[cni]\nconf_dirs = \"/x\"\n").expect_err("unknown key");
        assert!(message.contains("conf_dirs"), "{message}");
        assert!(key.starts_with("cni"), "{key}");
        let (_, message) = parse("bogus = 1\n").expect_err("unknown top key");
        assert!(message.contains("bogus"), "{message}");
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let (key, message) =
            parse("[runtime]\ncgroup_driver = \"cgroupv3\"\n").expect_err("bad driver");
        assert_eq!(key, "runtime.cgroup_driver");
        assert!(message.contains("cgroupv3"), "{message}");
        let (key, _) = parse("[metrics]\naddress = \"localhost\"\n").expect_err("bad address");
        assert_eq!(key, "metrics.address");
        let (key, _) = parse("root = 5\n").expect_err("bad type");
        assert_eq!(key, "root");
        let (key, message) =
            parse("[images]\npull_progress_timeout = \"soon\"\n").expect_err("bad duration");
        assert_eq!(key, "images.pull_progress_timeout");
        assert!(message.contains("soon"), "{message}");
    }

    #[test]
    fn validation_names_the_key_and_value() {
        type Mutation = fn(&mut Config);
        let cases: [(Mutation, &str); 12] = [
            (|c| c.root = PathBuf::from("relative"), "`root`"),
            (
                |c| c.images.pull_progress_timeout = Duration::ZERO,
                "`images.pull_progress_timeout`",
            ),
            (
                |c| c.images.pull_progress_timeout = Duration::from_secs(2 * 60 * 60),
                "`images.pull_progress_timeout`",
            ),
            (
                |c| c.runtime.max_labels_annotations_bytes = 100,
                "`runtime.max_labels_annotations_bytes`",
            ),
            (
                |c| c.runtime.max_labels_annotations_bytes = 9 << 20,
                "`runtime.max_labels_annotations_bytes`",
            ),
            (
                |c| c.listen = PathBuf::from(format!("/{}", "s".repeat(200))),
                "`listen`",
            ),
            (|c| c.cni.bin_dirs.clear(), "`cni.bin_dirs`"),
            (
                |c| c.cni.bin_dirs.push(PathBuf::from("bin")),
                "`cni.bin_dirs[2]`",
            ),
            (
                |c| {
                    c.registries
                        .insert("https://docker.io".into(), RegistryConfig::default());
                },
                "`registries.\"https://docker.io\"`",
            ),
            (
                |c| {
                    let registry = RegistryConfig {
                        endpoints: vec!["ftp://mirror".into()],
                        insecure: false,
                    };
                    c.registries.insert("docker.io".into(), registry);
                },
                "`registries.\"docker.io\".endpoints[0]`",
            ),
            (
                |c| {
                    let registry = RegistryConfig {
                        endpoints: vec!["http://mirror:5000/some/path".into()],
                        insecure: false,
                    };
                    c.registries.insert("docker.io".into(), registry);
                },
                "`registries.\"docker.io\".endpoints[0]`",
            ),
            (
                |c| {
                    let registry = RegistryConfig {
                        endpoints: vec!["mirror:5000".into()],
                        insecure: false,
                    };
                    c.registries.insert("docker.io".into(), registry);
                },
                "`registries.\"docker.io\".endpoints[0]`",
            ),
        ];
        for (mutate, key) in cases {
            let mut config = Config::default();
            mutate(&mut config);
            let message = config.validate().expect_err(key).to_string();
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "root = \"/from/file\"\nstate = \"/state/file\"\n").expect("write");
        let overrides = Overrides {
            root: Some(PathBuf::from("/from/flag")),
            ..Overrides::default()
        };
        let config = Config::load(Some(&path), &overrides).expect("load");
        assert_eq!(config.root, PathBuf::from("/from/flag"));
        assert_eq!(config.state, PathBuf::from("/state/file"));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn drop_ins_merge_over_the_file_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(
            dir.path(),
            "config.toml",
            "root = \"/srv/crid\"\n[runtime]\ncgroup_driver = \"systemd\"\n\
             [registries.\"a.example\"]\nendpoints = [\"http://127.0.0.1:5000\"]\n",
        );
        // Name order, not creation order: 20 wins over 10.
        write(
            dir.path(),
            "config.d/20-later.toml",
            "[images]\nmax_concurrent_layers = 7\n",
        );
        write(
            dir.path(),
            "config.d/10-first.toml",
            "[images]\nmax_concurrent_layers = 5\npull_progress_timeout = \"1m\"\n\
             [registries.\"b.example\"]\ninsecure = true\n",
        );
        write(dir.path(), "config.d/README", "not toml, not read");
        let config = Config::load(Some(&main), &Overrides::default()).expect("load");
        assert_eq!(
            config.root,
            PathBuf::from("/srv/crid"),
            "the file's value stays"
        );
        assert_eq!(config.runtime.cgroup_driver, CgroupDriver::Systemd);
        assert_eq!(
            config.images.max_concurrent_layers, 7,
            "the later drop-in wins"
        );
        assert_eq!(
            config.images.pull_progress_timeout,
            Duration::from_secs(60),
            "keys of a table another drop-in also sets are kept"
        );
        assert_eq!(
            config.registries.keys().collect::<Vec<_>>(),
            ["a.example", "b.example"],
            "tables merge"
        );
        assert!(config.registries["b.example"].insecure);
    }

    #[test]
    fn a_bad_drop_in_is_named_with_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(dir.path(), "config.toml", "");
        let bad = write(
            dir.path(),
            "config.d/50-typo.toml",
            "[images]\nmax_concurent_layers = 2\n",
        );
        let error = Config::load(Some(&main), &Overrides::default()).expect_err("unknown key");
        let message = error.to_string();
        assert!(
            message.contains(&bad.display().to_string())
                && message.contains("max_concurent_layers"),
            "{message}"
        );
        std::fs::write(&bad, "root = \"relative\"\n").expect("rewrite");
        let error = Config::load(Some(&main), &Overrides::default()).expect_err("bad value");
        let message = error.to_string();
        assert!(
            message.contains(&bad.display().to_string()) && message.contains("`root`"),
            "{message}"
        );
    }

    #[test]
    fn the_packaged_config_is_the_default() {
        // packaging/config.toml is `crid config default`; regenerate it with
        // that command when a default changes.
        let shipped = include_str!("../../packaging/config.toml");
        assert_eq!(shipped, Config::default().to_toml().expect("serialize"));
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let error = Config::load(
            Some(Path::new("/nonexistent/crid.toml")),
            &Overrides::default(),
        )
        .expect_err("missing");
        assert!(matches!(error, ConfigError::Read { .. }));
    }
}
