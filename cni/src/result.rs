//! CNI results (spec 0.3.0–1.1.0): the part crid reads, plus the raw JSON
//! that is handed back to plugins as `prevResult` untouched.

use std::net::IpAddr;

use serde_json::{Map, Value};

/// Result versions whose `ips[]` entries carry `"version": "4"|"6"`.
const VERSIONED_IP_RESULTS: &[&str] = &["0.3.0", "0.3.1", "0.4.0"];
/// Result versions without it.
const UNVERSIONED_IP_RESULTS: &[&str] = &["1.0.0", "1.1.0"];

/// A parsed ADD result.
#[derive(Debug, Clone, PartialEq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// The result as the plugin printed it.
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; empty on the host.
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// CIDR as the plugin gave it, e.g. `10.22.0.5/24`.
    pub address: String,
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// CIDR, e.g. `0.0.0.0/0`.
    pub dst: String,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl CniResult {
    /// Parses a result of any supported version; anything else is an error
    /// naming the version.
    pub fn parse(raw: Value) -> Result<CniResult, String> {
        let object = raw.as_object().ok_or("result is not a JSON object")?;
        let cni_version = match object.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            Some(other) => return Err(format!("\"cniVersion\" must be a string, found {other}")),
            None => return Err("\"cniVersion\" is missing".into()),
        };
        let ip_has_version = if VERSIONED_IP_RESULTS.contains(&cni_version.as_str()) {
            true
        } else if UNVERSIONED_IP_RESULTS.contains(&cni_version.as_str()) {
            false
        } else {
            return Err(format!(
                "result version {cni_version:?} is not supported (supported: {}, {})",
                VERSIONED_IP_RESULTS.join(", "),
                UNVERSIONED_IP_RESULTS.join(", ")
            ));
        };

        let interfaces = array(object, "interfaces")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_interface(v).map_err(|e| format!("interfaces[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let ips = array(object, "ips")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                parse_ip(v, ip_has_version, interfaces.len()).map_err(|e| format!("ips[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let routes = array(object, "routes")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_route(v).map_err(|e| format!("routes[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let dns = match object.get("dns") {
            None | Some(Value::Null) => Dns::default(),
            Some(v) => parse_dns(v).map_err(|e| format!("dns: {e}"))?,
        };
        Ok(CniResult {
            cni_version,
            interfaces,
            ips,
            routes,
            dns,
            raw,
        })
    }

    /// The pod's addresses, IPv4 first (CRI's `ip`, then `additional_ips`).
    /// Addresses on host-side interfaces (a bridge's gateway) are left out.
    pub fn pod_ips(&self) -> Vec<IpAddr> {
        let in_sandbox = |ip: &&IpConfig| match ip.interface {
            Some(index) => self
                .interfaces
                .get(index)
                .is_some_and(|iface| !iface.sandbox.is_empty()),
            None => true,
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        for want_v4 in [true, false] {
            for ip in self.ips.iter().filter(in_sandbox) {
                if ip.ip.is_ipv4() == want_v4 && !ips.contains(&ip.ip) {
                    ips.push(ip.ip);
                }
            }
        }
        ips
    }
}

fn array<'a>(object: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!("\"{key}\" must be an array, found {other}")),
    }
}

fn string_field(object: &Map<String, Value>, key: &str) -> Result<String, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("\"{key}\" must be a string, found {other}")),
    }
}

fn string_list(object: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    array(object, key)?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("\"{key}\" must hold strings, found {v}"))
        })
        .collect()
}

fn as_object(value: &Value) -> Result<&Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("not an object: {value}"))
}

fn parse_interface(value: &Value) -> Result<Interface, String> {
    let object = as_object(value)?;
    let name = string_field(object, "name")?;
    if name.is_empty() {
        return Err("\"name\" is missing".into());
    }
    let mtu = match object.get("mtu") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| format!("\"mtu\" is not a number: {v}"))?,
        ),
    };
    Ok(Interface {
        name,
        mac: string_field(object, "mac")?,
        mtu,
        sandbox: string_field(object, "sandbox")?,
    })
}

/// Parses `addr/prefix`, checking the prefix fits the family.
pub(crate) fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} is not in CIDR notation"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{cidr:?}: {addr:?} is not an IP address"))?;
    let prefix_len: u8 = prefix
        .parse()
        .map_err(|_| format!("{cidr:?}: bad prefix length"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(format!("{cidr:?}: prefix length above {max}"));
    }
    Ok((ip, prefix_len))
}

fn optional_ip(object: &Map<String, Value>, key: &str) -> Result<Option<IpAddr>, String> {
    let text = string_field(object, key)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("\"{key}\" {text:?} is not an IP address"))
}

