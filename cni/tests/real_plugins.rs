//! ADD/CHECK/DEL with Debian's containernetworking-plugins (bridge,
//! host-local, loopback, portmap) in a network namespace of the test's own.
//! Needs root, `ip` (iproute2), `iptables` and the plugins in /usr/lib/cni.
//!
//! Every test uses its own bridge name, netns, subnet, host-local dataDir and
//! cache dir, and checks at the end that nothing of it is left on the host.
//! Traffic goes only to the pod address the test created.

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cni::{Attachment, CniError, CniRunner, DelSkip, NetworkConfigList, load_network};
use serde_json::{Value, json};

const PLUGIN_DIR: &str = "/usr/lib/cni";

/// The tests share iptables' portmap chains and `ip netns`; one at a time
/// keeps the leak checks exact.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install iproute2/iptables): {e}"));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn must(program: &str, args: &[&str]) -> String {
    let (ok, text) = run(program, args);
    assert!(ok, "{program} {args:?} failed: {text}");
    text
}

fn random_u32() -> u32 {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").expect("random uuid");
    u32::from_str_radix(&uuid.replace('-', "")[..8], 16).expect("hex")
}

fn prerequisites() {
    assert!(
        nix_is_root(),
        "these tests need root (they create netns, bridges and iptables rules)"
    );
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        assert!(
            Path::new(PLUGIN_DIR).join(plugin).exists(),
            "{PLUGIN_DIR}/{plugin} missing: apt-get install containernetworking-plugins"
        );
    }
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The portmap plugin's shared top-level chains. It never removes them; if
/// they were not there before a test, the test removes them again.
const PORTMAP_CHAINS: &[&str] = &[
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SNAT",
    "CNI-HOSTPORT-MASQ",
    "CNI-HOSTPORT-SETMARK",
];

fn portmap_chains_present() -> bool {
    must("iptables-save", &["-t", "nat"]).contains(":CNI-HOSTPORT-DNAT")
}

fn remove_portmap_scaffolding() {
    let rules = must("iptables-save", &["-t", "nat"]);
    // Unused only: no per-pod chain may still hang off them.
    if rules.contains("CNI-DN-") {
        return;
    }
    for line in rules.lines() {
        let Some(rule) = line.strip_prefix("-A ") else {
            continue;
        };
        if PORTMAP_CHAINS.iter().any(|c| rule.contains(c)) {
            let parts = split_rule(rule);
            let mut args = vec!["-t", "nat", "-D"];
            args.extend(parts.iter().map(String::as_str));
            let _ = run("iptables", &args);
        }
    }
    for chain in PORTMAP_CHAINS {
        let _ = run("iptables", &["-t", "nat", "-F", chain]);
        let _ = run("iptables", &["-t", "nat", "-X", chain]);
    }
}

