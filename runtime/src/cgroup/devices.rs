//! The device cgroup: which device nodes a container may read, write and
//! create, from the spec's `linux.resources.devices` rules, in order (a
//! later rule overrides an earlier one, as runc applies them).

use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;
use super::limits::write;

/// v1: each rule is a line written to `devices.allow` or `devices.deny`.
pub(super) fn apply_v1(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    for rule in rules {
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write(&dir.join(file), &v1_line(rule))?;
    }
    Ok(())
}

/// `type major:minor access`, `*` for any number, e.g. `c 136:* rwm`.
fn v1_line(rule: &LinuxDeviceCgroup) -> String {
    let number = |n: Option<i64>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
    let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::B => 'b',
        // A pipe needs no device access; `a` (and an unset type) is any.
        LinuxDeviceType::P | LinuxDeviceType::A => 'a',
    };
    let access = rule.access().as_deref().unwrap_or("rwm");
    format!(
        "{typ} {}:{} {access}",
        number(rule.major()),
        number(rule.minor())
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access)
            .build()
            .unwrap();
        rule.set_major(major).set_minor(None);
        rule
    }

    #[test]
    fn rules_become_v1_lines() {
        assert_eq!(
            v1_line(&rule(false, LinuxDeviceType::A, None, "rwm")),
            "a *:* rwm"
        );
        assert_eq!(
            v1_line(&rule(true, LinuxDeviceType::C, Some(136), "rwm")),
            "c 136:* rwm"
        );
        assert_eq!(
            v1_line(&rule(true, LinuxDeviceType::B, None, "m")),
            "b *:* m"
        );
    }

    #[test]
    fn rules_are_written_in_order_to_allow_or_deny() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["devices.allow", "devices.deny"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        apply_v1(
            dir.path(),
            &[
                rule(false, LinuxDeviceType::A, None, "rwm"),
                rule(true, LinuxDeviceType::U, Some(1), "rw"),
            ],
        )
        .unwrap();
        let read = |file| std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert_eq!(read("devices.deny"), "a *:* rwm");
        assert_eq!(read("devices.allow"), "c 1:* rw");
    }
}