fn parse_ip(value: &Value, has_version: bool, interfaces: usize) -> Result<IpConfig, String> {
    let object = as_object(value)?;
    let address = string_field(object, "address")?;
    if address.is_empty() {
        return Err("\"address\" is missing".into());
    }
    let (ip, prefix_len) = parse_cidr(&address)?;
    if has_version {
        // 0.3.x/0.4.0 name the family; it must agree with the address.
        let version = string_field(object, "version")?;
        let expected = if ip.is_ipv4() { "4" } else { "6" };
        if version != expected {
            return Err(format!(
                "\"version\" is {version:?} but {address} needs {expected:?}"
            ));
        }
    }
    let gateway = optional_ip(object, "gateway")?;
    if gateway.is_some_and(|gw| gw.is_ipv4() != ip.is_ipv4()) {
        return Err(format!("gateway of {address} is of the other IP family"));
    }
    let interface = match object.get("interface") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let index = v
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| format!("\"interface\" is not an index: {v}"))?;
            if index >= interfaces {
                return Err(format!(
                    "\"interface\" {index} but the result has {interfaces} interface(s)"
                ));
            }
            Some(index)
        }
    };
    Ok(IpConfig {
        address,
        ip,
        prefix_len,
        gateway,
        interface,
    })
}

fn parse_route(value: &Value) -> Result<Route, String> {
    let object = as_object(value)?;
    let dst = string_field(object, "dst")?;
    parse_cidr(&dst)?;
    Ok(Route {
        dst,
        gw: optional_ip(object, "gw")?,
    })
}

fn parse_dns(value: &Value) -> Result<Dns, String> {
    let object = as_object(value)?;
    Ok(Dns {
        nameservers: string_list(object, "nameservers")?,
        domain: string_field(object, "domain")?,
        search: string_list(object, "search")?,
        options: string_list(object, "options")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result_040() -> Value {
        json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"version": "6", "address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
                {"version": "4", "address": "10.22.0.5/24", "gateway": "10.22.0.1", "interface": 2},
                {"version": "4", "address": "10.22.0.1/24", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.1"}, {"dst": "::/0"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    }

    #[test]
    fn parses_040_with_versions_and_orders_pod_ips_v4_first() {
        let result = CniResult::parse(result_040()).expect("parse");
        assert_eq!(result.cni_version, "0.4.0");
        assert_eq!(result.interfaces.len(), 3);
        assert_eq!(result.interfaces[2].sandbox, "/run/netns/x");
        assert_eq!(result.ips[1].address, "10.22.0.5/24");
        assert_eq!(result.ips[1].prefix_len, 24);
        assert_eq!(
            result.ips[1].gateway,
            Some("10.22.0.1".parse().expect("ip"))
        );
        assert_eq!(result.ips[1].interface, Some(2));
        assert_eq!(result.routes[0].gw, Some("10.22.0.1".parse().expect("ip")));
        assert_eq!(result.routes[1].gw, None);
        assert_eq!(result.dns.nameservers, ["10.96.0.10"]);
        // The bridge's own address (interface 0, no sandbox) is not a pod IP.
        let expected: Vec<IpAddr> = vec![
            "10.22.0.5".parse().expect("ip"),
            "fd00::5".parse().expect("ip"),
        ];
        assert_eq!(result.pod_ips(), expected);
        assert_eq!(result.raw, result_040());
    }

    #[test]
    fn parses_030_031_and_1x_shapes() {
        for version in ["0.3.0", "0.3.1"] {
            let mut raw = result_040();
            raw["cniVersion"] = json!(version);
            let result = CniResult::parse(raw).expect(version);
            assert_eq!(result.cni_version, version);
            assert_eq!(result.ips.len(), 3);
        }
        for version in ["1.0.0", "1.1.0"] {
            let raw = json!({
                "cniVersion": version,
                "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                "ips": [{"address": "10.22.0.7/16", "interface": 0}]
            });
            let result = CniResult::parse(raw).expect(version);
            assert_eq!(
                result.pod_ips(),
                vec!["10.22.0.7".parse::<IpAddr>().expect("ip")]
            );
            assert!(result.routes.is_empty());
            assert_eq!(result.dns, Dns::default());
        }
        // An IP without an interface index counts as the pod's.
        let minimal = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.2/24"}]});
        let result = CniResult::parse(minimal).expect("minimal");
        assert_eq!(result.pod_ips().len(), 1);
    }

    #[test]
    fn bad_results_are_refused_naming_the_problem() {
        let cases = [
            (json!([]), "not a JSON object"),
            (json!({"ips": []}), "\"cniVersion\" is missing"),
            (
                json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}}),
                "\"0.2.0\" is not supported",
            ),
            (json!({"cniVersion": "2.0.0"}), "\"2.0.0\""),
            (
                json!({"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.2/24"}]}),
                "ips[0]: \"version\" is \"\"",
            ),
            (
                json!({"cniVersion": "0.3.1", "ips": [{"version": "6", "address": "10.0.0.2/24"}]}),
                "needs \"4\"",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}),
                "not in CIDR",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/33"}]}),
                "prefix length above 32",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": 1}]}),
                "has 0 interface(s)",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "gateway": "fd00::1"}]}),
                "other IP family",
            ),
            (
                json!({"cniVersion": "1.0.0", "ips": {}}),
                "must be an array",
            ),
            (
                json!({"cniVersion": "1.0.0", "routes": [{"dst": "nope"}]}),
                "routes[0]",
            ),
            (
                json!({"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]}),
                "interfaces[0]: \"name\" is missing",
            ),
        ];
        for (raw, expected) in cases {
            let error = CniResult::parse(raw.clone()).expect_err(&raw.to_string());
            assert!(error.contains(expected), "{raw}: {error}");
        }
    }
}
