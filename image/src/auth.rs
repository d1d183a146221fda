//! Registry credentials: CRI's `AuthConfig` and how it maps onto HTTP auth.

use base64::Engine;
use oci_client::secrets::RegistryAuth;

use crate::error::{ImageError, Result};

/// The fields of CRI's `AuthConfig` message, copied as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    /// If set, the credentials are only for this registry host.
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

/// Credentials for one pull.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP Basic, also sent to a Bearer token service to get a token.
    Basic { username: String, password: String },
    /// An OAuth2 identity (refresh) token. Sent as Basic with the username
    /// `<token>` (Docker's convention) to the token service.
    IdentityToken(String),
    /// A bearer token sent as is to the registry.
    RegistryToken(String),
}

impl std::fmt::Debug for Credentials {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
            Credentials::RegistryToken(_) => write!(f, "RegistryToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Maps a CRI `AuthConfig` for an image on `registry_host`, as containerd
    /// does: `server_address` (if set) must name that host or the config is
    /// not used; then username/password, then identity token, then `auth`,
    /// then registry token. An empty config means anonymous (`None`).
    pub fn from_auth_config(cfg: &AuthConfig, registry_host: &str) -> Result<Option<Credentials>> {
        if !cfg.server_address.is_empty() && !server_matches(&cfg.server_address, registry_host) {
            return Ok(None);
        }
        if !cfg.username.is_empty() {
            return Ok(Some(Credentials::Basic {
                username: cfg.username.clone(),
                password: cfg.password.clone(),
            }));
        }
        if !cfg.identity_token.is_empty() {
            return Ok(Some(Credentials::IdentityToken(cfg.identity_token.clone())));
        }
        if !cfg.auth.is_empty() {
            let bad = |reason: &str| ImageError::InvalidConfig {
                what: "auth config field `auth`".to_string(),
                reason: reason.to_string(),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(cfg.auth.trim())
                .map_err(|e| bad(&format!("not base64: {e}")))?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad("decoded value is not username:password"))?;
            return Ok(Some(Credentials::Basic {
                username: user.to_string(),
                password: pass.trim_matches('\0').to_string(),
            }));
        }
        if !cfg.registry_token.is_empty() {
            return Ok(Some(Credentials::RegistryToken(cfg.registry_token.clone())));
        }
        Ok(None)
    }

    pub(crate) fn to_registry_auth(creds: Option<&Credentials>) -> RegistryAuth {
        match creds {
            None => RegistryAuth::Anonymous,
            Some(Credentials::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(Credentials::IdentityToken(t)) => {
                RegistryAuth::Basic("<token>".to_string(), t.clone())
            }
            Some(Credentials::RegistryToken(t)) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// Whether `server_address` (a host, or a URL as docker login writes it)
/// names `host`. Docker Hub has several names.
fn server_matches(server_address: &str, host: &str) -> bool {
    let without_scheme = server_address
        .strip_prefix("https://")
        .or_else(|| server_address.strip_prefix("http://"))
        .unwrap_or(server_address);
    let server_host = without_scheme.split('/').next().unwrap_or(without_scheme);
    let hub = |h: &str| {
        matches!(
            h,
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
        )
    };
    server_host == host || (hub(server_host) && hub(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AuthConfig {
        AuthConfig::default()
    }

    fn map(c: &AuthConfig) -> Option<Credentials> {
        Credentials::from_auth_config(c, "127.0.0.1:5000").expect("valid auth config")
    }

    #[test]
    fn empty_is_anonymous() {
        assert_eq!(map(&cfg()), None);
        assert!(matches!(
            Credentials::to_registry_auth(None),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn username_password() {
        let c = AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            auth: "Ym9iOnBhc3M=".into(), // ignored: username wins
            ..cfg()
        };
        let got = map(&c);
        assert_eq!(
            got,
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            })
        );
        assert_eq!(
            Credentials::to_registry_auth(got.as_ref()),
            RegistryAuth::Basic("alice".into(), "s3cret".into())
        );
    }

    #[test]
    fn auth_field_is_base64_user_colon_pass() {
        let c = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("bob:pa:ss\0"),
            ..cfg()
        };
        assert_eq!(
            map(&c),
            Some(Credentials::Basic {
                username: "bob".into(),
                password: "pa:ss".into()
            })
        );
        for bad in [
            "***",
            base64::engine::general_purpose::STANDARD
                .encode("nocolon")
                .as_str(),
        ] {
            let c = AuthConfig {
                auth: bad.into(),
                ..cfg()
            };
            let e = Credentials::from_auth_config(&c, "h").expect_err("must fail");
            assert!(matches!(e, ImageError::InvalidConfig { .. }), "{e}");
            assert!(e.to_string().contains("`auth`"), "{e}");
        }
    }

    #[test]
    fn tokens() {
        let c = AuthConfig {
            identity_token: "idt".into(),
            registry_token: "rt".into(),
            ..cfg()
        };
        let got = map(&c);
        assert_eq!(got, Some(Credentials::IdentityToken("idt".into())));
        assert_eq!(
            Credentials::to_registry_auth(got.as_ref()),
            RegistryAuth::Basic("<token>".into(), "idt".into())
        );
        let c = AuthConfig {
            registry_token: "rt".into(),
            ..cfg()
        };
        let got = map(&c);
        assert_eq!(got, Some(Credentials::RegistryToken("rt".into())));
        assert_eq!(
            Credentials::to_registry_auth(got.as_ref()),
            RegistryAuth::Bearer("rt".into())
        );
    }

    #[test]
    fn server_address_must_match_host() {
        let mut c = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            server_address: "other.example:5000".into(),
            ..cfg()
        };
        assert_eq!(map(&c), None);
        c.server_address = "http://127.0.0.1:5000/v2/".into();
        assert!(map(&c).is_some());
        c.server_address = "https://index.docker.io/v1/".into();
        assert!(
            Credentials::from_auth_config(&c, "docker.io")
                .expect("ok")
                .is_some()
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::RegistryToken("tok".into())).contains("tok\""));
    }
}
