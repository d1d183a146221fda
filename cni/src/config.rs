use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// CNI spec versions whose configs and results crid understands (results of
/// 0.3.x/0.4.0 share one shape, 1.0.0/1.1.0 another).
pub const SUPPORTED_CNI_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// File extensions libcni accepts in a conf dir.
const CONFIG_EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

#[derive(Debug, thiserror::Error)]
pub enum CniConfigError {
    #[error("cannot read CNI conf dir {dir}: {source}")]
    ReadDir { dir: PathBuf, source: io::Error },
    #[error("no CNI network config (*.conflist, *.conf, *.json) in {dir}")]
    NoConfig { dir: PathBuf },
    #[error("cannot read CNI config {path}: {source}")]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("invalid CNI config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "CNI plugin {plugin:?} named by {path} is not an executable file in any of {bin_dirs:?}"
    )]
    PluginMissing {
        path: PathBuf,
        plugin: String,
        bin_dirs: Vec<PathBuf>,
    },
}

/// One plugin of a network: its `type`, the binary that implements it and the
/// plugin's config object, passed through to the plugin untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub plugin_type: String,
    pub binary: PathBuf,
    pub config: Value,
}

/// A CNI network (a `.conflist`, or a single-plugin `.conf` wrapped as one).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub plugins: Vec<PluginConfig>,
    /// The list as read, for status output and the result cache.
    pub raw: Value,
}

/// Loads the network crid uses: the first config file in `conf_dir` by name.
/// It must be valid and every plugin it names must be executable in one of
/// `bin_dirs`; an invalid first file is an error, never a silent fallback to
/// a later file (that would wire pods into a network nobody chose).
pub fn load_network(
    conf_dir: &Path,
    bin_dirs: &[PathBuf],
) -> Result<NetworkConfigList, CniConfigError> {
    let path = first_config_file(conf_dir)?;
    let bytes = fs::read(&path).map_err(|source| CniConfigError::ReadFile {
        path: path.clone(),
        source,
    })?;
    let mut network = parse_network(&path, &bytes)?;
    for plugin in &mut network.plugins {
        plugin.binary = find_plugin(&plugin.plugin_type, bin_dirs).ok_or_else(|| {
            CniConfigError::PluginMissing {
                path: path.clone(),
                plugin: plugin.plugin_type.clone(),
                bin_dirs: bin_dirs.to_vec(),
            }
        })?;
    }
    Ok(network)
}

fn first_config_file(conf_dir: &Path) -> Result<PathBuf, CniConfigError> {
    let read_dir_error = |source| CniConfigError::ReadDir {
        dir: conf_dir.to_path_buf(),
        source,
    };
    let mut candidates = Vec::new();
    for entry in fs::read_dir(conf_dir).map_err(read_dir_error)? {
        let path = entry.map_err(read_dir_error)?.path();
        let has_config_extension = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| CONFIG_EXTENSIONS.contains(&ext));
        if has_config_extension && path.is_file() {
            candidates.push(path);
        }
    }
    candidates.sort();
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| CniConfigError::NoConfig {
            dir: conf_dir.to_path_buf(),
        })
}

pub(crate) fn parse_network(
    path: &Path,
    bytes: &[u8],
) -> Result<NetworkConfigList, CniConfigError> {
    let invalid = |reason: String| CniConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let raw: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let object = raw
        .as_object()
        .ok_or_else(|| invalid("not a JSON object".into()))?;
    let is_list = path.extension().is_some_and(|ext| ext == "conflist");

    let name = required_string(object, "name").map_err(&invalid)?;
    let cni_version = required_string(object, "cniVersion").map_err(&invalid)?;
    if !SUPPORTED_CNI_VERSIONS.contains(&cni_version.as_str()) {
        return Err(invalid(format!(
            "cniVersion {cni_version:?} is not supported (supported: {})",
            SUPPORTED_CNI_VERSIONS.join(", ")
        )));
    }
    let disable_check = object
        .get("disableCheck")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let plugin_values: Vec<Value> = if is_list {
        let plugins = object
            .get("plugins")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("\"plugins\" must be an array".into()))?;
        if plugins.is_empty() {
            return Err(invalid("\"plugins\" is empty".into()));
        }
        plugins.clone()
    } else {
        // A single-plugin .conf is its own (only) plugin.
        vec![raw.clone()]
    };

    let mut plugins = Vec::with_capacity(plugin_values.len());
    for (index, config) in plugin_values.into_iter().enumerate() {
        let plugin_object = config
            .as_object()
            .ok_or_else(|| invalid(format!("plugins[{index}] is not an object")))?;
        let plugin_type = required_string(plugin_object, "type")
            .map_err(|reason| invalid(format!("plugins[{index}]: {reason}")))?;
        // The type names a binary inside bin_dirs; a path would escape them.
        if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
            return Err(invalid(format!(
                "plugins[{index}]: type {plugin_type:?} is not a plugin name"
            )));
        }
        plugins.push(PluginConfig {
            plugin_type,
            binary: PathBuf::new(),
            config,
        });
    }

    Ok(NetworkConfigList {
        path: path.to_path_buf(),
        name,
        cni_version,
        disable_check,
        plugins,
        raw,
    })
}

