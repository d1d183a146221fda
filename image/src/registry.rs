//! Per-host registry configuration (mirrors, insecure) and the list of
//! endpoints a pull tries, plus the mapping of oci-client errors.

use std::collections::BTreeMap;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};

/// `[registries."host"]` in crid's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Mirrors, tried in order before the host itself. `http://host:port`
    /// means plain HTTP; `https://` or no scheme means HTTPS.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Allow plain HTTP, and HTTPS with unverified certificates, to the host
    /// itself (HTTPS is tried first).
    #[serde(default)]
    pub insecure: bool,
}

impl RegistryConfig {
    /// Checks one `endpoints` entry against the grammar the store uses, so a
    /// config checker can refuse it up front, naming its key.
    pub fn check_endpoint(endpoint: &str) -> std::result::Result<(), String> {
        parse_endpoint(endpoint).map(|_| ())
    }
}

/// One place a pull can fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host[:port]` as used in URLs.
    pub host: String,
    pub plain_http: bool,
    pub accept_invalid_certs: bool,
    /// A mirror gets the `ns=<registry>` query parameter.
    pub mirror: bool,
}

impl Endpoint {
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.plain_http { "http" } else { "https" },
            self.host
        )
    }

    /// `progress_timeout`: how long the store lets a registry send nothing.
    /// The client's own read timeout is twice that, a backstop only, so the
    /// store's check (whose error names the layer and the setting) ends a
    /// stalled read first.
    pub fn client(&self, progress_timeout: Duration) -> oci_client::Client {
        let config = ClientConfig {
            protocol: if self.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: self.accept_invalid_certs,
            // We pick the platform ourselves (see manifest::select_platform).
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(progress_timeout.saturating_mul(2)),
            user_agent: concat!("crid/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        oci_client::Client::new(config)
    }
}

/// Parses a mirror endpoint: `[http://|https://]host[:port][/][v2[/]]`.
pub(crate) fn parse_endpoint(s: &str) -> std::result::Result<(String, bool), String> {
    let (rest, plain) = if let Some(r) = s.strip_prefix("http://") {
        (r, true)
    } else if let Some(r) = s.strip_prefix("https://") {
        (r, false)
    } else if s.contains("://") {
        return Err(format!(
            "endpoint {s:?} has an unsupported scheme (use http:// or https://)"
        ));
    } else {
        (s, false)
    };
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    if !matches!(path, "" | "v2" | "v2/") {
        return Err(format!(
            "endpoint {s:?} has a path; only host[:port] is supported"
        ));
    }
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        return Err(format!("endpoint {s:?} has a malformed host"));
    }
    Ok((host.to_string(), plain))
}

/// Checks every configured endpoint once, at open.
pub(crate) fn validate(registries: &BTreeMap<String, RegistryConfig>) -> Result<()> {
    for (host, cfg) in registries {
        for e in &cfg.endpoints {
            parse_endpoint(e).map_err(|reason| ImageError::InvalidConfig {
                what: format!("registries.{host:?}.endpoints"),
                reason,
            })?;
        }
    }
    Ok(())
}

/// The endpoints to try for `host`, in order: its mirrors, then the host
/// itself (for an insecure host: HTTPS without verification, then HTTP).
pub(crate) fn endpoints_for(
    registries: &BTreeMap<String, RegistryConfig>,
    host: &str,
) -> Vec<Endpoint> {
    let cfg = registries.get(host).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for e in &cfg.endpoints {
        // Already validated at open; a bad one is skipped rather than fatal.
        let Ok((h, plain)) = parse_endpoint(e) else {
            continue;
        };
        let ep = Endpoint {
            mirror: h != host,
            host: h,
            plain_http: plain,
            accept_invalid_certs: false,
        };
        if !out.contains(&ep) {
            out.push(ep);
        }
    }
    let itself = if cfg.insecure {
        vec![
            Endpoint {
                host: host.to_string(),
                plain_http: false,
                accept_invalid_certs: true,
                mirror: false,
            },
            Endpoint {
                host: host.to_string(),
                plain_http: true,
                accept_invalid_certs: false,
                mirror: false,
            },
        ]
    } else {
        vec![Endpoint {
            host: host.to_string(),
            plain_http: false,
            accept_invalid_certs: false,
            mirror: false,
        }]
    };
    for ep in itself {
        // A mirror entry that names the host itself was already tried.
        if !out
            .iter()
            .any(|o| o.host == ep.host && o.plain_http == ep.plain_http)
        {
            out.push(ep);
        }
    }
    out
}

