//! The layer unpacker on any tar stream, applied to a fresh directory as a
//! pull applies a layer: it never panics, and nothing it does reaches past
//! that directory. Beside it sits a canary file; after every input the
//! canary and the directory holding both are as they were, with nothing
//! new beside them. And what the layer holds is refused as unsafe or bad,
//! never failed as an internal I/O error.
#![no_main]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const CANARY: &str = "canary";
const CANARY_TEXT: &[u8] = b"a layer must never change this\n";
const LAYER: &str = "layer";

/// The owner and mode of a path: what an escaping chown or chmod changes.
fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{} is gone: {error}", path.display()));
    (meta.uid(), meta.gid(), meta.mode())
}

/// A file's owner, mode, inode, size and mtime: what an escaping chown,
/// chmod, write or replacement changes.
fn file_state(path: &Path) -> ((u32, u32, u32), u64, u64, i64, i64) {
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{} is gone: {error}", path.display()));
    (
        owner_and_mode(path),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

struct Base {
    dir: tempfile::TempDir,
    canary: ((u32, u32, u32), u64, u64, i64, i64),
    dir_itself: (u32, u32, u32),
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let canary = dir.path().join(CANARY);
        std::fs::write(&canary, CANARY_TEXT).expect("writing the canary");
        Base {
            canary: file_state(&canary),
            dir_itself: owner_and_mode(dir.path()),
            dir,
        }
    })
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("listing the base directory")
        .map(|entry| {
            entry
                .expect("reading the base directory")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fuzz_target!(|input: &[u8]| {
    let base = base();
    let dest: PathBuf = base.dir.path().join(LAYER);
    std::fs::create_dir(&dest).expect("creating the layer directory");
    let outcome = image::unpack_layer(input, &dest);

    // "writing ..." is an I/O error of the unpacker, which fails a pull as
    // INTERNAL: what a layer holds must be refused naming the entry instead.
    if let Err(message) = &outcome {
        assert!(
            !message.starts_with("writing "),
            "a layer's content failed as an internal error: {message}"
        );
    }

    let canary = base.dir.path().join(CANARY);
    let escaped = |what: &str| format!("{what} after a layer that gave {outcome:?}");
    assert_eq!(
        names_in(base.dir.path()),
        [CANARY, LAYER],
        "{}",
        escaped("new files beside the layer")
    );
    assert_eq!(
        file_state(&canary),
        base.canary,
        "{}",
        escaped("canary changed")
    );
    assert_eq!(
        std::fs::read(&canary).expect("reading the canary"),
        CANARY_TEXT,
        "{}",
        escaped("canary rewritten")
    );
    assert_eq!(
        owner_and_mode(base.dir.path()),
        base.dir_itself,
        "{}",
        escaped("base directory changed")
    );
    std::fs::remove_dir_all(&dest).expect("removing the layer directory");
});