fn required_string(object: &serde_json::Map<String, Value>, key: &str) -> Result<String, String> {
    match object.get(key) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value.clone()),
        Some(Value::String(_)) => Err(format!("\"{key}\" is empty")),
        Some(other) => Err(format!("\"{key}\" must be a string, found {other}")),
        None => Err(format!("\"{key}\" is missing")),
    }
}

pub(crate) fn find_plugin(plugin_type: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    bin_dirs
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, content).expect("write test file");
        path
    }

    fn fake_plugin(dir: &Path, name: &str, mode: u32) {
        let path = write(dir, name, "#!/bin/sh\n");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    const BRIDGE_LIST: &str =
        r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"},{"type":"loopback"}]}"#;

    #[test]
    fn loads_first_file_by_name_and_resolves_plugins() {
        let conf = tempfile::tempdir().expect("tempdir");
        let bin = tempfile::tempdir().expect("tempdir");
        fake_plugin(bin.path(), "bridge", 0o755);
        fake_plugin(bin.path(), "loopback", 0o755);
        write(
            conf.path(),
            "20-later.conflist",
            r#"{"cniVersion":"1.0.0","name":"later","plugins":[{"type":"x"}]}"#,
        );
        let first = write(conf.path(), "10-net.conflist", BRIDGE_LIST);
        write(conf.path(), "00-ignored.txt", "not a config");

        let network = load_network(conf.path(), &[bin.path().to_path_buf()]).expect("load");
        assert_eq!(network.path, first);
        assert_eq!(network.name, "net");
        assert_eq!(network.cni_version, "1.0.0");
        let types: Vec<_> = network
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(types, ["bridge", "loopback"]);
        assert_eq!(network.plugins[0].binary, bin.path().join("bridge"));
    }

    #[test]
    fn single_plugin_conf_becomes_a_list_of_one() {
        let conf = tempfile::tempdir().expect("tempdir");
        let bin = tempfile::tempdir().expect("tempdir");
        fake_plugin(bin.path(), "ptp", 0o755);
        write(
            conf.path(),
            "10-ptp.conf",
            r#"{"cniVersion":"0.4.0","name":"p","type":"ptp"}"#,
        );
        let network = load_network(conf.path(), &[bin.path().to_path_buf()]).expect("load");
        assert_eq!(network.plugins.len(), 1);
        assert_eq!(network.plugins[0].plugin_type, "ptp");
    }

    #[test]
    fn plugin_is_searched_in_every_bin_dir_and_must_be_executable() {
        let conf = tempfile::tempdir().expect("tempdir");
        let first_bin = tempfile::tempdir().expect("tempdir");
        let second_bin = tempfile::tempdir().expect("tempdir");
        fake_plugin(first_bin.path(), "bridge", 0o644);
        fake_plugin(second_bin.path(), "bridge", 0o755);
        write(
            conf.path(),
            "10.conflist",
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#,
        );
        let dirs = [
            first_bin.path().to_path_buf(),
            second_bin.path().to_path_buf(),
        ];
        let network = load_network(conf.path(), &dirs).expect("load");
        assert_eq!(network.plugins[0].binary, second_bin.path().join("bridge"));
    }

    #[test]
    fn missing_plugin_is_named() {
        let conf = tempfile::tempdir().expect("tempdir");
        let bin = tempfile::tempdir().expect("tempdir");
        fake_plugin(bin.path(), "bridge", 0o755);
        write(conf.path(), "10.conflist", BRIDGE_LIST);
        let error =
            load_network(conf.path(), &[bin.path().to_path_buf()]).expect_err("loopback missing");
        assert!(
            matches!(&error, CniConfigError::PluginMissing { plugin, .. } if plugin == "loopback")
        );
        assert!(error.to_string().contains("\"loopback\""), "{error}");
    }

    #[test]
    fn empty_dir_and_invalid_configs_are_errors_naming_the_problem() {
        let conf = tempfile::tempdir().expect("tempdir");
        let bins = [PathBuf::from("/nonexistent")];
        assert!(matches!(
            load_network(conf.path(), &bins),
            Err(CniConfigError::NoConfig { .. })
        ));

        let cases = [
            ("not json", "not JSON"),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#,
                "\"name\" is missing",
            ),
            (
                r#"{"cniVersion":"9.9.9","name":"n","plugins":[{"type":"a"}]}"#,
                "9.9.9",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "\"plugins\" is empty",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":5}]}"#,
                "plugins[0]",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
                "not a plugin name",
            ),
        ];
        for (content, expected) in cases {
            let path = write(conf.path(), "10.conflist", content);
            let error = load_network(conf.path(), &bins).expect_err(content);
            let message = error.to_string();
            assert!(message.contains(expected), "{content}: {message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    #[test]
    fn missing_conf_dir_is_an_error() {
        let error = load_network(Path::new("/nonexistent/crid-cni"), &[]).expect_err("missing dir");
        assert!(matches!(error, CniConfigError::ReadDir { .. }));
    }
}
