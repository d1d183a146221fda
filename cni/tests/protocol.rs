//! The invoker's side of the CNI protocol, against tiny shell-script plugins
//! that record their stdin and environment and print canned answers. These
//! test crid's exec, chaining, cache and error handling, not networking
//! (see `real_plugins.rs` for that). No root needed.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use cni::{Attachment, CniError, CniRunner, DelSkip, NetworkConfigList, load_network};
use serde_json::{Value, json};

/// One shared script, written once before any test spawns a process (a
/// script written while another thread forks can fail with ETXTBSY). Each
/// test's bin dir holds symlinks to it named after plugin types; the script
/// records the call next to the symlink and sources `<type>.sh` from there.
fn fake_plugin_script() -> &'static Path {
    static SCRIPT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = SCRIPT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fake-plugin");
        fs::write(
            &path,
            r#"#!/bin/sh
dir=$(dirname "$0")
n=$(basename "$0")
stdin=$(cat)
echo "$n $CNI_COMMAND" >> "$dir/calls"
printf '%s' "$stdin" > "$dir/$n.$CNI_COMMAND.stdin"
env > "$dir/$n.$CNI_COMMAND.env"
. "$dir/$n.sh"
"#,
        )
        .expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        (dir, path)
    });
    path
}

struct Setup {
    bin: tempfile::TempDir,
    conf: tempfile::TempDir,
    cache: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        fake_plugin_script();
        Setup {
            bin: tempfile::tempdir().expect("tempdir"),
            conf: tempfile::tempdir().expect("tempdir"),
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn bin(&self) -> &Path {
        self.bin.path()
    }

    /// A fake plugin `name` whose behaviour is the shell snippet `body`.
    fn plugin(&self, name: &str, body: &str) {
        let link = self.bin().join(name);
        if !link.exists() {
            symlink(fake_plugin_script(), &link).expect("symlink");
        }
        fs::write(self.bin().join(format!("{name}.sh")), body).expect("behaviour");
    }

    /// A plugin that answers ADD with a 1.0.0 result holding `ip`.
    fn result_plugin(&self, name: &str, ip: &str) {
        self.plugin(
            name,
            &format!(
                r#"case "$CNI_COMMAND" in
ADD) printf '%s' '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"/x"}}],"ips":[{{"address":"{ip}/24","interface":0}}]}}' ;;
VERSION) printf '%s' '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
esac
"#
            ),
        );
    }

    fn network(&self, content: Value) -> NetworkConfigList {
        fs::write(
            self.conf.path().join("10-test.conflist"),
            content.to_string(),
        )
        .expect("conf");
        load_network(self.conf.path(), &[self.bin().to_path_buf()]).expect("load network")
    }

    fn runner(&self) -> CniRunner {
        CniRunner::new(
            vec![self.bin().to_path_buf(), PathBuf::from("/nonexistent-bin")],
            self.cache.path().to_path_buf(),
        )
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.bin().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn stdin(&self, plugin: &str, command: &str) -> Value {
        let path = self.bin().join(format!("{plugin}.{command}.stdin"));
        serde_json::from_slice(&fs::read(&path).expect("recorded stdin")).expect("stdin JSON")
    }

    fn env(&self, plugin: &str, command: &str, key: &str) -> Option<String> {
        let path = self.bin().join(format!("{plugin}.{command}.env"));
        fs::read_to_string(path)
            .expect("recorded env")
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key}=")).map(str::to_string))
    }

    fn cache_files(&self) -> Vec<String> {
        match fs::read_dir(self.cache.path().join("results")) {
            Ok(entries) => entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn list(version: &str, plugins: Value) -> Value {
    json!({"cniVersion": version, "name": "testnet", "plugins": plugins})
}

fn attachment(netns: &Path) -> Attachment {
    Attachment {
        container_id: "c0ffee01".into(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        args: vec![
            ("K8S_POD_NAMESPACE".into(), "default".into()),
            ("K8S_POD_NAME".into(), "web".into()),
        ],
        capability_args: json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "io.kubernetes.cri.pod-annotations": {"a": "b"}
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    }
}

/// A path that is a real netns for the plugin checks (ours).
fn own_netns() -> PathBuf {
    PathBuf::from("/proc/self/ns/net")
}

#[tokio::test]
async fn add_chains_prev_result_and_del_runs_in_reverse_with_the_cached_result() {
    let s = Setup::new();
    s.result_plugin("first", "10.9.0.2");
    s.result_plugin("second", "10.9.0.3");
    let network = s.network(list(
        "1.0.0",
        json!([
            {"type": "first", "some": "option"},
            {"type": "second", "capabilities": {"portMappings": true, "bandwidth": true}}
        ]),
    ));
    let runner = s.runner();
    let a = attachment(&own_netns());

    let result = runner.add(&network, &a).await.expect("ADD");
    assert_eq!(
        result.pod_ips(),
        vec!["10.9.0.3".parse::<std::net::IpAddr>().expect("ip")]
    );
    assert_eq!(s.calls(), ["first ADD", "second ADD"]);

    let first = s.stdin("first", "ADD");
    assert_eq!(first["name"], "testnet");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["some"], "option");
    assert!(first.get("prevResult").is_none());
    assert!(
        first.get("runtimeConfig").is_none(),
        "first declares no capabilities"
    );

    let second = s.stdin("second", "ADD");
    assert_eq!(second["prevResult"]["ips"][0]["address"], "10.9.0.2/24");
    assert_eq!(
        second["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );

    let env = |key| s.env("first", "ADD", key);
    assert_eq!(env("CNI_COMMAND").as_deref(), Some("ADD"));
    assert_eq!(env("CNI_CONTAINERID").as_deref(), Some("c0ffee01"));
    assert_eq!(env("CNI_NETNS").as_deref(), Some("/proc/self/ns/net"));
    assert_eq!(env("CNI_IFNAME").as_deref(), Some("eth0"));
    assert_eq!(
        env("CNI_ARGS").as_deref(),
        Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web")
    );
    assert_eq!(
        env("CNI_PATH"),
        Some(format!("{}:/nonexistent-bin", s.bin().display()))
    );
    assert!(env("PATH").is_some());

    assert_eq!(s.cache_files(), ["testnet-c0ffee01-eth0"]);
    let cached = runner.cached("c0ffee01", "eth0").await.expect("cached");
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0].result.as_ref(), Some(&result));

    runner.check(&network, &a).await.expect("CHECK");
    assert_eq!(
        s.stdin("second", "CHECK")["prevResult"]["ips"][0]["address"],
        "10.9.0.3/24"
    );

    let outcome = runner.del(Some(&network), &a).await.expect("DEL");
    assert_eq!(outcome.networks, ["testnet"]);
    assert!(outcome.skipped.is_empty());
    assert_eq!(
        s.calls()[4..],
        ["second DEL", "first DEL"],
        "DEL runs in reverse"
    );
    // DEL gets the final cached ADD result, to every plugin.
    for plugin in ["first", "second"] {
        assert_eq!(
            s.stdin(plugin, "DEL")["prevResult"]["ips"][0]["address"],
            "10.9.0.3/24"
        );
    }
    assert_eq!(
        s.stdin("second", "DEL")["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(s.cache_files().is_empty(), "cache entry removed after DEL");

    // Again: nothing cached, the given network is DEL'd once more (harmless).
    runner.del(Some(&network), &a).await.expect("second DEL");
    // With neither cache nor network, nothing runs.
    let before = s.calls().len();
    let outcome = runner.del(None, &a).await.expect("DEL of nothing");
    assert!(outcome.nothing_to_do);
    assert_eq!(s.calls().len(), before);
}

#[tokio::test]
async fn del_uses_the_cached_config_not_the_current_one() {
    let s = Setup::new();
    s.result_plugin("old", "10.9.1.2");
    s.result_plugin("new", "10.9.1.3");
    let old = s.network(list("1.0.0", json!([{"type": "old"}])));
    let runner = s.runner();
    let a = attachment(&own_netns());
    runner.add(&old, &a).await.expect("ADD");

    // The conf dir changed (even the network name) before the pod stops.
    let new =
        s.network(json!({"cniVersion": "1.0.0", "name": "othernet", "plugins": [{"type": "new"}]}));
    let outcome = runner.del(Some(&new), &a).await.expect("DEL");
    assert_eq!(outcome.networks, ["testnet"]);
    assert_eq!(s.calls(), ["old ADD", "old DEL"]);
    assert!(s.cache_files().is_empty());

    // After a crid restart the caller may have no network at all.
    runner.add(&old, &a).await.expect("ADD");
    runner.del(None, &a).await.expect("DEL from cache alone");
    assert_eq!(s.calls()[3], "old DEL");
}

#[tokio::test]
async fn plugin_error_json_is_surfaced_and_add_is_rolled_back() {
    let s = Setup::new();
    s.result_plugin("good", "10.9.2.2");
    s.plugin(
        "bad",
        r#"if [ "$CNI_COMMAND" = ADD ]; then
printf '%s' '{"cniVersion":"1.0.0","code":11,"msg":"no more addresses","details":"range full"}'
exit 1
fi
"#,
    );
    let network = s.network(list("1.0.0", json!([{"type": "good"}, {"type": "bad"}])));
    let runner = s.runner();
    let a = attachment(&own_netns());

    let error = runner.add(&network, &a).await.expect_err("ADD fails");
    assert_eq!(error.plugin_code(), Some(11));
    assert!(error.is_plugin_failure());
    let message = error.to_string();
    for part in [
        "ADD",
        "\"bad\"",
        "\"testnet\"",
        "c0ffee01",
        "11",
        "no more addresses",
        "range full",
    ] {
        assert!(message.contains(part), "{part:?} missing in {message}");
    }
    // The whole list is DEL'd in reverse; the rollback hands over what the
    // first plugin returned.
    assert_eq!(s.calls(), ["good ADD", "bad ADD", "bad DEL", "good DEL"]);
    assert_eq!(
        s.stdin("good", "DEL")["prevResult"]["ips"][0]["address"],
        "10.9.2.2/24"
    );
    assert!(
        s.cache_files().is_empty(),
        "no cache entry after a rollback"
    );
}

#[tokio::test]
async fn failed_rollback_keeps_the_cache_for_a_later_del() {
    let s = Setup::new();
    s.result_plugin("good", "10.9.3.2");
    s.plugin("bad", "echo 'plain failure' >&2; exit 3\n");
    let network = s.network(list("1.0.0", json!([{"type": "good"}, {"type": "bad"}])));
    let runner = s.runner();
    let a = attachment(&own_netns());

    let error = runner.add(&network, &a).await.expect_err("ADD fails");
    let CniError::RollbackFailed { add, rollback } = &error else {
        panic!("expected RollbackFailed, got {error}");
    };
    assert!(matches!(**add, CniError::PluginExit { .. }), "{add}");
    assert!(add.to_string().contains("plain failure"), "{add}");
    assert!(rollback.to_string().contains("DEL"), "{rollback}");
    // DEL of "good" still ran after "bad" failed its DEL.
    assert_eq!(s.calls(), ["good ADD", "bad ADD", "bad DEL", "good DEL"]);
    assert_eq!(s.cache_files(), ["testnet-c0ffee01-eth0"]);

    // DEL keeps failing (and keeps the entry) until the plugin is fixed.
    let error = runner.del(Some(&network), &a).await.expect_err("DEL fails");
    assert!(error.is_plugin_failure());
    assert_eq!(s.cache_files(), ["testnet-c0ffee01-eth0"]);
    s.plugin("bad", "exit 0\n");
    runner.del(Some(&network), &a).await.expect("DEL after fix");
    assert!(s.cache_files().is_empty());
}

#[tokio::test]
async fn del_skips_missing_plugins_and_aggregates_failures() {
    let s = Setup::new();
    s.result_plugin("a", "10.9.4.2");
    s.result_plugin("b", "10.9.4.3");
    s.result_plugin("c", "10.9.4.4");
    let network = s.network(list(
        "1.0.0",
        json!([{"type": "a"}, {"type": "b"}, {"type": "c"}]),
    ));
    let runner = s.runner();
    let a = attachment(&own_netns());
    runner.add(&network, &a).await.expect("ADD");

    // "c" disappears (upgrade), "b" and "a" fail their DEL.
    fs::remove_file(s.bin().join("c")).expect("remove c");
    s.plugin(
        "b",
        "printf '%s' '{\"code\":100,\"msg\":\"b broke\"}'; exit 1\n",
    );
    s.plugin(
        "a",
        "printf '%s' '{\"code\":101,\"msg\":\"a broke\"}'; exit 1\n",
    );
    let error = runner.del(Some(&network), &a).await.expect_err("DEL");
    let CniError::Del { failures, .. } = &error else {
        panic!("expected an aggregated DEL error, got {error}");
    };
    assert_eq!(failures.len(), 2);
    assert!(error.to_string().contains("b broke") && error.to_string().contains("a broke"));
    assert_eq!(
        &s.calls()[3..],
        ["b DEL", "a DEL"],
        "c skipped, a still tried"
    );
    assert_eq!(s.cache_files().len(), 1, "entry kept for a retry");

    s.plugin("b", "exit 0\n");
    s.plugin("a", "exit 0\n");
    let outcome = runner.del(Some(&network), &a).await.expect("DEL retry");
    assert_eq!(
        outcome.skipped,
        [DelSkip::PluginMissing { plugin: "c".into() }]
    );
    assert!(s.cache_files().is_empty());
}

#[tokio::test]
async fn add_and_check_need_every_plugin() {
    let s = Setup::new();
    s.result_plugin("a", "10.9.5.2");
    let network = s.network(list("1.0.0", json!([{"type": "a"}])));
    fs::remove_file(s.bin().join("a")).expect("remove");
    let error = s
        .runner()
        .add(&network, &attachment(&own_netns()))
        .await
        .expect_err("ADD");
    assert!(matches!(error, CniError::PluginNotFound { .. }), "{error}");
    assert!(s.cache_files().is_empty());
}

#[tokio::test]
async fn missing_or_stale_netns_still_gets_del() {
    let s = Setup::new();
    s.result_plugin("a", "10.9.6.2");
    let network = s.network(list("1.0.0", json!([{"type": "a"}])));
    let runner = s.runner();
    let gone = s.cache.path().join("netns-gone");

    runner.add(&network, &attachment(&gone)).await.expect("ADD");
    let outcome = runner
        .del(Some(&network), &attachment(&gone))
        .await
        .expect("DEL");
    assert_eq!(
        outcome.skipped,
        [DelSkip::NetnsMissing {
            netns: gone.clone()
        }]
    );
    // A missing path is passed as given: the reference plugins check it.
    assert_eq!(
        s.env("a", "DEL", "CNI_NETNS"),
        Some(gone.display().to_string())
    );

    // A path that exists but is no netns (an unmounted pin): empty CNI_NETNS.
    let stale = s.cache.path().join("netns-stale");
    fs::write(&stale, b"").expect("file");
    runner
        .add(&network, &attachment(&stale))
        .await
        .expect("ADD");
    let outcome = runner
        .del(Some(&network), &attachment(&stale))
        .await
        .expect("DEL");
    assert_eq!(outcome.skipped, [DelSkip::NetnsMissing { netns: stale }]);
    assert_eq!(s.env("a", "DEL", "CNI_NETNS").as_deref(), Some(""));
}

#[tokio::test]
async fn timeout_kills_the_plugin() {
    let s = Setup::new();
    let pid_file = s.bin().join("slow.pid");
    s.plugin(
        "slow",
        &format!(
            "if [ \"$CNI_COMMAND\" = ADD ]; then echo $$ > {}; exec sleep 1000; fi\n",
            pid_file.display()
        ),
    );
    let network = s.network(list("1.0.0", json!([{"type": "slow"}])));
    let runner = s.runner().with_exec_timeout(Duration::from_millis(500));
    let error = runner
        .add(&network, &attachment(&own_netns()))
        .await
        .expect_err("ADD times out");
    assert!(matches!(error, CniError::Timeout { .. }), "{error}");
    assert!(error.to_string().contains("\"slow\""), "{error}");
    let pid = fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .to_string();
    // Killed and reaped: no process, not even a zombie.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "plugin {pid} still exists"
    );
    // The rollback DEL (which returns at once) ran.
    assert_eq!(s.calls(), ["slow ADD", "slow DEL"]);
}

#[tokio::test]
async fn oversized_output_and_bad_results_are_errors() {
    let s = Setup::new();
    s.plugin(
        "chatty",
        "if [ \"$CNI_COMMAND\" = ADD ]; then head -c 2000000 /dev/zero | tr '\\0' x; fi\n",
    );
    let network = s.network(list("1.0.0", json!([{"type": "chatty"}])));
    let error = s
        .runner()
        .add(&network, &attachment(&own_netns()))
        .await
        .expect_err("too much output");
    assert!(matches!(error, CniError::OutputTooLarge { .. }), "{error}");

    for (result, expected) in [
        (
            r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.2/24"}}"#,
            "\"0.2.0\"",
        ),
        ("not json", "not JSON"),
        (
            r#"{"cniVersion":"0.4.0","ips":[{"address":"10.0.0.2/24"}]}"#,
            "version",
        ),
    ] {
        s.plugin(
            "odd",
            &format!("if [ \"$CNI_COMMAND\" = ADD ]; then printf '%s' '{result}'; fi\n"),
        );
        let network = s.network(list("1.0.0", json!([{"type": "odd"}])));
        let error = s
            .runner()
            .add(&network, &attachment(&own_netns()))
            .await
            .expect_err(result);
        assert!(matches!(error, CniError::InvalidResult { .. }), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
        assert!(error.to_string().contains("\"odd\""), "{error}");
    }
    assert!(s.cache_files().is_empty());
}

#[tokio::test]
async fn check_needs_0_4_0_a_cached_result_and_no_disable_check() {
    let s = Setup::new();
    s.result_plugin("a", "10.9.7.2");
    let runner = s.runner();
    let a = attachment(&own_netns());

    let network = s.network(list("1.0.0", json!([{"type": "a"}])));
    let error = runner.check(&network, &a).await.expect_err("not attached");
    assert!(matches!(error, CniError::NotAttached { .. }), "{error}");

    let old = s.network(list("0.3.1", json!([{"type": "a"}])));
    runner.check(&old, &a).await.expect("0.3.1 has no CHECK");
    let mut disabled = list("1.0.0", json!([{"type": "a"}]));
    disabled["disableCheck"] = json!(true);
    let disabled = s.network(disabled);
    runner.check(&disabled, &a).await.expect("CHECK disabled");
    assert!(s.calls().is_empty(), "no plugin ran: {:?}", s.calls());

    s.plugin(
        "a",
        r#"case "$CNI_COMMAND" in
ADD) printf '%s' '{"cniVersion":"1.0.0","ips":[{"address":"10.9.7.2/24"}]}' ;;
CHECK) printf '%s' '{"code":7,"msg":"eth0 lost its address"}'; exit 1 ;;
esac
"#,
    );
    runner.add(&network, &a).await.expect("ADD");
    let error = runner.check(&network, &a).await.expect_err("CHECK fails");
    assert!(
        error.to_string().contains("eth0 lost its address"),
        "{error}"
    );
    runner.del(Some(&network), &a).await.expect("DEL");
}

#[tokio::test]
async fn version_and_status_report_every_plugin() {
    let s = Setup::new();
    s.result_plugin("a", "10.9.8.2");
    s.result_plugin("b", "10.9.8.3");
    let network = s.network(list("1.0.0", json!([{"type": "a"}, {"type": "b"}])));
    let runner = s.runner();
    let versions = runner.version(&network).await.expect("VERSION");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].plugin_type, "b");
    assert_eq!(versions[1].binary, s.bin().join("b"));
    assert_eq!(versions[1].supported_versions, ["0.4.0", "1.0.0"]);
    assert_eq!(s.stdin("a", "VERSION"), json!({"cniVersion": "1.0.0"}));

    // Before 1.1.0 STATUS is only "are the binaries there".
    runner.status(&network).await.expect("STATUS");
    assert!(!s.calls().iter().any(|c| c.ends_with("STATUS")));
    let status = s.network(list("1.1.0", json!([{"type": "a"}])));
    s.plugin(
        "a",
        "printf '%s' '{\"code\":50,\"msg\":\"not ready\"}'; exit 1\n",
    );
    let error = runner.status(&status).await.expect_err("STATUS");
    assert_eq!(error.plugin_code(), Some(50));
}

#[tokio::test]
async fn hostile_ids_are_refused_before_anything_runs() {
    let s = Setup::new();
    s.result_plugin("a", "10.9.9.2");
    let network = s.network(list("1.0.0", json!([{"type": "a"}])));
    let runner = s.runner();
    for id in ["../../etc/passwd", "a/b", "..", ""] {
        let mut a = attachment(&own_netns());
        a.container_id = id.into();
        let error = runner.add(&network, &a).await.expect_err(id);
        assert!(
            matches!(error, CniError::InvalidAttachment { .. }),
            "{error}"
        );
        assert!(runner.del(Some(&network), &a).await.is_err(), "{id}");
    }
    let mut a = attachment(&own_netns());
    a.args.push(("K".into(), "v;CNI_EVIL=1".into()));
    assert!(runner.add(&network, &a).await.is_err());
    assert!(s.calls().is_empty());
}
