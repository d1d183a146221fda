//! Image references: the Docker reference grammar (distribution/reference)
//! with the normalisation kubelet and containerd apply.

use std::fmt;

use crate::error::ImageError;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
const NAME_TOTAL_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A parsed and normalised image reference.
///
/// `busybox` is `docker.io/library/busybox:latest`; a reference with only a
/// digest gets no tag; a reference with both keeps both (the digest decides
/// what is pulled).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Reference, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(invalid("reference is empty"));
        }
        if s.trim() != s {
            return Err(invalid("reference has leading or trailing whitespace"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            validate_digest(d).map_err(|r| invalid(&r))?;
        }
        // A ':' after the last '/' separates the tag; an earlier one is a port.
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(c) if last_slash.is_none_or(|sl| c > sl) => {
                (&name_tag[..c], Some(&name_tag[c + 1..]))
            }
            _ => (name_tag, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(|r| invalid(&r))?;
        }
        if name.is_empty() {
            return Err(invalid("repository name is empty"));
        }
        if is_hex64(name) {
            return Err(invalid(
                "a 64-character hexadecimal string is an image ID, not a repository name",
            ));
        }
        let (registry, remainder) = split_domain(name);
        if let Some(reg) = &registry {
            validate_domain(reg).map_err(|r| invalid(&r))?;
        }
        if remainder.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        validate_path(remainder).map_err(|r| invalid(&r))?;
        let registry = match registry {
            None => DOCKER_HUB.to_string(),
            Some("index.docker.io") => DOCKER_HUB.to_string(),
            Some(r) => r.to_string(),
        };
        let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
            format!("library/{remainder}")
        } else {
            remainder.to_string()
        };
        if registry.len() + 1 + repository.len() > NAME_TOTAL_MAX {
            return Err(invalid(
                "repository name must not be more than 255 characters",
            ));
        }
        let tag = match (tag, digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// The registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` is filled in when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The `sha256:` digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `registry/repository`, the name part without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if the reference has a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{}", self.name(), t))
    }

    /// `registry/repository@digest` for the given digest.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{}", self.name(), digest)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Splits the domain off as Docker does: the first component is a domain only
/// if it contains '.' or ':', is `localhost`, or has uppercase letters.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a `sha256:<64 lowercase hex>` digest (the only algorithm we pull).
pub(crate) fn validate_digest(d: &str) -> Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("digest {d:?} has no algorithm"));
    };
    if alg.is_empty()
        || !alg.starts_with(|c: char| c.is_ascii_alphabetic())
        || !alg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-' | '_'))
    {
        return Err(format!("digest algorithm {alg:?} is malformed"));
    }
    if hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("digest {d:?} has a malformed hex part"));
    }
    if alg != "sha256" {
        return Err(format!(
            "digest algorithm {alg:?} is not supported (only sha256)"
        ));
    }
    if !is_hex64(hex) {
        return Err(format!(
            "sha256 digest {d:?} must be 64 lowercase hex characters"
        ));
    }
    Ok(())
}

fn validate_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= TAG_MAX
        && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} is malformed (1-128 of [A-Za-z0-9_.-], not starting with '.' or '-')"
        ))
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let bad = || Err(format!("registry host {domain:?} is malformed"));
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // [IPv6]:port
        let Some((addr, after)) = rest.split_once(']') else {
            return bad();
        };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return bad();
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    if let Some(h) = host {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !h.split('.').all(component_ok) {
            return bad();
        }
    }
    Ok(())
}

/// path-component := [a-z0-9]+ (separator [a-z0-9]+)*, separator := [_.] | __ | -+
fn validate_path(path: &str) -> Result<(), String> {
    for comp in path.split('/') {
        if !path_component_ok(comp) {
            return Err(format!(
                "repository path component {comp:?} is malformed (lowercase letters, digits and single separators . _ __ -)"
            ));
        }
    }
    Ok(())
}

