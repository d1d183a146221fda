//! The last steps of a container process (init or exec), in runc's order:
//! signals, oom_score_adj, rlimits, bounding set, user and groups (keeping
//! capabilities across setuid), cwd, the other capability sets,
//! no_new_privs, umask, and execve with a `$PATH` lookup.
//!
//! The seccomp filter is built first and loaded as late as it can be, so
//! it filters as little of this setup as possible: with no_new_privs,
//! right before execve; without it, loading a filter needs CAP_SYS_ADMIN,
//! which a container process running as a non-root user (or without that
//! capability) no longer has after setuid and the capability sets, so the
//! filter is loaded just before them (after the bounding set, which leaves
//! the effective set alone), as runc does. The setup after it (setgroups,
//! setgid, setuid, capset, prctl, chdir, umask, stat, close_range, execve)
//! is all in the default profile's allow-list; a custom profile that
//! denies one of them fails the start, as with runc.
//!
//! A container init does all but the exec ([`finish`]) before it waits
//! for StartContainer, as runc's init does before its exec fifo: a
//! created container's init is visible in a pod's shared PID namespace
//! for as long as the create and start are apart, and must not hold more
//! than the container would meanwhile.

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use libseccomp::ScmpFilterContext;
use nix::sys::resource::setrlimit;
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid, execve, setgid, setgroups, setuid};
use oci_spec::runtime::{LinuxCapabilities, Process, Spec};
use proto::monitor::{ContainerCreate, ENV_FILE};
use runtime::spec::DEFAULT_PATH;

use super::{Reporter, context, seccomp};

/// A process that holds the container's credentials and nothing more,
/// and only has to exec.
pub(super) struct Finished {
    /// With no_new_privs the filter is loaded right before execve.
    late_filter: Option<ScmpFilterContext>,
}

/// Everything of `spec.process` but the exec: from here on the process
/// holds no capability, user or group beyond the container's, so a
/// container init can wait for its start in a pod's shared PID namespace
/// without being a way out for a sibling that may ptrace it.
pub(super) fn finish(spec: &Spec) -> io::Result<Finished> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| io::Error::other("the spec has no process"))?;
    let filter = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.seccomp().as_ref())
        .map(seccomp::filter)
        .transpose()?;
    let no_new_privs = process.no_new_privileges().unwrap_or(false);

    // Blocked or ignored signals survive execve; the container starts
    // with neither.
    context(
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None),
        || "clearing the signal mask".into(),
    )?;
    crate::sys::reset_signal_dispositions();

    for rlimit in process.rlimits().as_deref().unwrap_or_default() {
        context(
            setrlimit(
                runtime::spec::rlimit_resource(rlimit.typ()),
                rlimit.soft(),
                rlimit.hard(),
            ),
            || {
                format!(
                    "setting {} to {}/{}",
                    rlimit.typ(),
                    rlimit.soft(),
                    rlimit.hard()
                )
            },
        )?;
    }
    let capabilities = process.capabilities().as_ref();
    if let Some(capabilities) = capabilities {
        set_bounding(capabilities)?;
    }
    let late_filter = match filter {
        Some(filter) if !no_new_privs => {
            seccomp::load(&filter)?;
            None
        }
        filter => filter,
    };
    set_user(process, capabilities.is_some())?;
    let cwd = process.cwd();
    context(nix::unistd::chdir(cwd), || {
        format!(
            "chdir to cwd ({:?}) set in config.json failed",
            cwd.display()
        )
    })?;
    if let Some(capabilities) = capabilities {
        set_capabilities(capabilities)?;
    }
    if no_new_privs {
        context(nix::sys::prctl::set_no_new_privs(), || {
            "setting no_new_privs".into()
        })?;
    }
    let mask = process.user().umask().unwrap_or(0o022);
    umask(Mode::from_bits_truncate(mask as libc::mode_t));
    Ok(Finished { late_filter })
}

