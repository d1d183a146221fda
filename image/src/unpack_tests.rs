//! Unpacker tests. They need root (ownership, device nodes, trusted.*
//! xattrs) and run the real layer path: unpack into tmp/, verify, rename
//! into layers/ or remove everything.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::digest::sha256_digest;
use crate::error::ImageError;
use crate::store::apply_layer_for_test;

const MTIME: u64 = 1_600_000_000;

/// Builds tar archives with raw names, so hostile ones can be written too.
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

struct E<'a> {
    name: &'a [u8],
    kind: EntryType,
    link: Option<&'a [u8]>,
    mode: u32,
    uid: u64,
    gid: u64,
    data: &'a [u8],
    dev: Option<(u32, u32)>,
    xattrs: &'a [(&'a str, &'a [u8])],
}

impl Default for E<'_> {
    fn default() -> Self {
        E {
            name: b"",
            kind: EntryType::Regular,
            link: None,
            mode: 0o644,
            uid: 0,
            gid: 0,
            data: b"",
            dev: None,
            xattrs: &[],
        }
    }
}

impl Tar {
    fn new() -> Tar {
        Tar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn add(&mut self, e: E<'_>) -> &mut Self {
        if !e.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = e
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                .collect();
            self.b
                .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
                .expect("pax");
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(MTIME);
        assert!(e.name.len() <= 100);
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        if let Some(l) = e.link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        if let Some((ma, mi)) = e.dev {
            h.set_device_major(ma).expect("major");
            h.set_device_minor(mi).expect("minor");
        }
        h.set_cksum();
        self.b.append(&h, e.data).expect("append");
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.add(E {
            name: name.as_bytes(),
            data,
            ..E::default()
        })
    }

    fn dir(&mut self, name: &str) -> &mut Self {
        self.add(E {
            name: name.as_bytes(),
            kind: EntryType::Directory,
            mode: 0o755,
            ..E::default()
        })
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(E {
            name: name.as_bytes(),
            kind: EntryType::Symlink,
            link: Some(target.as_bytes()),
            mode: 0o777,
            ..E::default()
        })
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.add(E {
            name: name.as_bytes(),
            kind: EntryType::Link,
            link: Some(target.as_bytes()),
            ..E::default()
        })
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish")
    }
}

/// A scratch area: `store/` is the store root, `outside/` must never change.
struct Scratch {
    _t: tempfile::TempDir,
    store: PathBuf,
    outside: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        assert!(
            rustix::process::geteuid().is_root(),
            "the unpack tests need root (ownership, device nodes, trusted.* xattrs); CI runs as root"
        );
        let t = tempfile::tempdir().expect("tempdir");
        let store = t.path().join("store");
        let outside = t.path().join("outside");
        fs::create_dir_all(&store).expect("mkdir");
        fs::create_dir_all(outside.join("etc")).expect("mkdir");
        fs::write(outside.join("victim"), b"original").expect("write");
        fs::write(outside.join("etc/passwd"), b"root:x:0:0").expect("write");
        Scratch {
            store,
            outside,
            _t: t,
        }
    }

    /// Every path under outside/ with its type, size and content.
    fn outside_snapshot(&self) -> BTreeMap<PathBuf, (u32, u64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.outside.clone()];
        while let Some(p) = stack.pop() {
            let md = fs::symlink_metadata(&p).expect("stat");
            let content = if md.is_file() {
                fs::read(&p).expect("read")
            } else {
                Vec::new()
            };
            out.insert(p.clone(), (md.mode(), md.nlink(), content));
            if md.is_dir() {
                for e in fs::read_dir(&p).expect("readdir") {
                    stack.push(e.expect("entry").path());
                }
            }
        }
        out
    }

    fn apply(&self, tar: &[u8]) -> Result<PathBuf, ImageError> {
        let d = sha256_digest(tar);
        apply_layer_for_test(&self.store, tar, &d, &d)
    }

    /// Asserts the store holds no layer, no blob and no temp file.
    fn assert_store_empty(&self) {
        for sub in ["tmp", "layers", "blobs/sha256"] {
            let p = self.store.join(sub);
            let n = fs::read_dir(&p).map(|r| r.count()).unwrap_or(0);
            assert_eq!(n, 0, "{} should be empty", p.display());
        }
    }
}

