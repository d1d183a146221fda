//! ADD / CHECK / DEL / STATUS / VERSION over a network config list.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::cache::{CacheEntry, ResultCache, validate_id, validate_ifname};
use crate::config::{NetworkConfigList, PluginConfig, find_plugin, parse_network};
use crate::error::{CniError, Command, DelOutcome, DelSkip, PluginCall};
use crate::exec::{PluginEnv, cni_path, run_plugin};
use crate::result::CniResult;

/// One pod's attachment to a network.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attachment {
    /// The pod sandbox id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The pinned netns bind-mount path (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The interface inside the pod (`CNI_IFNAME`), usually `eth0`.
    pub ifname: String,
    /// `CNI_ARGS` pairs: `K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
    /// `K8S_POD_INFRA_CONTAINER_ID`, `K8S_POD_UID`. `IgnoreUnknown=1` is put
    /// first unless the caller gives `IgnoreUnknown` itself.
    pub args: Vec<(String, String)>,
    /// Capability args by name (`portMappings`, `bandwidth`,
    /// `io.kubernetes.cri.pod-annotations`, …); each plugin gets in its
    /// `runtimeConfig` only those its `capabilities` map enables.
    pub capability_args: Map<String, Value>,
}

/// What a plugin's VERSION says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersion {
    pub plugin_type: String,
    pub binary: PathBuf,
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

/// A cached attachment: what ADD used and got (see [`CniRunner::cached`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAttachment {
    pub network_name: String,
    pub netns: PathBuf,
    /// `None` if crid stopped during the ADD (a DEL is due).
    pub result: Option<CniResult>,
}

/// Runs CNI plugins for crid. Cheap to clone; holds no open resources.
#[derive(Debug, Clone)]
pub struct CniRunner {
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    exec_timeout: Duration,
}

/// Per plugin exec. Generous: IPAM plugins may wait on a lock or a DHCP
/// server; the point is that nothing waits forever.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(60);

impl CniRunner {
    /// `cache_dir` is crid's `<root>/cni-cache`; it is created on first ADD.
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> CniRunner {
        CniRunner {
            bin_dirs,
            cache_dir,
            exec_timeout: DEFAULT_EXEC_TIMEOUT,
        }
    }

    pub fn with_exec_timeout(mut self, exec_timeout: Duration) -> CniRunner {
        self.exec_timeout = exec_timeout;
        self
    }

    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn exec_timeout(&self) -> Duration {
        self.exec_timeout
    }

    fn cache(&self) -> ResultCache {
        ResultCache::new(&self.cache_dir)
    }