fn path_component_ok(comp: &str) -> bool {
    let b = comp.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: "." or "_" or "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";

    fn norm(s: &str) -> String {
        match Reference::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn normalises_like_kubelet() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(
            norm("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(norm("localhost/foo"), "localhost/foo:latest");
        assert_eq!(norm("localhost:5000/foo/bar:t"), "localhost:5000/foo/bar:t");
        assert_eq!(
            norm("127.0.0.1:5000/a/b/c:x_Y.z-1"),
            "127.0.0.1:5000/a/b/c:x_Y.z-1"
        );
        assert_eq!(norm("[::1]:5000/img"), "[::1]:5000/img:latest");
        assert_eq!(norm("[fe80::1]/img:1"), "[fe80::1]/img:1");
        assert_eq!(norm("Example.COM/img"), "Example.COM/img:latest");
        assert_eq!(
            norm("a.b-c.d/e__f/g.h/i--j"),
            "a.b-c.d/e__f/g.h/i--j:latest"
        );
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).expect("parse");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.repo_tag(), None);
        let r = Reference::parse(&format!("quay.io/a/b:v2@{D}")).expect("parse");
        assert_eq!(r.tag(), Some("v2"));
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.to_string(), format!("quay.io/a/b:v2@{D}"));
        assert_eq!(r.repo_digest("sha256:x"), "quay.io/a/b@sha256:x");
        let r = Reference::parse(&format!("localhost:5000/x@{D}")).expect("parse");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "x");
    }

    #[test]
    fn accessors() {
        let r = Reference::parse("busybox").expect("parse");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(
            r.repo_tag().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        // Round trip: the normalised form parses to itself.
        let again = Reference::parse(&r.to_string()).expect("reparse");
        assert_eq!(again, r);
    }

    #[test]
    fn rejects_malformed() {
        let long_tag = format!("busybox:{}", "a".repeat(129));
        let long_name = format!("x.io/{}", "a".repeat(260));
        let cases: Vec<(&str, &str)> = vec![
            ("", "empty"),
            (" busybox", "whitespace"),
            ("busybox ", "whitespace"),
            ("Busybox", "lowercase"),
            ("docker.io/Library/busybox", "lowercase"),
            ("busybox:", "tag"),
            ("busybox:-x", "tag"),
            ("busybox:.x", "tag"),
            ("busybox:a/b", "malformed"),
            ("busybox:a b", "tag"),
            (&long_tag, "tag"),
            ("busybox@sha256:abc", "hex"),
            ("busybox@sha256:", "hex"),
            (
                "busybox@sha512:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b9454f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
                "not supported",
            ),
            (
                "busybox@4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
                "algorithm",
            ),
            (
                "busybox@SHA256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
                "not supported",
            ),
            (
                "busybox@sha256:4F53CDA18C2BAA0C0354BB5F9A3ECBE5ED12AB4D8E11BA873C2F11161202B945",
                "lowercase hex",
            ),
            (
                "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
                "image ID",
            ),
            ("/busybox", "malformed"),
            ("busybox/", "malformed"),
            ("a//b", "malformed"),
            ("a/_b", "malformed"),
            ("a/b_", "malformed"),
            ("a/b___c", "malformed"),
            ("a/b..c", "malformed"),
            ("a/b._c", "malformed"),
            ("-x.io/a", "host"),
            ("x-.io/a", "host"),
            ("x..io/a", "host"),
            ("x.io:/a", "host"),
            ("x.io:5a/a", "host"),
            ("[::1/a", "host"),
            ("[]/a", "malformed"),
            ("[::1]x/a", "host"),
            ("x.io/", "malformed"),
            ("x.io/a@", "algorithm"),
            ("x.io/a:b@c@d", "algorithm"),
            ("busybox:latest:1", "malformed"),
            ("bu$ybox", "malformed"),
            (":tag", "empty"),
            (
                "@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
                "empty",
            ),
            (&long_name, "255"),
        ];
        for (input, why) in cases {
            match Reference::parse(input) {
                Ok(r) => panic!("{input:?} should be refused ({why}) but parsed as {r}"),
                Err(ImageError::InvalidReference { reference, reason }) => {
                    assert_eq!(reference, input);
                    assert!(
                        reason.contains(why),
                        "{input:?}: reason {reason:?} should mention {why:?}"
                    );
                }
                Err(e) => panic!("{input:?}: wrong error kind {e:?}"),
            }
        }
    }

    #[test]
    fn error_message_names_reference() {
        let e = Reference::parse("Bad/Name").expect_err("must fail");
        assert!(e.to_string().contains("\"Bad/Name\""), "{e}");
    }
}
