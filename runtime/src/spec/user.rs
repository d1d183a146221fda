//! Resolving the container's user against the image's `/etc/passwd` and
//! `/etc/group`.
//!
//! The rootfs is an untrusted image, so both files are opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to a
//! directory fd of the rootfs: symlinks inside the image are followed as the
//! container itself would see them (an absolute link `/etc/passwd ->
//! /usr/lib/passwd` means `<rootfs>/usr/lib/passwd`), and no link (absolute,
//! or `../../..`) can lead out of the rootfs. A link that points "outside"
//! therefore resolves to a path inside the rootfs, which usually does not
//! exist: the file is then treated as absent, exactly as if the image had no
//! `/etc/passwd` (numeric users still work, names fail with
//! [`SpecError::UnknownUser`]). Absent is the right answer rather than an
//! error because it is what the container sees too.
//!
//! Where `openat2` is unavailable (kernels before 5.6, or a seccomp filter
//! returning ENOSYS/EPERM) each component is opened with `O_NOFOLLOW`, so any
//! symlink on the way makes the file absent.
//!
//! Only regular files are read (not FIFOs or devices), opened non-blocking,
//! and at most [`MAX_DB_BYTES`] of each.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use super::{ContainerSpec, SpecError, SupplementalGroupsPolicy};

/// The most of `/etc/passwd` or `/etc/group` that is read.
pub const MAX_DB_BYTES: u64 = 8 << 20;

/// The user the container's process runs as, resolved against the image.
///
/// `additional_gids` is sorted, without duplicates, and contains `gid`
/// (as containerd does since CVE-2023-25173). It is what ContainerStatus
/// reports as the user's supplemental groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The passwd entry's name, when the user has one.
    pub username: Option<String>,
    /// The passwd entry's home directory, when the user has one (for `HOME`).
    pub home: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The user part of a user string: a uid or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UserRef {
    Id(u32),
    Name(String),
}

/// The group part of a user string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GroupRef {
    Id(u32),
    Name(String),
}

/// Resolve the user of `container` (its `run_as_*` fields, else the image's
/// `User` string) against `rootfs`'s `/etc/passwd` and `/etc/group`.
///
/// Precedence is containerd's: `run_as_user` over `run_as_username` over the
/// image user; `run_as_group` overrides the group of whichever user was
/// chosen, and needs `run_as_user` or `run_as_username` (as kubelet
/// validates). An empty user means root.
pub fn resolve_user(
    container: &ContainerSpec,
    image_user: &str,
    rootfs: &Path,
) -> Result<ResolvedUser, SpecError> {
    let (user, mut group) = if let Some(uid) = container.run_as_user {
        (UserRef::Id(id_from_i64("run_as_user", uid)?), None)
    } else if let Some(name) = container
        .run_as_username
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        (parse_user_part("run_as_username", name)?, None)
    } else {
        if let Some(gid) = container.run_as_group {
            return Err(SpecError::Invalid {
                field: "run_as_group",
                value: gid.to_string(),
                reason: "needs run_as_user or run_as_username".into(),
            });
        }
        parse_user_string("image user", image_user)?
    };
    if let Some(gid) = container.run_as_group {
        group = Some(GroupRef::Id(id_from_i64("run_as_group", gid)?));
    }
    let mut requested = Vec::with_capacity(container.supplemental_groups.len());
    for &g in &container.supplemental_groups {
        requested.push(id_from_i64("supplemental_groups", g)?);
    }

    let passwd = read_db(rootfs, "passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let groups = read_db(rootfs, "group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default();
    resolve(
        &user,
        group.as_ref(),
        &requested,
        container.supplemental_groups_policy,
        &passwd,
        &groups,
    )
}

fn resolve(
    user: &UserRef,
    group: Option<&GroupRef>,
    requested: &[u32],
    policy: SupplementalGroupsPolicy,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<ResolvedUser, SpecError> {
    let entry = match user {
        UserRef::Name(name) => Some(
            passwd
                .iter()
                .find(|e| &e.name == name)
                .ok_or_else(|| SpecError::UnknownUser(name.clone()))?,
        ),
        // A numeric uid need not be in /etc/passwd (runc: gid 0 then).
        UserRef::Id(uid) => passwd.iter().find(|e| e.uid == *uid),
    };
    let uid = match user {
        UserRef::Id(uid) => *uid,
        UserRef::Name(_) => entry.map_or(0, |e| e.uid),
    };
    let gid = match group {
        Some(GroupRef::Id(gid)) => *gid,
        Some(GroupRef::Name(name)) => {
            groups
                .iter()
                .find(|g| &g.name == name)
                .ok_or_else(|| SpecError::UnknownGroup(name.clone()))?
                .gid
        }
        None => entry.map_or(0, |e| e.gid),
    };
    let mut additional = vec![gid];
    additional.extend_from_slice(requested);
    if policy == SupplementalGroupsPolicy::Merge
        && let Some(e) = entry
    {
        additional.extend(
            groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == &e.name))
                .map(|g| g.gid),
        );
    }
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        username: entry.map(|e| e.name.clone()),
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
    })
}

