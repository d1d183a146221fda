//! What a container's writable layer (its overlay upper dir) holds: a walk
//! of it, which the collector repeats only every `layer_refresh`.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerUsage {
    /// Bytes of disk the layer's files take (allocated blocks, as `du`).
    pub used_bytes: u64,
    /// Inodes in the layer, the upper dir itself included.
    pub inodes_used: u64,
    /// Free inodes on the filesystem holding it.
    pub fs_inodes_free: u64,
    /// All inodes of that filesystem.
    pub fs_inodes_total: u64,
    /// That filesystem's size in bytes: what the layer could grow to.
    pub fs_limit_bytes: u64,
}

/// Walks `dir` (blocking): files hard-linked within it count once, other
/// filesystems mounted below it are not entered.
pub fn usage(dir: &Path) -> io::Result<LayerUsage> {
    let top = fs::symlink_metadata(dir)?;
    let mut usage = LayerUsage::default();
    let mut linked = HashSet::new();
    let mut pending = vec![dir.to_owned()];
    count(&top, &mut usage, &mut linked);
    while let Some(current) = pending.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            // Removed while walked (the container writes on): not there.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.dev() != top.dev() {
                continue;
            }
            count(&metadata, &mut usage, &mut linked);
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    let fs = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
    usage.fs_inodes_free = fs.files_available();
    usage.fs_inodes_total = fs.files();
    usage.fs_limit_bytes = fs.blocks().saturating_mul(fs.fragment_size());
    Ok(usage)
}

fn count(metadata: &fs::Metadata, usage: &mut LayerUsage, linked: &mut HashSet<u64>) {
    if metadata.nlink() > 1 && !metadata.is_dir() && !linked.insert(metadata.ino()) {
        return;
    }
    usage.inodes_used += 1;
    usage.used_bytes += metadata.blocks() * 512;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_dirs_and_hard_links_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("sub")).expect("mkdir");
        fs::write(dir.path().join("sub/data"), vec![7u8; 64 * 1024]).expect("write");
        fs::hard_link(dir.path().join("sub/data"), dir.path().join("link")).expect("link");
        std::os::unix::fs::symlink("sub/data", dir.path().join("symlink")).expect("symlink");
        let usage = usage(dir.path()).expect("usage");
        // The dir, sub, data (once for both names) and the symlink.
        assert_eq!(usage.inodes_used, 4);
        assert!(usage.used_bytes >= 64 * 1024, "{usage:?}");
        assert!(usage.fs_inodes_free > 0, "{usage:?}");
        assert!(usage.fs_inodes_total >= usage.fs_inodes_free, "{usage:?}");
        assert!(usage.fs_limit_bytes >= usage.used_bytes, "{usage:?}");
        assert!(super::usage(&dir.path().join("missing")).is_err());
    }
}
