//! The container's seccomp profile, as OCI `linux.seccomp`.
//!
//! * [`runtime_default`]: equivalent in effect to containerd's and moby's
//!   default profile. Everything not listed fails with EPERM; a fixed
//!   allow-list; syscalls that only make sense with a capability are
//!   allowed only when the container has it; `clone` without
//!   CAP_SYS_ADMIN is allowed only without `CLONE_NEW*` flags, and
//!   `clone3` (whose flags sit in memory, out of seccomp's reach) fails
//!   with ENOSYS so libc falls back to `clone`, where that check applies.
//! * [`localhost`]: a profile file on the node, in the OCI `LinuxSeccomp`
//!   format or Docker's (`archMap`, `includes`/`excludes`), which is a
//!   superset of it, so one reader takes both.
//!
//! Loading the result into the kernel is the container init's job
//! (`monitor::init`), with libseccomp.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use super::SpecError;

/// The architectures the default profile covers: the native one and those
/// the same CPU can also run (a 64-bit x86 host runs i386 and x32 code,
/// whose syscall numbers differ; unlisted, they would all hit the default
/// action and such binaries would not run at all).
#[cfg(target_arch = "x86_64")]
const ARCHES: &[Arch] = &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32];
#[cfg(target_arch = "aarch64")]
const ARCHES: &[Arch] = &[Arch::ScmpArchAarch64, Arch::ScmpArchArm];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHES: &[Arch] = &[Arch::ScmpArchNative];

/// Go's name of this architecture: what Docker profiles' `includes.arches`
/// and `excludes.arches` list.
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH_NAME: &str = "amd64";
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH_NAME: &str = "arm64";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH_NAME: &str = std::env::consts::ARCH;

/// The seccomp arch token of this machine (what a Docker `archMap` entry
/// is selected by).
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: Arch = Arch::ScmpArchX86_64;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: Arch = Arch::ScmpArchAarch64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE_ARCH: Arch = Arch::ScmpArchNative;

/// Syscalls any container may make: unprivileged process, file, memory,
/// IPC, time and network work. Absent on purpose (so EPERM): keyring
/// calls (`keyctl`, `add_key`, `request_key`: the keyring is not
/// namespaced), `userfaultfd`, `pivot_root`, `swapon`/`swapoff`, `kexec_*`,
/// `nfsservctl`, `uselib`, `ustat`/`sysfs`/`_sysctl`, `vm86*`,
/// `open_by_handle_at` (without CAP_DAC_READ_SEARCH), `socket`
/// (see [`socket_rule`]) and `personality` (see [`PERSONALITIES`]).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Allowed syscalls specific to this architecture family.
#[cfg(target_arch = "x86_64")]
const ARCH_ALLOWED: &[&str] = &["arch_prctl", "modify_ldt"];
#[cfg(target_arch = "aarch64")]
const ARCH_ALLOWED: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH_ALLOWED: &[&str] = &[];

/// Syscalls allowed only to a container holding the capability: the
/// kernel would refuse them without it anyway, and filtering them shrinks
/// the kernel surface an unprivileged container can reach.
const WITH_CAPABILITY: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// The `clone` flags that create namespaces (CLONE_NEWNS, NEWCGROUP,
/// NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET; kernel values, x86 and arm
/// alike): without CAP_SYS_ADMIN, `clone` must have none of them.
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// The `personality` values allowed: PER_LINUX, PER_LINUX32, UNAME26,
/// PER_LINUX32|UNAME26, and 0xffffffff (which only queries). The others
/// turn on legacy behaviour such as ADDR_NO_RANDOMIZE (no ASLR).
pub const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `socket`'s address family that stays denied: AF_VSOCK reaches the
/// hypervisor or host side, which a container has no business with.
const DENIED_SOCKET_FAMILY: u64 = libc::AF_VSOCK as u64;

/// ENOSYS for `clone3` without CAP_SYS_ADMIN: "not implemented" makes
/// glibc and others retry with `clone`, where the flag check applies
/// (EPERM would be final).
const CLONE3_ERRNO: u32 = libc::ENOSYS as u32;

/// The errno of everything the default profile does not allow.
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

fn rule(
    names: impl IntoIterator<Item = impl Into<String>>,
    action: LinuxSeccompAction,
    errno: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut out = LinuxSyscall::default();
    out.set_names(names.into_iter().map(Into::into).collect())
        .set_action(action)
        .set_errno_ret(errno)
        .set_args((!args.is_empty()).then_some(args));
    out
}

/// An argument condition. oci-spec offers no setters for it, only a
/// builder, whose `build` is fallible in type (never in fact: every field
/// has a default).
fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> Result<LinuxSeccompArg, SpecError> {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    Ok(match value_two {
        Some(v) => b.value_two(v).build()?,
        None => b.build()?,
    })
}

/// `socket` of any family but AF_VSOCK (which then meets the default
/// action).
fn socket_rule() -> Result<LinuxSyscall, SpecError> {
    Ok(rule(
        ["socket"],
        LinuxSeccompAction::ScmpActAllow,
        None,
        vec![arg(
            0,
            LinuxSeccompOperator::ScmpCmpNe,
            DENIED_SOCKET_FAMILY,
            None,
        )?],
    ))
}

