//! `/proc/self/mountinfo`, read by crid (what it mounted, and how a host
//! path's mount propagates) and by crid-monitor (the rootfs's parent mount).

use std::path::{Path, PathBuf};

/// One mount as mountinfo lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// The optional fields: `shared:N`, `master:N`, `propagate_from:N`,
    /// `unbindable`.
    pub optional: Vec<String>,
}

impl Mount {
    pub fn is_shared(&self) -> bool {
        self.optional
            .iter()
            .any(|field| field.starts_with("shared:"))
    }

    /// A slave receives what its master's peers mount.
    pub fn is_slave(&self) -> bool {
        self.optional
            .iter()
            .any(|field| field.starts_with("master:"))
    }
}

/// The mounts of this process's mount namespace (none if it cannot be read).
pub fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|table| parse(&table))
        .unwrap_or_default()
}

/// The lines of a mountinfo table.
pub fn parse(table: &str) -> Vec<Mount> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = PathBuf::from(unescape(fields.get(4)?));
            let end = fields.iter().position(|field| *field == "-")?;
            let optional = fields
                .get(6..end)?
                .iter()
                .map(|field| (*field).to_owned())
                .collect();
            Some(Mount {
                mount_point,
                optional,
            })
        })
        .collect()
}

/// The mount that holds `path` (the deepest mount point above it; the last
/// one mounted there when several are).
pub fn holding<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|mount| path.starts_with(&mount.mount_point))
        .max_by_key(|mount| mount.mount_point.components().count())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/plain\"), r"/plain\");
    }

    #[test]
    fn propagation_and_the_holding_mount_are_read() {
        let table = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                     40 27 0:50 / /srv/a\\040b rw shared:7 - tmpfs tmpfs rw\n\
                     41 40 0:51 / /srv/a\\040b/in rw master:7 - tmpfs tmpfs rw\n";
        let mounts = parse(table);
        assert_eq!(mounts.len(), 3);
        let held = |path: &str| holding(&mounts, Path::new(path)).expect("held");
        assert!(!held("/etc").is_shared() && !held("/etc").is_slave());
        assert!(held("/srv/a b/x").is_shared());
        assert_eq!(held("/srv/a b/x").mount_point, Path::new("/srv/a b"));
        assert!(held("/srv/a b/in/y").is_slave());
        // A path merely sharing a prefix of a mount point is not below it.
        assert!(!held("/srv/a bc").is_shared());
    }
}