/// Maps an oci-client error for `reference` onto our error kinds.
pub(crate) fn map_error(reference: &str, e: OciDistributionError) -> ImageError {
    let detail = error_chain(&e);
    let reference = reference.to_string();
    let code_kind = |codes: &[&OciErrorCode]| -> Option<u8> {
        if codes
            .iter()
            .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
        {
            Some(1)
        } else if codes.iter().any(|c| {
            matches!(
                c,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound
            )
        }) {
            Some(2)
        } else {
            None
        }
    };
    match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            ImageError::Unauthorized { reference, detail }
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|x| &x.code).collect();
            match code_kind(&codes) {
                Some(1) => ImageError::Unauthorized { reference, detail },
                Some(_) => ImageError::NotFound { reference, detail },
                None => ImageError::Registry { reference, detail },
            }
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ImageError::Unauthorized { reference, detail },
        OciDistributionError::ServerError { code: 404, .. }
        | OciDistributionError::ImageManifestNotFoundError(_) => {
            ImageError::NotFound { reference, detail }
        }
        OciDistributionError::DigestError(_) => ImageError::DigestMismatch {
            reference,
            what: "content".to_string(),
            expected: String::new(),
            actual: detail,
        },
        OciDistributionError::ManifestParsingError(_)
        | OciDistributionError::UnsupportedMediaTypeError(_)
        | OciDistributionError::UnsupportedSchemaVersionError(_)
        | OciDistributionError::VersionedParsingError(_) => ImageError::BadImage {
            reference,
            reason: detail,
        },
        _ => ImageError::Registry { reference, detail },
    }
}

/// The error and its sources on one line (reqwest hides the useful part,
/// such as "connection refused", in the source chain).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:5000"),
            Ok(("127.0.0.1:5000".into(), true))
        );
        assert_eq!(
            parse_endpoint("https://m.example/v2/"),
            Ok(("m.example".into(), false))
        );
        assert_eq!(
            parse_endpoint("m.example:443"),
            Ok(("m.example:443".into(), false))
        );
        assert_eq!(
            parse_endpoint("http://[::1]:5000/"),
            Ok(("[::1]:5000".into(), true))
        );
        assert!(parse_endpoint("ftp://x").is_err());
        assert!(parse_endpoint("http://x/prefix").is_err());
        assert!(parse_endpoint("http://").is_err());
        assert!(parse_endpoint("http://u@x").is_err());
    }

    #[test]
    fn endpoint_order() {
        let mut regs = BTreeMap::new();
        regs.insert(
            "docker.io".to_string(),
            RegistryConfig {
                endpoints: vec!["http://127.0.0.1:1".into(), "https://mirror.example".into()],
                insecure: false,
            },
        );
        regs.insert(
            "127.0.0.1:5000".to_string(),
            RegistryConfig {
                endpoints: vec!["http://127.0.0.1:5000".into()],
                insecure: true,
            },
        );
        let eps = endpoints_for(&regs, "docker.io");
        let urls: Vec<String> = eps.iter().map(Endpoint::url).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:1",
                "https://mirror.example",
                "https://docker.io"
            ]
        );
        assert!(eps[0].mirror && eps[1].mirror && !eps[2].mirror);
        assert!(!eps[2].accept_invalid_certs);

        let eps = endpoints_for(&regs, "127.0.0.1:5000");
        let urls: Vec<String> = eps.iter().map(Endpoint::url).collect();
        // The mirror entry naming the host itself is not a mirror, and is not tried twice.
        assert_eq!(urls, ["http://127.0.0.1:5000", "https://127.0.0.1:5000"]);
        assert!(!eps[0].mirror);
        assert!(eps[1].accept_invalid_certs);

        // Unknown host: HTTPS only.
        let eps = endpoints_for(&regs, "quay.io");
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].url(), "https://quay.io");
    }

    #[test]
    fn bad_config_is_refused() {
        let mut regs = BTreeMap::new();
        regs.insert(
            "x.io".to_string(),
            RegistryConfig {
                endpoints: vec!["gopher://x".into()],
                insecure: false,
            },
        );
        let e = validate(&regs).expect_err("must fail");
        assert!(e.to_string().contains("gopher://x"), "{e}");
        assert!(e.to_string().contains("x.io"), "{e}");
    }
}
