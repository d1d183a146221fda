//! A container's dirs, for real, as root: `ContainerDirs::remove` takes
//! down the overlay rootfs, the image volumes and anything stacked on them
//! (it unmounts by path, not from the mount table) before it deletes.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use runtime::container::ContainerDirs;

fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    runtime::mountinfo::mounts()
        .into_iter()
        .map(|mount| mount.mount_point)
        .filter(|point| point.starts_with(dir))
        .collect()
}

fn layer(root: &Path, name: &str, file: &str) -> PathBuf {
    let dir = root.join("layers").join(name);
    fs::create_dir_all(&dir).expect("layer dir");
    fs::write(dir.join(file), name).expect("layer file");
    dir
}

#[test]
fn remove_unmounts_rootfs_volumes_and_stacked_mounts_then_deletes() {
    let temp = tempfile::tempdir().expect("temp dir");
    let root = temp.path();
    let layers = [layer(root, "bottom", "a"), layer(root, "top", "b")];
    let dirs = ContainerDirs::new(&root.join("state"), &root.join("root"), "c1");

    dirs.mount_rootfs(&layers, None).expect("mount rootfs");
    assert_eq!(
        fs::read_to_string(dirs.rootfs.join("b")).expect("top layer seen"),
        "top"
    );
    let volume = dirs
        .mount_image_volume(0, &layers[..1], Path::new(""), None)
        .expect("mount image volume");
    assert!(volume.join("a").exists());
    // A second mount stacked on the rootfs: remove must peel both.
    mount(
        Some("tmpfs"),
        &dirs.rootfs,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("stack a tmpfs on the rootfs");
    // What the layers hold must survive: a delete through a mount would
    // reach them.
    assert_eq!(mounted_under(root).len(), 3, "{:?}", mounted_under(root));

    dirs.remove().expect("remove");
    assert_eq!(mounted_under(root), Vec::<PathBuf>::new());
    assert!(!dirs.bundle.exists() && !dirs.layer.exists());
    assert!(layers[0].join("a").exists() && layers[1].join("b").exists());

    // Idempotent: a second remove finds nothing and succeeds.
    dirs.remove().expect("remove again");
}