    /// ADD: runs the plugins in order, chaining `prevResult`, and caches the
    /// final result. If a plugin fails, every plugin of the list is DEL'd
    /// (in reverse) before the error is returned, so nothing stays behind;
    /// if that DEL fails too the error is [`CniError::RollbackFailed`] and
    /// the cache entry stays for a later [`CniRunner::del`].
    pub async fn add(
        &self,
        network: &NetworkConfigList,
        a: &Attachment,
    ) -> Result<CniResult, CniError> {
        validate_attachment(a)?;
        validate_id("network name", &network.name)?;
        let cni_args = cni_args(&a.args)?;
        let binaries = self.resolve_all(network, Command::Add, a)?;

        // Recorded before any plugin runs: if crid dies half-way, the next
        // DEL knows which config was used.
        let cache = self.cache();
        let mut entry = CacheEntry {
            kind: CacheEntry::kind(),
            network_name: network.name.clone(),
            container_id: a.container_id.clone(),
            if_name: a.ifname.clone(),
            netns: a.netns.clone(),
            cni_args: a.args.clone(),
            capability_args: a.capability_args.clone(),
            config_path: network.path.clone(),
            config: network.raw.clone(),
            result: None,
        };
        let cache_path = cache.write(&entry).await?;

        let netns = a.netns.to_string_lossy();
        let mut prev: Option<CniResult> = None;
        let mut failure = None;
        for (plugin, binary) in network.plugins.iter().zip(&binaries) {
            let call = call(Command::Add, plugin, network, a);
            match self
                .run_add(
                    &call,
                    network,
                    plugin,
                    binary,
                    a,
                    &cni_args,
                    &netns,
                    prev.as_ref(),
                )
                .await
            {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }

        let failure = match (failure, prev) {
            (Some(e), last) => (e, last),
            (None, Some(result)) => {
                entry.result = Some(result.raw.clone());
                match cache.write(&entry).await {
                    Ok(_) => return Ok(result),
                    // Without the cache a later DEL cannot be exact; undo.
                    Err(e) => (e, Some(result)),
                }
            }
            (None, None) => unreachable_empty(network),
        };
        let (add_error, last_result) = failure;
        tracing::warn!(
            network = %network.name,
            container_id = %a.container_id,
            error = %add_error,
            "CNI ADD failed, rolling back with DEL"
        );
        let mut outcome = DelOutcome::default();
        let rollback = self
            .del_list(
                network,
                a,
                &a.netns,
                &cni_args,
                &a.capability_args,
                last_result.as_ref().map(|r| &r.raw),
                &mut outcome,
            )
            .await;
        match rollback {
            Ok(()) => {
                if let Err(e) = cache.remove(&cache_path).await {
                    tracing::warn!(error = %e, "cannot remove CNI cache entry after rollback");
                }
                Err(add_error)
            }
            Err(rollback) => Err(CniError::RollbackFailed {
                add: Box::new(add_error),
                rollback: Box::new(rollback),
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_add(
        &self,
        call: &PluginCall,
        network: &NetworkConfigList,
        plugin: &PluginConfig,
        binary: &Path,
        a: &Attachment,
        cni_args: &str,
        netns: &str,
        prev: Option<&CniResult>,
    ) -> Result<CniResult, CniError> {
        let stdin = plugin_stdin(network, plugin, prev.map(|r| &r.raw), &a.capability_args)
            .map_err(|reason| CniError::InvalidResult {
                call: Box::new(call.clone()),
                reason,
            })?;
        let stdout = self.exec(call, binary, a, netns, cni_args, &stdin).await?;
        let raw: Value = serde_json::from_slice(&stdout).map_err(|e| CniError::InvalidResult {
            call: Box::new(call.clone()),
            reason: format!(
                "not JSON ({e}): {:?}",
                String::from_utf8_lossy(&stdout[..stdout.len().min(200)])
            ),
        })?;
        CniResult::parse(raw).map_err(|reason| CniError::InvalidResult {
            call: Box::new(call.clone()),
            reason,
        })
    }

    /// CHECK: asks every plugin whether the attachment is still as ADD left
    /// it, with the cached ADD result as `prevResult`. Networks older than
    /// 0.4.0 have no CHECK and `disableCheck` turns it off: both return
    /// `Ok` without running anything.
    pub async fn check(&self, network: &NetworkConfigList, a: &Attachment) -> Result<(), CniError> {
        validate_attachment(a)?;
        if !version_at_least(&network.cni_version, (0, 4, 0)) || network.disable_check {
            return Ok(());
        }
        let cni_args = cni_args(&a.args)?;
        let binaries = self.resolve_all(network, Command::Check, a)?;
        let cache = self.cache();
        let path = cache.path(&network.name, &a.container_id, &a.ifname)?;
        let cached = cache
            .read_path(&path)
            .await?
            .and_then(|entry| entry.result)
            .ok_or_else(|| CniError::NotAttached {
                network: network.name.clone(),
                container_id: a.container_id.clone(),
            })?;
        let netns = a.netns.to_string_lossy();
        for (plugin, binary) in network.plugins.iter().zip(&binaries) {
            let call = call(Command::Check, plugin, network, a);
            let stdin = plugin_stdin(network, plugin, Some(&cached), &a.capability_args).map_err(
                |reason| CniError::InvalidResult {
                    call: Box::new(call.clone()),
                    reason,
                },
            )?;
            self.exec(&call, binary, a, &netns, &cni_args, &stdin)
                .await?;
        }
        Ok(())
    }

    /// DEL: undoes the attachment. Never refuses for reasons that will not
    /// go away by themselves, so a pod can always be removed:
    ///
    /// * With a cache entry (from any network, the conf dir may have changed)
    ///   the cached config, args and result are used; `network` is only the
    ///   fallback when nothing is cached. Neither: nothing was attached, `Ok`.
    /// * A missing plugin binary is skipped (warned, listed in
    ///   [`DelOutcome::skipped`]).
    /// * A netns that is gone (reboot) is still DEL'd, so IPAM releases the
    ///   address: a missing path is passed as given (the reference plugins
    ///   treat it as "already gone"); a path that is no longer a netns is
    ///   passed as an empty `CNI_NETNS`, which the spec allows for DEL.
    /// * A failing plugin does not stop the others; the failures come back
    ///   together as [`CniError::Del`] and the cache entry stays, so the
    ///   caller may retry, or give up and remove the pod anyway.
    pub async fn del(
        &self,
        network: Option<&NetworkConfigList>,
        a: &Attachment,
    ) -> Result<DelOutcome, CniError> {
        validate_attachment(a)?;
        let cache = self.cache();
        let mut outcome = DelOutcome::default();
        let mut failures = Vec::new();

        for path in cache.candidates(&a.container_id, &a.ifname).await? {
            let entry = match cache.read_path(&path).await {
                Ok(Some(entry)) => entry,
                Ok(None) => continue,
                Err(e) => {
                    // An unreadable entry must not block the pod forever:
                    // fall back to the given network, then drop it.
                    tracing::warn!(error = %e, "ignoring unreadable CNI cache entry");
                    if network.is_some()
                        && let Err(e) = cache.remove(&path).await
                    {
                        tracing::warn!(error = %e, "cannot remove CNI cache entry");
                    }
                    continue;
                }
            };
            if entry.container_id != a.container_id || entry.if_name != a.ifname {
                continue;
            }
            let cached_network = match cached_network(&entry) {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring CNI cache entry with a bad config");
                    continue;
                }
            };
            let netns = if a.netns.as_os_str().is_empty() {
                entry.netns.clone()
            } else {
                a.netns.clone()
            };
            let cni_args = cni_args(&entry.cni_args)?;
            let result = self
                .del_list(
                    &cached_network,
                    a,
                    &netns,
                    &cni_args,
                    &entry.capability_args,
                    entry.result.as_ref(),
                    &mut outcome,
                )
                .await;
            match result {
                Ok(()) => {
                    cache.remove(&path).await?;
                    outcome.networks.push(cached_network.name.clone());
                }
                Err(e) => failures.push(e),
            }
        }

        if let Some(network) =
            network.filter(|_| outcome.networks.is_empty() && failures.is_empty())
        {
            {
                // No cache: ADD never got to its first step here, or the
                // cache was lost. DEL with what the caller has is safe (DEL of
                // nothing succeeds) and frees what a lost cache would leak.
                let cni_args = cni_args(&a.args)?;
                match self
                    .del_list(
                        network,
                        a,
                        &a.netns,
                        &cni_args,
                        &a.capability_args,
                        None,
                        &mut outcome,
                    )
                    .await
                {
                    Ok(()) => outcome.networks.push(network.name.clone()),
                    Err(e) => failures.push(e),
                }
            }
        }

        if failures.len() == 1
            && let Some(e) = failures.pop()
        {
            return Err(e);
        }
        if !failures.is_empty() {
            return Err(CniError::Del {
                network: network.map(|n| n.name.clone()).unwrap_or_default(),
                container_id: a.container_id.clone(),
                failures,
            });
        }
        outcome.nothing_to_do = outcome.networks.is_empty();
        Ok(outcome)
    }

    /// DEL of every plugin in reverse; failures are collected, not fatal.
    #[allow(clippy::too_many_arguments)]
    async fn del_list(
        &self,
        network: &NetworkConfigList,
        a: &Attachment,
        netns: &Path,
        cni_args: &str,
        capability_args: &Map<String, Value>,
        prev_result: Option<&Value>,
        outcome: &mut DelOutcome,
    ) -> Result<(), CniError> {
        let netns = self.netns_for_del(netns, outcome).await;
        // DEL got prevResult only from spec 0.4.0 on.
        let prev_result = prev_result.filter(|_| version_at_least(&network.cni_version, (0, 4, 0)));
        let mut failures = Vec::new();
        for plugin in network.plugins.iter().rev() {
            let call = call(Command::Del, plugin, network, a);
            let Some(binary) = find_plugin(&plugin.plugin_type, &self.bin_dirs) else {
                tracing::warn!(
                    plugin = %plugin.plugin_type,
                    network = %network.name,
                    container_id = %a.container_id,
                    bin_dirs = ?self.bin_dirs,
                    "CNI plugin missing, skipping its DEL"
                );
                outcome.skipped.push(DelSkip::PluginMissing {
                    plugin: plugin.plugin_type.clone(),
                });
                continue;
            };
            let stdin = match plugin_stdin(network, plugin, prev_result, capability_args) {
                Ok(stdin) => stdin,
                Err(reason) => {
                    failures.push(CniError::InvalidResult {
                        call: Box::new(call),
                        reason,
                    });
                    continue;
                }
            };
            if let Err(e) = self.exec(&call, &binary, a, &netns, cni_args, &stdin).await {
                tracing::warn!(error = %e, "CNI DEL failed, going on with the other plugins");
                failures.push(e);
            }
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            _ => Err(CniError::Del {
                network: network.name.clone(),
                container_id: a.container_id.clone(),
                failures,
            }),
        }
    }

    /// The `CNI_NETNS` for a DEL, noting in `outcome` when the netns is gone.
    async fn netns_for_del(&self, netns: &Path, outcome: &mut DelOutcome) -> String {
        if netns.as_os_str().is_empty() {
            return String::new();
        }
        let missing = DelSkip::NetnsMissing {
            netns: netns.to_path_buf(),
        };
        match is_netns(netns).await {
            NetnsState::Netns => netns.to_string_lossy().into_owned(),
            NetnsState::Missing => {
                tracing::warn!(netns = %netns.display(), "netns is gone, DEL without it");
                if !outcome.skipped.contains(&missing) {
                    outcome.skipped.push(missing);
                }
                netns.to_string_lossy().into_owned()
            }
            NetnsState::NotNetns => {
                tracing::warn!(
                    netns = %netns.display(),
                    "netns path is no longer a network namespace, DEL without it"
                );
                if !outcome.skipped.contains(&missing) {
                    outcome.skipped.push(missing);
                }
                String::new()
            }
        }
    }

    /// STATUS (spec 1.1.0): whether every plugin is ready for ADDs. Older
    /// networks have no STATUS; for them this checks that every plugin
    /// binary is present.
    pub async fn status(&self, network: &NetworkConfigList) -> Result<(), CniError> {
        let none = Attachment::default();
        let binaries = self.resolve_all(network, Command::Status, &none)?;
        if !version_at_least(&network.cni_version, (1, 1, 0)) {
            return Ok(());
        }
        for (plugin, binary) in network.plugins.iter().zip(&binaries) {
            let call = call(Command::Status, plugin, network, &none);
            let stdin = plugin_stdin(network, plugin, None, &Map::new()).map_err(|reason| {
                CniError::InvalidResult {
                    call: Box::new(call.clone()),
                    reason,
                }
            })?;
            self.exec(&call, binary, &none, "", "", &stdin).await?;
        }
        Ok(())
    }

    /// VERSION of every plugin of the network, for diagnostics.
    pub async fn version(
        &self,
        network: &NetworkConfigList,
    ) -> Result<Vec<PluginVersion>, CniError> {
        let none = Attachment::default();
        let binaries = self.resolve_all(network, Command::Version, &none)?;
        let stdin = json!({"cniVersion": network.cni_version}).to_string();
        let mut versions = Vec::with_capacity(binaries.len());
        for (plugin, binary) in network.plugins.iter().zip(binaries) {
            let call = call(Command::Version, plugin, network, &none);
            let stdout = self
                .exec(&call, &binary, &none, "", "", stdin.as_bytes())
                .await?;
            let invalid = |reason: String| CniError::InvalidResult {
                call: Box::new(call.clone()),
                reason,
            };
            let value: Value = serde_json::from_slice(&stdout)
                .map_err(|e| invalid(format!("VERSION output is not JSON: {e}")))?;
            let cni_version = value
                .get("cniVersion")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("VERSION output has no \"cniVersion\"".into()))?
                .to_string();
            let supported_versions = value
                .get("supportedVersions")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            versions.push(PluginVersion {
                plugin_type: plugin.plugin_type.clone(),
                binary,
                cni_version,
                supported_versions,
            });
        }
        Ok(versions)
    }

    /// Drops every cache entry of this attachment without running any
    /// plugin: for a pod being removed although its DEL keeps failing, so
    /// nothing of it stays behind. Idempotent.
    pub async fn forget(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let cache = self.cache();
        for path in cache.candidates(container_id, ifname).await? {
            cache.remove(&path).await?;
        }
        Ok(())
    }

    /// The cached attachments of a pod (any network), e.g. to report pod IPs
    /// after a crid restart without running a plugin.
    pub async fn cached(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<CachedAttachment>, CniError> {
        let cache = self.cache();
        let mut found = Vec::new();
        for path in cache.candidates(container_id, ifname).await? {
            let Some(entry) = cache.read_path(&path).await? else {
                continue;
            };
            if entry.container_id != container_id || entry.if_name != ifname {
                continue;
            }
            let result = match entry.result {
                Some(raw) => Some(CniResult::parse(raw).map_err(CniError::Result)?),
                None => None,
            };
            found.push(CachedAttachment {
                network_name: entry.network_name,
                netns: entry.netns,
                result,
            });
        }
        Ok(found)
    }

    /// Plugin binaries by type, all required.
    fn resolve_all(
        &self,
        network: &NetworkConfigList,
        command: Command,
        a: &Attachment,
    ) -> Result<Vec<PathBuf>, CniError> {
        network
            .plugins
            .iter()
            .map(|plugin| {
                find_plugin(&plugin.plugin_type, &self.bin_dirs).ok_or_else(|| {
                    CniError::PluginNotFound {
                        call: Box::new(call(command, plugin, network, a)),
                        bin_dirs: self.bin_dirs.clone(),
                    }
                })
            })
            .collect()
    }

    async fn exec(
        &self,
        call: &PluginCall,
        binary: &Path,
        a: &Attachment,
        netns: &str,
        cni_args: &str,
        stdin: &[u8],
    ) -> Result<Vec<u8>, CniError> {
        let path = cni_path(&self.bin_dirs);
        let env = PluginEnv {
            container_id: &a.container_id,
            netns,
            ifname: &a.ifname,
            args: cni_args,
            path: &path,
        };
        tracing::debug!(%call, binary = %binary.display(), "running CNI plugin");
        run_plugin(call, binary, &env, stdin, self.exec_timeout).await
    }
}

fn call(
    command: Command,
    plugin: &PluginConfig,
    network: &NetworkConfigList,
    a: &Attachment,
) -> PluginCall {
    PluginCall {
        command,
        plugin: plugin.plugin_type.clone(),
        network: network.name.clone(),
        container_id: a.container_id.clone(),
    }
}

fn unreachable_empty(network: &NetworkConfigList) -> (CniError, Option<CniResult>) {
    // parse_network refuses empty lists; a hand-built one gets an error.
    (
        CniError::Config(crate::config::CniConfigError::Invalid {
            path: network.path.clone(),
            reason: "\"plugins\" is empty".into(),
        }),
        None,
    )
}

fn validate_attachment(a: &Attachment) -> Result<(), CniError> {
    validate_id("container id", &a.container_id)?;
    validate_ifname(&a.ifname)
}

/// `CNI_ARGS`: `IgnoreUnknown=1;K=V;…`. Plugins split on `;` and the first
/// `=`, so those may not appear where they would change the meaning.
pub(crate) fn cni_args(args: &[(String, String)]) -> Result<String, CniError> {
    let mut parts = Vec::with_capacity(args.len() + 1);
    if !args.iter().any(|(k, _)| k == "IgnoreUnknown") {
        parts.push("IgnoreUnknown=1".to_string());
    }
    for (key, value) in args {
        let invalid = |reason| CniError::InvalidAttachment {
            field: "CNI_ARGS",
            value: format!("{key}={value}"),
            reason,
        };
        if key.is_empty() || key.contains(['=', ';']) {
            return Err(invalid("key must be non-empty without '=' or ';'"));
        }
        if value.contains(';') || key.contains('\0') || value.contains('\0') {
            return Err(invalid("value must not contain ';'"));
        }
        parts.push(format!("{key}={value}"));
    }
    Ok(parts.join(";"))
}

/// A plugin's stdin: its config object with the list's `name` and
/// `cniVersion`, `prevResult` when chained, and a `runtimeConfig` holding the
/// capability args it declares (as libcni builds it).
pub(crate) fn plugin_stdin(
    network: &NetworkConfigList,
    plugin: &PluginConfig,
    prev_result: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Result<Vec<u8>, String> {
    let mut config = plugin
        .config
        .as_object()
        .cloned()
        .ok_or("plugin config is not an object")?;
    config.insert("name".into(), Value::String(network.name.clone()));
    config.insert(
        "cniVersion".into(),
        Value::String(network.cni_version.clone()),
    );
    match prev_result {
        Some(prev) => config.insert("prevResult".into(), prev.clone()),
        None => config.remove("prevResult"),
    };
    let runtime_config = runtime_config(&config, capability_args);
    if !runtime_config.is_empty() {
        config.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    serde_json::to_vec(&Value::Object(config)).map_err(|e| e.to_string())
}

/// The capability args the plugin enabled with `"capabilities": {name: true}`.
pub(crate) fn runtime_config(
    plugin_config: &Map<String, Value>,
    capability_args: &Map<String, Value>,
) -> Map<String, Value> {
    let Some(capabilities) = plugin_config.get("capabilities").and_then(Value::as_object) else {
        return Map::new();
    };
    capabilities
        .iter()
        .filter(|(_, enabled)| enabled.as_bool() == Some(true))
        .filter_map(|(name, _)| {
            capability_args
                .get(name)
                .map(|value| (name.clone(), value.clone()))
        })
        .collect()
}

/// `major.minor.patch` >= `min`; unparsable versions count as old.
pub(crate) fn version_at_least(version: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), Some(Ok(patch))) => (major, minor, patch) >= min,
        _ => false,
    }
}

fn cached_network(entry: &CacheEntry) -> Result<NetworkConfigList, CniError> {
    let bytes = serde_json::to_vec(&entry.config).map_err(|e| CniError::Cache {
        path: entry.config_path.clone(),
        reason: e.to_string(),
    })?;
    Ok(parse_network(&entry.config_path, &bytes)?)
}

enum NetnsState {
    Netns,
    Missing,
    NotNetns,
}

/// Whether `path` is a network namespace: nsfs files share one device, so
/// compare with our own `/proc/self/ns/net`.
async fn is_netns(path: &Path) -> NetnsState {
    use std::os::unix::fs::MetadataExt;
    let meta = match tokio::fs::metadata(path).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return NetnsState::Missing,
        // Cannot tell: let the plugin look at it itself.
        Err(_) => return NetnsState::Netns,
    };
    match tokio::fs::metadata("/proc/self/ns/net").await {
        Ok(own) if own.dev() != meta.dev() => NetnsState::NotNetns,
        _ => NetnsState::Netns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn runtime_config_holds_only_declared_enabled_capabilities() {
        let caps = map(json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1},
            "io.kubernetes.cri.pod-annotations": {"a": "b"}
        }));
        let plugin = map(json!({
            "type": "portmap",
            "capabilities": {"portMappings": true, "bandwidth": false, "ipRanges": true}
        }));
        assert_eq!(
            Value::Object(runtime_config(&plugin, &caps)),
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
        );
        assert!(runtime_config(&map(json!({"type": "bridge"})), &caps).is_empty());
    }