/// The runtime default profile for a container with `capabilities` (its
/// bounding set). Privileged containers get no profile at all instead.
pub fn runtime_default(capabilities: &HashSet<Capability>) -> Result<LinuxSeccomp, SpecError> {
    use LinuxSeccompAction::{ScmpActAllow, ScmpActErrno};
    let mut allowed: BTreeSet<&str> = ALLOWED.iter().chain(ARCH_ALLOWED).copied().collect();
    for (capability, names) in WITH_CAPABILITY {
        if capabilities.contains(capability) {
            allowed.extend(names.iter().copied());
        }
    }
    let mut syscalls = vec![
        rule(allowed, ScmpActAllow, None, Vec::new()),
        socket_rule()?,
    ];
    // One rule per value: the conditions of one rule are ANDed.
    for &value in PERSONALITIES {
        syscalls.push(rule(
            ["personality"],
            ScmpActAllow,
            None,
            vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, value, None)?],
        ));
    }
    if !capabilities.contains(&Capability::SysAdmin) {
        // (flags & mask) == 0. On s390 the flags are argument 1; crid
        // builds for x86_64 and aarch64 only.
        syscalls.push(rule(
            ["clone"],
            ScmpActAllow,
            None,
            vec![arg(
                0,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                CLONE_NAMESPACE_FLAGS,
                Some(0),
            )?],
        ));
        syscalls.push(rule(
            ["clone3"],
            ScmpActErrno,
            Some(CLONE3_ERRNO),
            Vec::new(),
        ));
    }
    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(ScmpActErrno)
        .set_default_errno_ret(Some(DEFAULT_ERRNO))
        .set_architectures(Some(ARCHES.to_vec()))
        .set_syscalls(Some(syscalls));
    Ok(profile)
}

/// A profile file: OCI `LinuxSeccomp` plus Docker's additions.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    /// Docker: per native arch, the arches to add with it.
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<ProfileSyscall>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileSyscall {
    /// Docker's older single-name form.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Condition>,
    #[serde(default)]
    excludes: Option<Condition>,
}

/// Docker's `includes`/`excludes`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

fn profile_error(path: &Path, reason: impl Into<String>) -> SpecError {
    SpecError::SeccompProfile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads the profile file at `path` (OCI or Docker format) for a container
/// with `capabilities` (its bounding set), which Docker's `includes.caps`
/// and `excludes.caps` are checked against, as moby and containerd do.
pub fn localhost(
    path: &Path,
    capabilities: &HashSet<Capability>,
) -> Result<LinuxSeccomp, SpecError> {
    let bytes = std::fs::read(path).map_err(|e| profile_error(path, e.to_string()))?;
    let file: ProfileFile = serde_json::from_slice(&bytes)
        .map_err(|e| profile_error(path, format!("not a seccomp profile: {e}")))?;
    from_file(file, capabilities, &kernel_release()).map_err(|reason| profile_error(path, reason))
}

/// The running kernel's release (`6.1.0-13-amd64`), for `minKernel`.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default()
}

/// `major.minor` of a kernel release; None if it does not start so.
fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().splitn(3, ['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()
        .map(|m| {
            m.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    Some((major, minor))
}

fn from_file(
    file: ProfileFile,
    capabilities: &HashSet<Capability>,
    kernel: &str,
) -> Result<LinuxSeccomp, String> {
    let has = |name: &str| {
        capabilities
            .iter()
            .any(|c| format!("CAP_{c}").eq_ignore_ascii_case(name))
    };
    let architectures = match (file.architectures, file.arch_map) {
        (Some(a), Some(m)) if !a.is_empty() && !m.is_empty() => {
            return Err("both architectures and archMap are set; use one".into());
        }
        (Some(a), _) if !a.is_empty() => Some(a),
        (_, Some(map)) => {
            let mut out = Vec::new();
            for entry in map.into_iter().filter(|e| e.architecture == NATIVE_ARCH) {
                out.push(entry.architecture);
                out.extend(entry.sub_architectures.unwrap_or_default());
            }
            Some(out)
        }
        _ => None,
    };
    let mut syscalls = Vec::new();
    for (i, call) in file.syscalls.unwrap_or_default().into_iter().enumerate() {
        let mut names = call.names.unwrap_or_default();
        names.extend(call.name);
        if names.is_empty() {
            return Err(format!("syscalls[{i}] has no names"));
        }
        let includes = call.includes.unwrap_or_default();
        let excludes = call.excludes.unwrap_or_default();
        if includes.caps.iter().flatten().any(|c| !has(c)) {
            continue;
        }
        if excludes.caps.iter().flatten().any(|c| has(c)) {
            continue;
        }
        if let Some(arches) = &includes.arches
            && !arches.is_empty()
            && !arches.iter().any(|a| a == NATIVE_ARCH_NAME)
        {
            continue;
        }
        if excludes
            .arches
            .iter()
            .flatten()
            .any(|a| a == NATIVE_ARCH_NAME)
        {
            continue;
        }
        if let Some(min) = includes.min_kernel.as_deref().filter(|m| !m.is_empty()) {
            let wanted = major_minor(min).ok_or_else(|| {
                format!("syscalls[{i}].includes.minKernel {min:?} is not a kernel version")
            })?;
            let running = major_minor(kernel)
                .ok_or_else(|| format!("cannot read the running kernel's version ({kernel:?})"))?;
            if running < wanted {
                continue;
            }
        }
        syscalls.push(rule(
            names,
            call.action,
            call.errno_ret,
            call.args.unwrap_or_default(),
        ));
    }
    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(file.default_action)
        .set_default_errno_ret(file.default_errno_ret)
        .set_architectures(architectures)
        .set_flags(file.flags)
        .set_listener_path(file.listener_path)
        .set_listener_metadata(file.listener_metadata)
        .set_syscalls(Some(syscalls));
    Ok(profile)
}

#[cfg(test)]
mod tests;
