//! The pod's hostname, hosts and resolv.conf files, which containers get
//! bind-mounted.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use crate::error::PodError;
use crate::spec::DnsConfig;

pub const HOSTNAME_FILE: &str = "hostname";
pub const HOSTS_FILE: &str = "hosts";
pub const RESOLV_FILE: &str = "resolv.conf";
/// glibc reads at most this many search domains and nameservers.
const MAX_SEARCHES: usize = 32;
const MAX_SERVERS: usize = 3;

/// A hostname is a DNS name of labels of at most 63 characters.
pub fn validate_hostname(hostname: &str) -> Result<(), PodError> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if hostname.len() <= 253 && hostname.split('.').all(valid_label) {
        Ok(())
    } else {
        Err(PodError::invalid(
            "hostname",
            hostname,
            "not a valid DNS hostname",
        ))
    }
}

pub fn validate_dns(dns: &DnsConfig) -> Result<(), PodError> {
    if dns.servers.len() > MAX_SERVERS {
        return Err(PodError::invalid(
            "dns_config.servers",
            dns.servers.join(","),
            "at most 3 nameservers",
        ));
    }
    for server in &dns.servers {
        server
            .parse::<IpAddr>()
            .map_err(|_| PodError::invalid("dns_config.servers", server, "not an IP address"))?;
    }
    if dns.searches.len() > MAX_SEARCHES {
        return Err(PodError::invalid(
            "dns_config.searches",
            dns.searches.join(","),
            "at most 32 search domains",
        ));
    }
    for entry in dns.searches.iter().chain(&dns.options) {
        if entry.is_empty() || entry.chars().any(|c| c.is_whitespace()) {
            return Err(PodError::invalid(
                "dns_config",
                entry,
                "entries must be single words",
            ));
        }
    }
    Ok(())
}

/// resolv.conf from the request, or the host's when the request has none
/// (as containerd does).
pub fn resolv_conf(dns: Option<&DnsConfig>, host_resolv: &Path) -> Result<String, PodError> {
    let Some(dns) = dns.filter(|dns| {
        !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty())
    }) else {
        return std::fs::read_to_string(host_resolv).or_else(|error| match error.kind() {
            std::io::ErrorKind::NotFound => Ok(String::new()),
            _ => Err(PodError::io("cannot read", host_resolv)(error)),
        });
    };
    let mut text = String::new();
    if !dns.searches.is_empty() {
        let _ = writeln!(text, "search {}", dns.searches.join(" "));
    }
    for server in &dns.servers {
        let _ = writeln!(text, "nameserver {server}");
    }
    if !dns.options.is_empty() {
        let _ = writeln!(text, "options {}", dns.options.join(" "));
    }
    Ok(text)
}

pub fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for ip in ips {
        let _ = writeln!(text, "{ip}\t{hostname}");
    }
    text
}

/// Writes `content` to `dir/name` atomically (temp file + rename), so a
/// container never sees a half-written file.
pub fn write_file(dir: &Path, name: &str, content: &str) -> Result<(), PodError> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temp, content).map_err(PodError::io("cannot write", &temp))?;
    std::fs::rename(&temp, &path).map_err(PodError::io("cannot write", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for good in ["pod", "my-pod-1", "a.b.c", &"x".repeat(63)] {
            validate_hostname(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "-pod",
            "pod-",
            "a..b",
            "under_score",
            "with space",
            &"x".repeat(64),
        ] {
            let error = validate_hostname(bad).expect_err(bad).to_string();
            assert!(error.contains("hostname"), "{error}");
        }
    }

    #[test]
    fn resolv_conf_from_the_request() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        validate_dns(&dns).expect("valid");
        let text = resolv_conf(Some(&dns), Path::new("/nonexistent")).expect("resolv");
        assert_eq!(
            text,
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\noptions ndots:5\n"
        );
    }

    #[test]
    fn resolv_conf_falls_back_to_the_hosts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = dir.path().join("resolv.conf");
        std::fs::write(&host, "nameserver 127.0.0.53\n").expect("write");
        assert_eq!(
            resolv_conf(None, &host).expect("copy"),
            "nameserver 127.0.0.53\n"
        );
        assert_eq!(
            resolv_conf(Some(&DnsConfig::default()), &host).expect("copy"),
            "nameserver 127.0.0.53\n"
        );
    }

    #[test]
    fn bad_dns_is_refused_naming_the_field() {
        let bad = [
            DnsConfig {
                servers: vec!["not-an-ip".into()],
                ..DnsConfig::default()
            },
            DnsConfig {
                servers: vec!["1.1.1.1".into(); 4],
                ..DnsConfig::default()
            },
            DnsConfig {
                searches: vec!["two words".into()],
                ..DnsConfig::default()
            },
        ];
        for dns in bad {
            let error = validate_dns(&dns).expect_err("bad dns").to_string();
            assert!(error.contains("dns_config"), "{error}");
        }
    }

    #[test]
    fn hosts_names_the_pod_ip() {
        let text = hosts("web", &["10.88.0.5".into()]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.88.0.5\tweb\n"));
    }
}