fn is_whiteout(p: &Path) -> bool {
    let md = fs::symlink_metadata(p).expect("stat whiteout");
    md.file_type().is_char_device() && md.rdev() == 0
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(p, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

#[test]
fn unpacks_every_entry_type_with_metadata() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.dir("bin/")
        .add(E {
            name: b"bin/busybox",
            data: b"\x7fELF-ish",
            mode: 0o4755,
            uid: 1234,
            gid: 5678,
            xattrs: &[("user.test", b"hello"), ("trusted.overlay.redirect", b"/x")],
            ..E::default()
        })
        .symlink("bin/sh", "/bin/busybox")
        .symlink("var-run", "/run")
        .hardlink("bin/ls", "bin/busybox")
        .add(E {
            name: b"dev/null",
            kind: EntryType::Char,
            mode: 0o666,
            dev: Some((1, 3)),
            ..E::default()
        })
        .add(E {
            name: b"dev/loop9",
            kind: EntryType::Block,
            mode: 0o660,
            gid: 6,
            dev: Some((7, 9)),
            ..E::default()
        })
        .add(E {
            name: b"run/fifo",
            kind: EntryType::Fifo,
            mode: 0o600,
            ..E::default()
        })
        .add(E {
            name: b"./etc/",
            kind: EntryType::Directory,
            mode: 0o700,
            uid: 7,
            gid: 8,
            ..E::default()
        })
        .file("etc/hostname", b"box\n");
    let tar = t.finish();
    let dir = s.apply(&tar).expect("unpack");
    assert!(dir.is_dir());

    let bb = fs::symlink_metadata(dir.join("bin/busybox")).expect("busybox");
    assert!(bb.is_file());
    assert_eq!(bb.mode() & 0o7777, 0o4755, "setuid bit kept after chown");
    assert_eq!((bb.uid(), bb.gid()), (1234, 5678));
    assert_eq!(bb.mtime() as u64, MTIME);
    assert_eq!(bb.nlink(), 2, "hard link shares the inode");
    assert_eq!(fs::read(dir.join("bin/ls")).expect("ls"), b"\x7fELF-ish");
    assert_eq!(
        xattr(&dir.join("bin/busybox"), "user.test").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        xattr(&dir.join("bin/busybox"), "trusted.overlay.redirect"),
        None,
        "overlay xattrs from a layer are dropped"
    );

    let sh = fs::symlink_metadata(dir.join("bin/sh")).expect("sh");
    assert!(sh.file_type().is_symlink());
    assert_eq!(
        fs::read_link(dir.join("bin/sh")).expect("readlink"),
        Path::new("/bin/busybox")
    );
    assert_eq!(sh.mtime() as u64, MTIME);

    let null = fs::symlink_metadata(dir.join("dev/null")).expect("null");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666, "umask not applied");
    let lp = fs::symlink_metadata(dir.join("dev/loop9")).expect("loop");
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), rustix::fs::makedev(7, 9));
    assert_eq!(lp.gid(), 6);
    assert!(
        fs::symlink_metadata(dir.join("run/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    // Parents missing from the archive are made 0755.
    assert_eq!(
        fs::metadata(dir.join("dev")).expect("dev").mode() & 0o7777,
        0o755
    );

    let etc = fs::metadata(dir.join("etc")).expect("etc");
    assert_eq!(etc.mode() & 0o7777, 0o700);
    assert_eq!((etc.uid(), etc.gid()), (7, 8));
    assert_eq!(
        etc.mtime() as u64,
        MTIME,
        "dir mtime set after its children"
    );
    assert_eq!(
        fs::read(dir.join("etc/hostname")).expect("hostname"),
        b"box\n"
    );

    // The blob went into the store under its digest; nothing left in tmp.
    let blob = s.store.join("blobs/sha256").join(&sha256_digest(&tar)[7..]);
    assert_eq!(fs::read(blob).expect("blob"), tar);
    assert_eq!(fs::read_dir(s.store.join("tmp")).expect("tmp").count(), 0);
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.dir("etc/")
        .file("etc/.wh.motd", b"")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"n")
        .file("opq-implicit/.wh..wh..opq", b"")
        .file(".wh.toplevel", b"")
        .file(".wh..wh.plnk/123", b"")
        .file("replaced", b"x")
        .file(".wh.replaced", b"");
    let dir = s.apply(&t.finish()).expect("unpack");
    assert!(is_whiteout(&dir.join("etc/motd")));
    assert!(is_whiteout(&dir.join("toplevel")));
    assert!(
        is_whiteout(&dir.join("replaced")),
        "a whiteout replaces an earlier entry"
    );
    assert!(!dir.join("etc/.wh.motd").exists());
    assert_eq!(
        xattr(&dir.join("var/cache"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(fs::read(dir.join("var/cache/new")).expect("new"), b"n");
    assert_eq!(
        xattr(&dir.join("opq-implicit"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(
        !dir.join(".wh..wh.plnk").exists(),
        "aufs metadata is skipped"
    );
    assert_eq!(xattr(&dir.join("etc"), "trusted.overlay.opaque"), None);
}

#[test]
fn later_entries_replace_earlier_ones() {
    let s = Scratch::new();
    let mut t = Tar::new();
    t.file("a", b"file")
        .dir("a/")
        .file("a/inner", b"i")
        .dir("b/")
        .file("b/x", b"x")
        .file("b", b"now a file")
        .dir("c/")
        .add(E {
            name: b"c/",
            kind: EntryType::Directory,
            mode: 0o711,
            ..E::default()
        })
        .file("f", b"one")
        .file("f", b"two");
    let dir = s.apply(&t.finish()).expect("unpack");
    assert_eq!(fs::read(dir.join("a/inner")).expect("a/inner"), b"i");
    assert_eq!(fs::read(dir.join("b")).expect("b"), b"now a file");
    assert_eq!(
        fs::metadata(dir.join("c")).expect("c").permissions().mode() & 0o7777,
        0o711
    );
    assert_eq!(fs::read(dir.join("f")).expect("f"), b"two");
}

#[test]
fn replacing_a_symlink_never_writes_through_it() {
    // A file entry over a symlink that points outside replaces the symlink.
    let s = Scratch::new();
    let before = s.outside_snapshot();
    let victim = s.outside.join("victim");
    let mut t = Tar::new();
    t.symlink("f", victim.to_str().expect("utf8"))
        .file("f", b"pwned")
        .symlink("g", "../../outside/victim")
        .file("g", b"pwned");
    let dir = s.apply(&t.finish()).expect("unpack");
    assert_eq!(fs::read(dir.join("f")).expect("f"), b"pwned");
    assert!(fs::symlink_metadata(dir.join("g")).expect("g").is_file());
    assert_eq!(s.outside_snapshot(), before, "nothing outside changed");
}

/// Every hostile archive must fail as UnsafeLayer, change nothing outside
/// and leave nothing in the store.
#[test]
fn hostile_layers_are_refused_and_leave_nothing() {
    let probe = Scratch::new();
    let out_abs = probe.outside.to_str().expect("utf8").to_string();
    drop(probe);
    type Build = Box<dyn Fn(&str) -> Vec<u8>>;
    let cases: Vec<(&str, Build)> = vec![
        (
            "dotdot file",
            Box::new(|_| {
                let mut t = Tar::new();
                t.file("ok", b"1").file("../outside/victim", b"pwned");
                t.finish()
            }),
        ),
        (
            "dotdot deep",
            Box::new(|_| {
                let mut t = Tar::new();
                t.dir("a/").file("a/../../outside/new", b"pwned");
                t.finish()
            }),
        ),
        (
            "dotdot dir",
            Box::new(|_| {
                let mut t = Tar::new();
                t.dir("../../outside/newdir/");
                t.finish()
            }),
        ),
        (
            "absolute file",
            Box::new(|o| {
                let mut t = Tar::new();
                t.file(&format!("{o}/victim"), b"pwned");
                t.finish()
            }),
        ),
        (
            "absolute root-relative",
            Box::new(|_| {
                let mut t = Tar::new();
                t.file("/etc/crid-unpack-test-must-not-exist", b"pwned");
                t.finish()
            }),
        ),
        (
            "symlink to absolute outside, then write through",
            Box::new(|o| {
                let mut t = Tar::new();
                t.symlink("link", o).file("link/victim", b"pwned");
                t.finish()
            }),
        ),
        (
            "symlink relative out, then write through",
            Box::new(|_| {
                let mut t = Tar::new();
                t.symlink("link", "../../../outside")
                    .file("link/new", b"pwned");
                t.finish()
            }),
        ),
        (
            "symlinked parent deep",
            Box::new(|o| {
                let mut t = Tar::new();
                t.dir("d/")
                    .symlink("d/sub", o)
                    .file("d/sub/etc/passwd", b"pwned");
                t.finish()
            }),
        ),
        (
            "mkdir through symlink",
            Box::new(|o| {
                let mut t = Tar::new();
                t.symlink("link", o).dir("link/newdir/");
                t.finish()
            }),
        ),
        (
            "device through symlink",
            Box::new(|o| {
                let mut t = Tar::new();
                t.symlink("link", o).add(E {
                    name: b"link/null",
                    kind: EntryType::Char,
                    dev: Some((1, 3)),
                    ..E::default()
                });
                t.finish()
            }),
        ),
        (
            "symlink through symlink",
            Box::new(|o| {
                let mut t = Tar::new();
                t.symlink("link", o).symlink("link/evil", "/");
                t.finish()
            }),
        ),
        (
            "whiteout through symlink",
            Box::new(|o| {
                let mut t = Tar::new();
                t.symlink("link", o).file("link/.wh.victim", b"");
                t.finish()
            }),
        ),
        (
            "opaque through symlink",
            Box::new(|o| {
                let mut t = Tar::new();
                t.symlink("link", o).file("link/.wh..wh..opq", b"");
                t.finish()
            }),
        ),
        (
            "whiteout of dotdot",
            Box::new(|_| {
                let mut t = Tar::new();
                t.file(".wh...", b"");
                t.finish()
            }),
        ),
        (
            "hardlink dotdot",
            Box::new(|_| {
                let mut t = Tar::new();
                t.hardlink("h", "../outside/victim");
                t.finish()
            }),
        ),
        (
            "hardlink absolute",
            Box::new(|o| {
                let mut t = Tar::new();
                let target = format!("{o}/etc/passwd");
                t.hardlink("h", &target);
                t.finish()
            }),
        ),
        (
            "hardlink through symlink",
            Box::new(|o| {
                let mut t = Tar::new();
                t.symlink("link", o).hardlink("h", "link/etc/passwd");
                t.finish()
            }),
        ),
        (
            "hardlink into symlinked dir",
            Box::new(|o| {
                let mut t = Tar::new();
                t.file("ok", b"1")
                    .symlink("link", o)
                    .hardlink("link/victim2", "ok");
                t.finish()
            }),
        ),
    ];
    for (what, build) in cases {
        let s = Scratch::new();
        let o = s.outside.to_str().expect("utf8").to_string();
        assert_ne!(o, out_abs, "each case has its own outside dir");
        let before = s.outside_snapshot();
        let tar = build(&o);
        match s.apply(&tar) {
            Err(e @ ImageError::UnsafeLayer { .. }) => {
                eprintln!("{what}: {e}");
                let ImageError::UnsafeLayer {
                    layer,
                    path,
                    reason,
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(layer, sha256_digest(&tar), "{what}: names the layer");
                assert!(!path.is_empty() && !reason.is_empty(), "{what}");
            }
            Err(e) => panic!("{what}: expected UnsafeLayer, got {e}"),
            Ok(d) => panic!("{what}: hostile layer was accepted into {}", d.display()),
        }
        assert_eq!(
            s.outside_snapshot(),
            before,
            "{what}: something outside changed"
        );
        s.assert_store_empty();
        assert!(!Path::new("/etc/crid-unpack-test-must-not-exist").exists());
    }
}

#[test]
fn bad_entries_fail_cleanly() {
    // Not hostile, but broken: a hard link to nothing, to a directory, a file
    // used as a directory.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("missing hardlink target", {
            let mut t = Tar::new();
            t.hardlink("h", "nope");
            t.finish()
        }),
        ("hardlink to dir", {
            let mut t = Tar::new();
            t.dir("d/").hardlink("h", "d");
            t.finish()
        }),
        ("file as parent", {
            let mut t = Tar::new();
            t.file("f", b"x").file("f/g", b"y");
            t.finish()
        }),
        // Found by fuzzing (fuzz/regressions/layer/): both failed the pull
        // as an internal I/O error, ENOENT and EINVAL.
        ("hardlink target in a missing directory", {
            let mut t = Tar::new();
            t.dir("etc/").hardlink("etc/hosts", "nodir/hostname");
            t.finish()
        }),
        ("malformed security.capability", {
            let mut t = Tar::new();
            t.add(E {
                name: b"f",
                xattrs: &[("security.capability", b"\x01\x00\x00\x02")],
                ..E::default()
            });
            t.finish()
        }),
        // Found by fuzzing: symlinkat refuses an empty target with ENOENT,
        // which failed the pull as an internal I/O error.
        ("symlink with an empty PAX linkpath", {
            let mut t = Tar::new();
            t.b.append_pax_extensions([("linkpath", &b""[..])])
                .expect("pax");
            t.symlink("etc", "x");
            t.finish()
        }),
    ];
    for (what, tar) in cases {
        let s = Scratch::new();
        match s.apply(&tar) {
            Err(ImageError::BadImage { reason, .. }) => {
                assert!(reason.contains(&sha256_digest(&tar)), "{what}: {reason}");
            }
            other => panic!("{what}: expected BadImage, got {other:?}"),
        }
        s.assert_store_empty();
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn compressed_layers_and_digest_checks() {
    let mut t = Tar::new();
    t.file("hello", b"world");
    let tar = t.finish();
    let diff_id = sha256_digest(&tar);

    for (what, blob) in [
        ("gzip", gzip(&tar)),
        ("zstd", zstd::encode_all(&tar[..], 3).expect("zstd")),
        ("plain", tar.clone()),
    ] {
        let s = Scratch::new();
        let dir = apply_layer_for_test(&s.store, &blob, &sha256_digest(&blob), &diff_id)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            fs::read(dir.join("hello")).expect("hello"),
            b"world",
            "{what}"
        );
    }

    // Wrong compressed digest: refused, nothing kept.
    let s = Scratch::new();
    let blob = gzip(&tar);
    let wrong = sha256_digest(b"something else");
    match apply_layer_for_test(&s.store, &blob, &wrong, &diff_id) {
        Err(ImageError::DigestMismatch { expected, what, .. }) => {
            assert_eq!(expected, wrong);
            assert!(what.contains(&wrong), "{what}");
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    s.assert_store_empty();

    // Right blob digest but a config diff id that does not match.
    let s = Scratch::new();
    let wrong_diff = sha256_digest(b"not the tar");
    match apply_layer_for_test(&s.store, &blob, &sha256_digest(&blob), &wrong_diff) {
        Err(ImageError::DigestMismatch { expected, what, .. }) => {
            assert_eq!(expected, wrong_diff);
            assert!(what.contains("diff id"), "{what}");
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    s.assert_store_empty();

    // A corrupted gzip stream (bytes flipped in the middle) is reported as a
    // digest mismatch (the root cause), not as a decompression error.
    let s = Scratch::new();
    let mut bad = gzip(&tar);
    let good_digest = sha256_digest(&bad);
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    bad[mid + 1] ^= 0xff;
    match apply_layer_for_test(&s.store, &bad, &good_digest, &diff_id) {
        Err(ImageError::DigestMismatch { .. }) => {}
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    s.assert_store_empty();
}