    #[test]
    fn stdin_injects_name_version_prev_result_and_runtime_config() {
        let network = NetworkConfigList {
            path: "/x/10.conflist".into(),
            name: "net".into(),
            cni_version: "1.0.0".into(),
            disable_check: false,
            plugins: vec![],
            raw: json!({}),
        };
        let plugin = PluginConfig {
            plugin_type: "portmap".into(),
            binary: PathBuf::new(),
            config: json!({
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "prevResult": {"stale": true}
            }),
        };
        let caps = map(json!({"portMappings": [], "other": 1}));
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let stdin = plugin_stdin(&network, &plugin, Some(&prev), &caps).expect("stdin");
        let value: Value = serde_json::from_slice(&stdin).expect("json");
        assert_eq!(value["name"], "net");
        assert_eq!(value["cniVersion"], "1.0.0");
        assert_eq!(value["prevResult"], prev);
        assert_eq!(value["runtimeConfig"], json!({"portMappings": []}));

        let stdin = plugin_stdin(&network, &plugin, None, &Map::new()).expect("stdin");
        let value: Value = serde_json::from_slice(&stdin).expect("json");
        assert!(value.get("prevResult").is_none());
        assert!(value.get("runtimeConfig").is_none());
    }

    #[test]
    fn cni_args_put_ignore_unknown_first_and_refuse_separators() {
        let args = vec![
            ("K8S_POD_NAMESPACE".to_string(), "default".to_string()),
            ("K8S_POD_NAME".to_string(), "web=1".to_string()),
        ];
        assert_eq!(
            cni_args(&args).expect("args"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web=1"
        );
        let own = vec![("IgnoreUnknown".to_string(), "0".to_string())];
        assert_eq!(cni_args(&own).expect("args"), "IgnoreUnknown=0");
        for (k, v) in [("a;b", "c"), ("a=b", "c"), ("", "c"), ("a", "b;c")] {
            assert!(cni_args(&[(k.into(), v.into())]).is_err(), "{k}={v}");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_at_least("0.4.0", (0, 4, 0)));
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(version_at_least("0.10.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
        assert!(!version_at_least("1.0.0", (1, 1, 0)));
        assert!(!version_at_least("x", (0, 0, 0)));
    }
}