/// The environment of every process of the container (init and exec, as
/// runc gives an exec the container's): the bundle's [`ENV_FILE`] when crid
/// wrote one (a value that is not UTF-8, which `config.json`'s strings
/// cannot hold), else `config.json`'s.
pub fn environment(create: &ContainerCreate, spec: &Spec) -> io::Result<Vec<CString>> {
    if !create.env_file {
        let env = spec
            .process()
            .as_ref()
            .and_then(|process| process.env().as_deref())
            .unwrap_or_default();
        return env.iter().map(|kv| cstring(kv.as_bytes())).collect();
    }
    let path = create.bundle.join(ENV_FILE);
    let bytes = std::fs::read(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    // Each entry ends in a NUL: a file without the last one was cut short.
    let entries = bytes.strip_suffix(&[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: the last entry has no NUL", path.display()),
        )
    })?;
    entries.split(|&b| b == 0).map(cstring).collect()
}

/// Execs `args` with the container's environment (`$PATH` lookup
/// included). Returns only on failure.
pub(super) fn exec(
    finished: Finished,
    env: &[CString],
    args: &[String],
    report: &Reporter,
) -> io::Result<Infallible> {
    let program = args
        .first()
        .ok_or_else(|| io::Error::other("the spec's process has no args"))?;
    let path = lookup(program, env)?;
    let c_path = cstring(path.as_os_str().as_encoded_bytes())?;
    let c_args = args
        .iter()
        .map(|arg| cstring(arg.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    // Nothing of the monitor's may reach the container; the report pipe is
    // O_CLOEXEC, so its closing at exec tells the monitor it worked.
    crate::sys::close_inherited_fds(&[report.raw_fd()])?;
    if let Some(filter) = &finished.late_filter {
        seccomp::load(filter)?;
    }
    let error = match execve(&c_path, &c_args, env) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    Err(io::Error::other(format!(
        "exec: {:?}: {}",
        path.display().to_string(),
        exec_error_text(error)
    )))
}

/// Go's wording (runc and containerd show Go errors).
fn exec_error_text(errno: nix::errno::Errno) -> String {
    match errno {
        nix::errno::Errno::EACCES => "permission denied".into(),
        nix::errno::Errno::ENOENT => "no such file or directory".into(),
        nix::errno::Errno::ENOEXEC => "exec format error".into(),
        other => other.desc().to_lowercase(),
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} contains a NUL byte", String::from_utf8_lossy(bytes)),
        )
    })
}

/// `program` itself if it has a '/', else the first regular file with an
/// execute bit in `$PATH` of the container's env (Go's `exec.LookPath`).
fn lookup(program: &str, env: &[CString]) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.to_bytes().strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH.as_bytes());
    path.split(|&b| b == b':')
        .map(|dir| match dir {
            b"" => Path::new(".").join(program),
            dir => Path::new(OsStr::from_bytes(dir)).join(program),
        })
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("exec: {program:?}: executable file not found in $PATH"),
            )
        })
}

/// Writes oom_score_adj. Lowering it needs CAP_SYS_RESOURCE; without it
/// the current value is kept (a warning in the monitor's log), as a
/// container should rather run than fail over its OOM preference.
/// The spec's oom_score_adj, through this process's /proc entry: before
/// [`finish`], while that is in sight (an exec writes it before it joins
/// the container's mount namespace).
pub(super) fn apply_oom_score_adj(spec: &Spec, report: &mut Reporter) -> io::Result<()> {
    match spec.process().as_ref().and_then(|p| p.oom_score_adj()) {
        Some(score) => set_oom_score_adj(score, report),
        None => Ok(()),
    }
}

fn set_oom_score_adj(score: i32, report: &mut Reporter) -> io::Result<()> {
    const FILE: &str = "/proc/self/oom_score_adj";
    match std::fs::write(FILE, score.to_string()) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
            let current = std::fs::read_to_string(FILE).unwrap_or_default();
            report.warn(format!(
                "oom_score_adj {score} refused ({error}); keeping {}",
                current.trim()
            ));
            Ok(())
        }
        Err(error) => Err(io::Error::other(format!(
            "writing oom_score_adj {score}: {error}"
        ))),
    }
}