/// Splits an iptables-save rule into arguments (quotes kept together).
fn split_rule(rule: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

/// After a failed test: portmap's per-pod rules (they name the test's
/// network and container, both holding the test id) and the chains they
/// jump to.
fn remove_rules_mentioning(id: &str) {
    let rules = must("iptables-save", &["-t", "nat"]);
    let mut chains = Vec::new();
    for rule in rules.lines().filter_map(|l| l.strip_prefix("-A ")) {
        if !rule.contains(id) {
            continue;
        }
        let parts = split_rule(rule);
        if let Some(target) = parts.iter().skip_while(|p| *p != "-j").nth(1)
            && target.starts_with("CNI-DN-")
        {
            chains.push(target.clone());
        }
        let mut args = vec!["-t", "nat", "-D"];
        args.extend(parts.iter().map(String::as_str));
        let _ = run("iptables", &args);
    }
    for chain in &chains {
        let _ = run("iptables", &["-t", "nat", "-F", chain]);
        let _ = run("iptables", &["-t", "nat", "-X", chain]);
    }
}

struct TestNet {
    id: String,
    bridge: String,
    netns_name: String,
    netns: PathBuf,
    subnet: String, // "10.a.b"
    data_dir: tempfile::TempDir,
    cache_dir: tempfile::TempDir,
    conf_dir: tempfile::TempDir,
    bin_dir: tempfile::TempDir,
    host_port: u16,
    portmap_chains_before: bool,
}

impl TestNet {
    fn new() -> TestNet {
        prerequisites();
        let id = format!("{:08x}", random_u32());
        let routes = must("ip", &["-4", "route", "show", "table", "all"]);
        let subnet = loop {
            let r = random_u32();
            let candidate = format!("10.{}.{}", 200 + r % 55, (r >> 8) % 256);
            if !routes.contains(&format!("{candidate}.")) {
                break candidate;
            }
        };
        let netns_name = format!("crid-cni-test-{id}");
        must("ip", &["netns", "add", &netns_name]);
        TestNet {
            bridge: format!("cridt{id}"),
            netns: PathBuf::from(format!("/run/netns/{netns_name}")),
            netns_name,
            subnet,
            data_dir: tempfile::tempdir().expect("tempdir"),
            cache_dir: tempfile::tempdir().expect("tempdir"),
            conf_dir: tempfile::tempdir().expect("tempdir"),
            bin_dir: tempfile::tempdir().expect("tempdir"),
            host_port: 40000 + (random_u32() % 20000) as u16,
            portmap_chains_before: portmap_chains_present(),
            id,
        }
    }

    fn network_name(&self) -> String {
        format!("crid-cni-test-{}", self.id)
    }

    fn plugins(&self) -> Vec<Value> {
        vec![
            json!({
                "type": "bridge",
                "bridge": self.bridge,
                // No isGateway/ipMasq: they would flip the host's ip_forward
                // sysctl and add masquerade rules, neither the test's own.
                "isGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{
                        "subnet": format!("{}.0/24", self.subnet),
                        "rangeStart": format!("{}.10", self.subnet),
                        "rangeEnd": format!("{}.100", self.subnet),
                        "gateway": format!("{}.1", self.subnet)
                    }]],
                    "dataDir": self.data_dir.path()
                }
            }),
            json!({"type": "loopback"}),
            json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        ]
    }

    fn network(&self, plugins: Vec<Value>) -> NetworkConfigList {
        let list = json!({
            "cniVersion": "1.0.0",
            "name": self.network_name(),
            "plugins": plugins
        });
        fs::write(
            self.conf_dir.path().join("10-test.conflist"),
            list.to_string(),
        )
        .expect("conf");
        load_network(self.conf_dir.path(), &self.bin_dirs()).expect("load network")
    }

    fn bin_dirs(&self) -> Vec<PathBuf> {
        vec![self.bin_dir.path().to_path_buf(), PathBuf::from(PLUGIN_DIR)]
    }

    fn runner(&self) -> CniRunner {
        CniRunner::new(self.bin_dirs(), self.cache_dir.path().to_path_buf())
    }

    fn attachment(&self) -> Attachment {
        let container_id = format!("cridcnitest{}", self.id);
        Attachment {
            container_id: container_id.clone(),
            netns: self.netns.clone(),
            ifname: "eth0".into(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), "default".into()),
                ("K8S_POD_NAME".into(), format!("pod-{}", self.id)),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), container_id),
                ("K8S_POD_UID".into(), format!("uid-{}", self.id)),
            ],
            capability_args: json!({
                "portMappings": [{
                    "hostPort": self.host_port,
                    "containerPort": 80,
                    "protocol": "tcp"
                }]
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        }
    }

    fn ip_lease(&self, ip: &IpAddr) -> PathBuf {
        self.data_dir
            .path()
            .join(self.network_name())
            .join(ip.to_string())
    }

    fn veths_on_bridge(&self) -> String {
        let (_, text) = run("ip", &["-o", "link", "show", "master", &self.bridge]);
        text
    }

    fn iptables_mentions_us(&self) -> bool {
        must("iptables-save", &[]).contains(&self.id)
            || must("ip6tables-save", &[]).contains(&self.id)
    }

    fn write_fake_plugin(&self, name: &str, body: &str) {
        let path = self.bin_dir.path().join(name);
        fs::write(&path, body).expect("write plugin");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// Removes what the test created itself (the bridge the plugin made,
    /// the netns) and checks nothing else of the test is left.
    fn finish(self) {
        self.cleanup();
        let (_, links) = run("ip", &["-o", "link", "show"]);
        assert!(!links.contains(&self.bridge), "bridge left: {links}");
        let netns = must("ip", &["netns", "list"]);
        assert!(!netns.contains(&self.netns_name), "netns left: {netns}");
        assert!(
            !self.iptables_mentions_us(),
            "iptables rules of the test left"
        );
        if !self.portmap_chains_before {
            assert!(!portmap_chains_present(), "portmap chains left");
        }
    }

    fn cleanup(&self) {
        remove_rules_mentioning(&self.id);
        let _ = run("ip", &["link", "del", &self.bridge]);
        let _ = run("ip", &["netns", "del", &self.netns_name]);
        if !self.portmap_chains_before {
            remove_portmap_scaffolding();
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // On a failed assertion, still take down the host objects.
        self.cleanup();
    }
}

fn pod_ipv4(ips: &[IpAddr]) -> IpAddr {
    *ips.iter()
        .find(|ip| ip.is_ipv4())
        .expect("an IPv4 pod address")
}

#[tokio::test]
async fn add_check_del_with_real_plugins() {
    let _serial = SERIAL.lock().await;
    let t = TestNet::new();
    let network = t.network(t.plugins());
    let runner = t.runner();
    let a = t.attachment();

    let versions = runner.version(&network).await.expect("VERSION");
    assert!(
        versions
            .iter()
            .all(|v| v.supported_versions.iter().any(|s| s == "1.0.0")),
        "{versions:?}"
    );
    runner.status(&network).await.expect("STATUS");

    let result = runner.add(&network, &a).await.expect("ADD");
    let ip = pod_ipv4(&result.pod_ips());
    assert!(
        ip.to_string().starts_with(&format!("{}.", t.subnet)),
        "{ip} not in {}.0/24",
        t.subnet
    );
    assert!(t.ip_lease(&ip).exists(), "host-local lease for {ip}");

    // Inside the pod: eth0 holds the address, lo is up.
    let eth0 = must(
        "ip",
        &["-n", &t.netns_name, "-o", "addr", "show", "dev", "eth0"],
    );
    assert!(eth0.contains(&format!("inet {ip}/24")), "{eth0}");
    let lo = must(
        "ip",
        &["-n", &t.netns_name, "-o", "link", "show", "dev", "lo"],
    );
    assert!(lo.contains(",UP"), "{lo}");
    assert!(
        !t.veths_on_bridge().trim().is_empty(),
        "a veth on the bridge"
    );
    assert!(t.iptables_mentions_us(), "portmap rules for the pod");

    // The host reaches the pod: give the bridge the gateway address (the
    // test's own, isGateway is off) and connect to a closed port; the pod's
    // kernel answering with a reset proves the path.
    must(
        "ip",
        &[
            "addr",
            "add",
            &format!("{}.1/24", t.subnet),
            "dev",
            &t.bridge,
        ],
    );
    let connect = tokio::task::spawn_blocking(move || {
        TcpStream::connect_timeout(&SocketAddr::new(ip, 9), Duration::from_secs(10))
    })
    .await
    .expect("connect task");
    match connect {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("nothing listens on port 9 in the pod"),
    }

    // CHECK of bridge + loopback against the cached result. Debian's
    // portmap 1.1.1 cannot take part: its CHECK also looks for an ip6tables
    // DNAT chain for IPv4-only pods and fails ("could not check ipv6 dnat").
    let mut checkable = network.clone();
    checkable.plugins.retain(|p| p.plugin_type != "portmap");
    runner.check(&checkable, &a).await.expect("CHECK");

    let outcome = runner.del(Some(&network), &a).await.expect("DEL");
    assert!(outcome.skipped.is_empty(), "{outcome:?}");
    assert!(!t.ip_lease(&ip).exists(), "lease released");
    assert!(t.veths_on_bridge().trim().is_empty(), "veth removed");
    let (_, eth0) = run("ip", &["-n", &t.netns_name, "link", "show", "dev", "eth0"]);
    assert!(eth0.contains("does not exist"), "{eth0}");
    assert!(!t.iptables_mentions_us(), "portmap rules removed");

    // kubelet retries StopPodSandbox: DEL again is fine.
    runner.del(Some(&network), &a).await.expect("second DEL");
    assert!(runner.del(None, &a).await.expect("DEL").nothing_to_do);
    t.finish();
}

#[tokio::test]
async fn del_after_the_netns_is_gone_releases_the_ip() {
    let _serial = SERIAL.lock().await;
    let t = TestNet::new();
    let network = t.network(t.plugins());
    let runner = t.runner();
    let a = t.attachment();

    let result = runner.add(&network, &a).await.expect("ADD");
    let ip = pod_ipv4(&result.pod_ips());
    assert!(t.ip_lease(&ip).exists());

    // A reboot (or a lost pin) took the netns; the veth went with it.
    must("ip", &["netns", "del", &t.netns_name]);
    assert!(!t.netns.exists());

    let outcome = runner.del(Some(&network), &a).await.expect("DEL");
    assert_eq!(
        outcome.skipped,
        [DelSkip::NetnsMissing {
            netns: t.netns.clone()
        }]
    );
    assert!(
        !t.ip_lease(&ip).exists(),
        "lease released without the netns"
    );
    assert!(!t.iptables_mentions_us(), "portmap rules removed");
    assert!(
        runner
            .cached(&a.container_id, "eth0")
            .await
            .expect("cache")
            .is_empty()
    );
    t.finish();
}

#[tokio::test]
async fn a_failing_plugin_rolls_back_the_earlier_ones() {
    let _serial = SERIAL.lock().await;
    let t = TestNet::new();
    // Written while SERIAL is held and before any spawn of this test binary.
    t.write_fake_plugin(
        "crid-test-fail",
        "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n\
         printf '%s' '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected failure\"}'\n\
         exit 1\nfi\n",
    );
    let mut plugins = t.plugins();
    plugins.insert(1, json!({"type": "crid-test-fail"}));
    let network = t.network(plugins);
    let runner = t.runner();
    let a = t.attachment();

    let error = runner.add(&network, &a).await.expect_err("ADD fails");
    assert!(
        matches!(&error, CniError::Plugin { code: 999, call, .. } if call.plugin == "crid-test-fail"),
        "{error}"
    );
    // bridge + host-local were undone: no lease, no veth, no eth0, no cache.
    let leases = fs::read_dir(t.data_dir.path().join(t.network_name()))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&format!("{}.", t.subnet)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    assert!(t.veths_on_bridge().trim().is_empty(), "veth left");
    let (_, eth0) = run("ip", &["-n", &t.netns_name, "link", "show", "dev", "eth0"]);
    assert!(eth0.contains("does not exist"), "{eth0}");
    assert!(
        runner
            .cached(&a.container_id, "eth0")
            .await
            .expect("cache")
            .is_empty()
    );
    assert!(!t.iptables_mentions_us());
    t.finish();
}

#[tokio::test]
async fn del_with_an_unmounted_netns_pin_releases_the_ip() {
    let _serial = SERIAL.lock().await;
    let t = TestNet::new();
    let network = t.network(t.plugins());
    let runner = t.runner();
    let a = t.attachment();
    let result = runner.add(&network, &a).await.expect("ADD");
    let ip = pod_ipv4(&result.pod_ips());
    must("ip", &["netns", "del", &t.netns_name]);

    // The pin's mount point is still there but holds no netns any more: the
    // reference plugins refuse such a path ("unknown FS magic"), so crid
    // passes an empty CNI_NETNS instead.
    let pin = t.cache_dir.path().join("netns-pin");
    fs::write(&pin, b"").expect("pin file");
    let mut stale = a.clone();
    stale.netns = pin.clone();
    let outcome = runner.del(Some(&network), &stale).await.expect("DEL");
    assert_eq!(outcome.skipped, [DelSkip::NetnsMissing { netns: pin }]);
    assert!(!t.ip_lease(&ip).exists(), "lease released");
    assert!(!t.iptables_mentions_us(), "portmap rules removed");
    t.finish();
}