fn id_from_i64(field: &'static str, v: i64) -> Result<u32, SpecError> {
    // u32::MAX is (uid_t)-1, "no change" to the kernel: never a real id.
    u32::try_from(v)
        .ok()
        .filter(|&id| id != u32::MAX)
        .ok_or_else(|| SpecError::Invalid {
            field,
            value: v.to_string(),
            reason: "not a valid id (0 to 4294967294)".into(),
        })
}

fn parse_user_part(field: &'static str, s: &str) -> Result<UserRef, SpecError> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let id = s.parse::<i64>().map_err(|_| SpecError::Invalid {
            field,
            value: s.into(),
            reason: "uid out of range".into(),
        })?;
        return Ok(UserRef::Id(id_from_i64(field, id)?));
    }
    Ok(UserRef::Name(s.to_owned()))
}

/// Parse `""`, `uid`, `name`, `uid:gid`, `name:group`, `uid:group`, ….
fn parse_user_string(
    field: &'static str,
    s: &str,
) -> Result<(UserRef, Option<GroupRef>), SpecError> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let user = if u.is_empty() {
        UserRef::Id(0)
    } else {
        parse_user_part(field, u)?
    };
    let group = match g {
        None | Some("") => None,
        Some(g) => Some(match parse_user_part(field, g)? {
            UserRef::Id(id) => GroupRef::Id(id),
            UserRef::Name(n) => GroupRef::Name(n),
        }),
    };
    Ok((user, group))
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).map(|s| (*s).to_owned()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Read `<rootfs>/etc/<name>` confined to the rootfs; `None` when absent,
/// not reachable without leaving the rootfs, or not a regular file.
fn read_db(rootfs: &Path, name: &str) -> Result<Option<String>, SpecError> {
    let io_err = |e: std::io::Error| SpecError::Io {
        path: rootfs.join("etc").join(name).display().to_string(),
        source: e,
    };
    let root = File::open(rootfs).map_err(|e| SpecError::Io {
        path: rootfs.display().to_string(),
        source: e,
    })?;
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = format!("etc/{name}");
    let fd = match openat2(&root, rel.as_str(), how) {
        Ok(fd) => Ok(fd),
        Err(Errno::ENOSYS | Errno::EPERM) => open_nofollow(&root, name, flags),
        Err(e) => Err(e),
    };
    let fd: OwnedFd = match fd {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => return Ok(None),
        Err(e) => return Err(io_err(e.into())),
    };
    let file = File::from(fd);
    if !file.metadata().map_err(io_err)?.is_file() {
        return Ok(None);
    }
    let mut buf = Vec::new();
    match file.take(MAX_DB_BYTES).read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(io_err(e)),
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The fallback without openat2: no symlink followed anywhere.
fn open_nofollow(root: &File, name: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    let etc = openat(
        root,
        "etc",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    openat(&etc, name, flags | OFlag::O_NOFOLLOW, Mode::empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
broken line
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:alice,bob
alice:x:1000:
bob:x:1001:
video:x:44:alice
staff:x:50:
";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        dir
    }

    fn spec() -> ContainerSpec {
        ContainerSpec::default()
    }

    #[test]
    fn image_user_by_name() {
        let r = rootfs();
        let u = resolve_user(&spec(), "alice", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10, 44, 1000]);
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.home.as_deref(), Some("/home/alice"));
    }

    #[test]
    fn empty_user_is_root() {
        let r = rootfs();
        let u = resolve_user(&spec(), "", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, vec![0]);
        assert_eq!(u.username.as_deref(), Some("root"));
    }

    #[test]
    fn numeric_uid_in_passwd_takes_its_gid_and_groups() {
        let r = rootfs();
        let u = resolve_user(&spec(), "1001", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1001, 1001));
        assert_eq!(u.additional_gids, vec![10, 1001]);
        assert_eq!(u.username.as_deref(), Some("bob"));
    }

    #[test]
    fn numeric_uid_not_in_passwd_gets_gid_0() {
        let r = rootfs();
        let u = resolve_user(&spec(), "4242", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert_eq!(u.additional_gids, vec![0]);
        assert_eq!(u.username, None);
        assert_eq!(u.home, None);
    }

    #[test]
    fn uid_gid_and_uid_groupname_and_name_group() {
        let r = rootfs();
        let u = resolve_user(&spec(), "4242:50", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 50));
        let u = resolve_user(&spec(), "1000:staff", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.additional_gids, vec![10, 44, 50]);
        let u = resolve_user(&spec(), "alice:video", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 44));
        assert_eq!(u.additional_gids, vec![10, 44]);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let r = rootfs();
        let e = resolve_user(&spec(), "mallory", r.path()).unwrap_err();
        assert!(matches!(&e, SpecError::UnknownUser(n) if n == "mallory"));
        assert!(e.to_string().contains("mallory"));
        let e = resolve_user(&spec(), "alice:nogroup", r.path()).unwrap_err();
        assert!(matches!(&e, SpecError::UnknownGroup(n) if n == "nogroup"));
    }

    #[test]
    fn run_as_fields_override_the_image() {
        let r = rootfs();
        let mut c = spec();
        c.run_as_user = Some(1001);
        c.run_as_username = Some("alice".into()); // run_as_user wins
        let u = resolve_user(&c, "root", r.path()).unwrap();
        assert_eq!(u.uid, 1001);
        c.run_as_user = None;
        c.run_as_group = Some(50);
        let u = resolve_user(&c, "root", r.path()).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.additional_gids, vec![10, 44, 50]);
    }

    #[test]
    fn run_as_group_without_user_is_an_error() {
        let r = rootfs();
        let mut c = spec();
        c.run_as_group = Some(5);
        let e = resolve_user(&c, "alice", r.path()).unwrap_err();
        assert!(e.to_string().contains("run_as_group"), "{e}");
    }

    #[test]
    fn negative_and_out_of_range_ids_are_errors() {
        let r = rootfs();
        let mut c = spec();
        c.run_as_user = Some(-1);
        assert!(
            resolve_user(&c, "", r.path())
                .unwrap_err()
                .to_string()
                .contains("run_as_user")
        );
        c.run_as_user = Some(1 << 32);
        assert!(resolve_user(&c, "", r.path()).is_err());
        assert!(resolve_user(&spec(), "99999999999", r.path()).is_err());
    }

    #[test]
    fn supplemental_groups_merge_vs_strict() {
        let r = rootfs();
        let mut c = spec();
        c.run_as_username = Some("alice".into());
        c.supplemental_groups = vec![2000, 44];
        let u = resolve_user(&c, "", r.path()).unwrap();
        assert_eq!(u.additional_gids, vec![10, 44, 1000, 2000]);
        c.supplemental_groups_policy = SupplementalGroupsPolicy::Strict;
        let u = resolve_user(&c, "", r.path()).unwrap();
        assert_eq!(u.additional_gids, vec![44, 1000, 2000]);
    }

    #[test]
    fn missing_files_allow_numeric_users_only() {
        let dir = tempfile::tempdir().unwrap();
        let u = resolve_user(&spec(), "123:456", dir.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (123, 456, vec![456]));
        assert!(resolve_user(&spec(), "alice", dir.path()).is_err());
    }

    /// A symlink pointing outside the rootfs is resolved inside it (as the
    /// container would see it), so the host file is never read: here the
    /// target does not exist inside the rootfs, and the file is absent.
    #[test]
    fn symlinked_passwd_pointing_outside_is_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(
            outside.path().join("passwd"),
            "evil:x:0:0::/:/bin/sh\nalice:x:0:0::/:/bin/sh\n",
        )
        .unwrap();
        let r = rootfs();
        fs::remove_file(r.path().join("etc/passwd")).unwrap();
        symlink(outside.path().join("passwd"), r.path().join("etc/passwd")).unwrap();
        let e = resolve_user(&spec(), "evil", r.path()).unwrap_err();
        assert!(matches!(e, SpecError::UnknownUser(_)));
        // The relative form climbing out is clamped at the rootfs too.
        let depth = r.path().components().count() + 2;
        let up = "../".repeat(depth);
        let rel = format!("{up}{}", outside.path().join("passwd").display());
        fs::remove_file(r.path().join("etc/passwd")).unwrap();
        symlink(rel, r.path().join("etc/passwd")).unwrap();
        assert!(resolve_user(&spec(), "evil", r.path()).is_err());
        // And a symlinked /etc directory pointing outside.
        let r2 = tempfile::tempdir().unwrap();
        fs::create_dir(outside.path().join("etc")).unwrap();
        fs::write(outside.path().join("etc/passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        symlink(outside.path().join("etc"), r2.path().join("etc")).unwrap();
        assert!(resolve_user(&spec(), "evil", r2.path()).is_err());
    }

    /// An absolute symlink within the image is followed inside the rootfs.
    #[test]
    fn symlink_inside_the_rootfs_is_followed_within_it() {
        let r = rootfs();
        fs::create_dir_all(r.path().join("usr/lib")).unwrap();
        fs::rename(r.path().join("etc/passwd"), r.path().join("usr/lib/passwd")).unwrap();
        symlink("/usr/lib/passwd", r.path().join("etc/passwd")).unwrap();
        let u = resolve_user(&spec(), "alice", r.path()).unwrap();
        assert_eq!(u.uid, 1000);
    }

    #[test]
    fn a_fifo_is_treated_as_absent() {
        let r = rootfs();
        fs::remove_file(r.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &r.path().join("etc/passwd"),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(resolve_user(&spec(), "alice", r.path()).is_err());
        assert_eq!(resolve_user(&spec(), "7", r.path()).unwrap().uid, 7);
    }

    #[test]
    fn parse_user_strings() {
        assert_eq!(
            parse_user_string("u", "1000:1000").unwrap(),
            (UserRef::Id(1000), Some(GroupRef::Id(1000)))
        );
        assert_eq!(
            parse_user_string("u", "name:grp").unwrap(),
            (
                UserRef::Name("name".into()),
                Some(GroupRef::Name("grp".into()))
            )
        );
        assert_eq!(
            parse_user_string("u", "x:").unwrap(),
            (UserRef::Name("x".into()), None)
        );
    }
}