/// setgroups, setgid, setuid. With capabilities to set afterwards, they
/// are kept across the uid change (PR_SET_KEEPCAPS) and trimmed later.
fn set_user(process: &Process, keep_caps: bool) -> io::Result<()> {
    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|&gid| Gid::from_raw(gid))
        .collect();
    if keep_caps {
        context(nix::sys::prctl::set_keepcaps(true), || {
            "PR_SET_KEEPCAPS".into()
        })?;
    }
    // Always: the monitor's own supplementary groups must not leak in.
    context(setgroups(&groups), || format!("setgroups {groups:?}"))?;
    context(setgid(Gid::from_raw(user.gid())), || {
        format!("setgid {}", user.gid())
    })?;
    context(setuid(Uid::from_raw(user.uid())), || {
        format!("setuid {}", user.uid())
    })?;
    if keep_caps {
        context(nix::sys::prctl::set_keepcaps(false), || {
            "PR_SET_KEEPCAPS".into()
        })?;
    }
    Ok(())
}

/// The spec's capabilities that this kernel knows; unknown ones (newer
/// than the kernel or the caps crate) are skipped, as runc does.
fn cap_set(set: Option<&oci_spec::runtime::Capabilities>) -> CapsHashSet {
    let supported = caps::runtime::thread_all_supported();
    set.into_iter()
        .flatten()
        .filter_map(|cap| format!("CAP_{cap}").parse::<caps::Capability>().ok())
        .filter(|cap| supported.contains(cap))
        .collect()
}

/// Drops what is not in the bounding set; before setuid, while
/// CAP_SETPCAP is still effective.
fn set_bounding(capabilities: &LinuxCapabilities) -> io::Result<()> {
    let keep = cap_set(capabilities.bounding().as_ref());
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            context(caps::drop(None, CapSet::Bounding, cap), || {
                format!("dropping {cap} from the bounding set")
            })?;
        }
    }
    Ok(())
}

/// Inheritable and effective first (while permitted is still full), then
/// permitted, then ambient (which needs both permitted and inheritable).
fn set_capabilities(capabilities: &LinuxCapabilities) -> io::Result<()> {
    for (set, wanted) in [
        (CapSet::Inheritable, capabilities.inheritable()),
        (CapSet::Effective, capabilities.effective()),
        (CapSet::Permitted, capabilities.permitted()),
    ] {
        let wanted = cap_set(wanted.as_ref());
        context(caps::set(None, set, &wanted), || {
            format!("setting the {set:?} capabilities")
        })?;
    }
    context(caps::clear(None, CapSet::Ambient), || {
        "clearing the ambient capabilities".into()
    })?;
    for cap in cap_set(capabilities.ambient().as_ref()) {
        context(caps::raise(None, CapSet::Ambient, cap), || {
            format!("raising {cap} in the ambient set")
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_uses_the_container_path_and_says_so_when_missing() {
        let env = vec![c"PATH=/nonexistent:/bin".to_owned()];
        assert_eq!(
            lookup("sh", &env).map_err(|e| e.to_string()),
            Ok(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            lookup("./x", &env).map_err(|e| e.to_string()),
            Ok(PathBuf::from("./x"))
        );
        let error = lookup("nosuchcmd", &env)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            error,
            Err(r#"exec: "nosuchcmd": executable file not found in $PATH"#.to_owned())
        );
    }

    #[test]
    fn oci_capability_names_map_to_the_caps_crate() {
        let set: oci_spec::runtime::Capabilities = [oci_spec::runtime::Capability::NetBindService]
            .into_iter()
            .collect();
        assert_eq!(
            cap_set(Some(&set)),
            [caps::Capability::CAP_NET_BIND_SERVICE]
                .into_iter()
                .collect()
        );
    }
}
