//! What a spec can only learn from this host, as containerd does: a
//! privileged container gets every char and block device of the host's
//! `/dev` (containerd's `WithDevices(HostDevices)`), which the init then
//! creates in the container's own `/dev`; and "every capability" (a
//! privileged container, CRI's `ALL`) means every one crid itself holds
//! (containerd's `cap.Current()`), as the kernel refuses to grant more.
//! Likewise no rlimit of the spec goes above crid's own hard limit, which
//! only CAP_SYS_RESOURCE could raise.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use oci_spec::runtime::{
    Capabilities, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceType, PosixRlimitBuilder, Spec,
};

use crate::container::ContainerError;
use crate::spec::{ContainerSpec, parse_capability, rlimit_resource};
use nix::sys::resource::getrlimit;

/// Fits the spec built for `container` to this host: see the module docs.
pub fn fit_to_host(spec: &mut Spec, container: &ContainerSpec) -> Result<(), ContainerError> {
    let all = container.privileged
        || container
            .add_capabilities
            .iter()
            .any(|name| name.eq_ignore_ascii_case("ALL"));
    if all {
        limit_capabilities_to_own(spec).map_err(|source| ContainerError::Io {
            what: "cannot read the capabilities of",
            path: "/proc/self".into(),
            source,
        })?;
    }
    limit_rlimits_to_own(spec).map_err(|source| ContainerError::Io {
        what: "cannot read the resource limits of",
        path: "/proc/self".into(),
        source,
    })?;
    if container.privileged {
        add_host_devices(spec).map_err(|source| ContainerError::Io {
            what: "cannot list the host devices in",
            path: "/dev".into(),
            source,
        })?;
    }
    Ok(())
}

/// Keeps, in every capability set of the spec, only what this process's
/// bounding set holds.
fn limit_capabilities_to_own(spec: &mut Spec) -> io::Result<()> {
    let held: HashSet<_> = caps::read(None, caps::CapSet::Bounding)
        .map_err(|e| io::Error::other(e.to_string()))?
        .iter()
        .filter_map(|cap| parse_capability(&cap.to_string()))
        .collect();
    let Some(mut process) = spec.process().clone() else {
        return Ok(());
    };
    let Some(mut sets) = process.capabilities().clone() else {
        return Ok(());
    };
    let keep = |set: &Option<Capabilities>| {
        set.as_ref().map(|set| {
            set.iter()
                .filter(|cap| held.contains(cap))
                .copied()
                .collect()
        })
    };
    let (bounding, effective, permitted, inheritable, ambient) = (
        keep(sets.bounding()),
        keep(sets.effective()),
        keep(sets.permitted()),
        keep(sets.inheritable()),
        keep(sets.ambient()),
    );
    sets.set_bounding(bounding)
        .set_effective(effective)
        .set_permitted(permitted)
        .set_inheritable(inheritable)
        .set_ambient(ambient);
    process.set_capabilities(Some(sets));
    spec.set_process(Some(process));
    Ok(())
}

/// Lowers each rlimit of the spec to at most this process's hard limit.
fn limit_rlimits_to_own(spec: &mut Spec) -> io::Result<()> {
    let Some(mut process) = spec.process().clone() else {
        return Ok(());
    };
    let Some(mut rlimits) = process.rlimits().clone() else {
        return Ok(());
    };
    for rlimit in &mut rlimits {
        let (_, own_hard) = getrlimit(rlimit_resource(rlimit.typ()))?;
        let hard = rlimit.hard().min(own_hard);
        *rlimit = PosixRlimitBuilder::default()
            .typ(rlimit.typ())
            .hard(hard)
            .soft(rlimit.soft().min(hard))
            .build()
            .map_err(io::Error::other)?;
    }
    process.set_rlimits(Some(rlimits));
    spec.set_process(Some(process));
    Ok(())
}

/// Directories of the host's `/dev` that hold no device of the host's own
/// (the container gets its own pts, shm and mqueue) or are another
/// runtime's.
const SKIPPED_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Adds every host device to `spec.linux.devices`, as containerd does for
/// a privileged container.
fn add_host_devices(spec: &mut Spec) -> io::Result<()> {
    let devices = host_devices(Path::new("/dev"))?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut all = linux.devices().clone().unwrap_or_default();
    all.extend(devices);
    linux.set_devices(Some(all));
    spec.set_linux(Some(linux));
    Ok(())
}

/// The char and block devices under `dir`. The host's console is left
/// out: a container's console is its own stdio.
fn host_devices(dir: &Path) -> io::Result<Vec<LinuxDevice>> {
    let mut devices = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        // Devices come and go (hotplug) while this walks: a vanished one
        // is simply not there.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let file_type = meta.file_type();
        if file_type.is_dir() {
            if !SKIPPED_DIRS.iter().any(|skipped| name == *skipped) {
                devices.extend(host_devices(&path)?);
            }
            continue;
        }
        let typ = if file_type.is_char_device() {
            LinuxDeviceType::C
        } else if file_type.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        if path == Path::new("/dev/console") {
            continue;
        }
        let rdev = meta.rdev();
        let device = LinuxDeviceBuilder::default()
            .path(path.clone())
            .typ(typ)
            .major(number(nix::sys::stat::major(rdev), &path)?)
            .minor(number(nix::sys::stat::minor(rdev), &path)?)
            .file_mode(meta.mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build()
            .map_err(|e| io::Error::other(format!("device {}: {e}", path.display())))?;
        devices.push(device);
    }
    Ok(devices)
}

fn number(n: u64, path: &Path) -> io::Result<i64> {
    i64::try_from(n)
        .map_err(|_| io::Error::other(format!("device {}: number {n} too large", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_null_device_is_found_and_pts_is_not_walked() {
        let devices = host_devices(Path::new("/dev")).expect("walking /dev");
        let null = devices
            .iter()
            .find(|d| d.path() == Path::new("/dev/null"))
            .expect("/dev/null among the host devices");
        assert_eq!(
            (null.typ(), null.major(), null.minor()),
            (LinuxDeviceType::C, 1, 3)
        );
        assert!(devices.iter().all(|d| !d.path().starts_with("/dev/pts")));
        assert!(
            devices
                .iter()
                .all(|d| d.path() != Path::new("/dev/console"))
        );
    }
}
