//! The only place in this crate with `unsafe`: fork for the single-threaded
//! monitor, the few syscalls of a container's init that neither nix nor std
//! wrap safely, and bpf(2) for cgroup v2 device programs.
#![allow(unsafe_code)]

use nix::unistd::{ForkResult, Pid};

pub enum Forked {
    Parent(Pid),
    Child,
}

/// fork(2), refused unless this process has exactly one thread: after a fork
/// in a multi-threaded process the child may only call async-signal-safe
/// functions, which Rust code cannot promise.
pub fn fork_single_threaded() -> Result<Forked, std::io::Error> {
    fork_single_threaded_counting(&std::fs::File::open("/proc/self/task")?)
}

/// As [`fork_single_threaded`], the threads counted in `tasks`: this
/// process's `/proc/<pid>/task`, opened while it was in sight (a process
/// that has joined another PID namespace's mount namespace is not in that
/// namespace's /proc).
pub fn fork_single_threaded_counting(tasks: &std::fs::File) -> Result<Forked, std::io::Error> {
    let mut dir = nix::dir::Dir::from_fd(tasks.try_clone()?.into())?;
    let threads = dir
        .iter()
        .filter(|entry| {
            entry.as_ref().map_or(true, |entry| {
                ![&b"."[..], b".."].contains(&entry.file_name().to_bytes())
            })
        })
        .count();
    if threads != 1 {
        return Err(std::io::Error::other(format!(
            "refusing to fork with {threads} threads"
        )));
    }
    // SAFETY: the process is single-threaded (checked above), so the child
    // gets a consistent copy of all memory and locks.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// Closes every file descriptor from 3 up except those in `keep`, so a
/// freshly forked child holds nothing of its parent's (sockets, pipes, the
/// signalfd, other containers' stdio).
/// Only for a child that never returns into code owning those descriptors.
pub fn close_inherited_fds(keep: &[std::os::fd::RawFd]) -> Result<(), std::io::Error> {
    close_fds_from(3, keep)
}

/// As [`close_inherited_fds`], stdin, stdout and stderr included: for a
/// child that never writes anywhere again.
pub fn close_all_fds(keep: &[std::os::fd::RawFd]) -> Result<(), std::io::Error> {
    close_fds_from(0, keep)
}

fn close_fds_from(first: u32, keep: &[std::os::fd::RawFd]) -> Result<(), std::io::Error> {
    let mut keep = keep
        .iter()
        .map(|&fd| u32::try_from(fd).map_err(|_| std::io::Error::other("negative fd")))
        .collect::<Result<Vec<u32>, _>>()?;
    keep.sort_unstable();
    let mut first = first;
    for kept in keep {
        if kept > first {
            close_range(first, kept - 1)?;
        }
        first = first.max(kept.saturating_add(1));
    }
    close_range(first, u32::MAX)
}

fn close_range(first: u32, last: u32) -> Result<(), std::io::Error> {
    // SAFETY: close_range only closes descriptors; the caller guarantees
    // no live Rust object will use them again (see above).
    if unsafe { libc::close_range(first, last, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Ends a forked child at once: no atexit handlers, no stdio flushing of
/// buffers copied from the parent.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}

/// Makes the mount whose root `mount_root` is, and every mount below it,
/// read-only: mount_setattr(2) with AT_RECURSIVE, which a MS_REMOUNT (top
/// mount only) cannot do. Used for `rro` bind mounts.
pub fn make_read_only_recursively(
    mount_root: std::os::fd::BorrowedFd<'_>,
) -> Result<(), std::io::Error> {
    use std::os::fd::AsRawFd;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint;
    // SAFETY: the path is a NUL-terminated literal, `attr` lives across the
    // call and its size is passed; the fd is borrowed, so it stays open.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount_root.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the terminal `tty` the controlling terminal of this process, which
/// must be a session leader without one (TIOCSCTTY).
pub fn set_controlling_terminal(tty: std::os::fd::BorrowedFd<'_>) -> Result<(), std::io::Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSCTTY takes an int argument, no pointer; the fd is
    // borrowed, so it stays open.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets every signal's disposition back to the default. An ignored signal
/// stays ignored across execve, and Rust's std ignores SIGPIPE at startup:
/// a container's process must not inherit that. The raw syscall, because
/// libc's sigaction refuses the two signals it keeps for itself (32, 33),
/// which a parent may still have left ignored.
pub fn reset_signal_dispositions() {
    // The kernel's struct sigaction: handler, flags, restorer, mask; all
    // zero is SIG_DFL with no flags and an empty mask.
    let default = [0u64; 4];
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default` is a valid kernel sigaction that lives across
        // the call, no old action is asked for, and the mask size is the
        // kernel's (8 bytes). SIG_DFL runs no code of ours.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}

/// One eBPF instruction as the kernel reads it (struct bpf_insn, little
/// endian: opcode, dst | src << 4, offset, immediate).
pub type BpfInstruction = [u8; 8];

/// bpf(2) commands, program and attach types, and flags from linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The BPF_PROG_LOAD part of union bpf_attr, up to expected_attach_type.
#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The BPF_PROG_ATTACH part of union bpf_attr.
#[repr(C)]
struct BpfProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> Result<libc::c_long, std::io::Error> {
    // SAFETY: `attr` is a #[repr(C)] prefix of union bpf_attr for `command`
    // (the kernel zero-fills the rest), it lives across the call and its
    // size is passed; pointers inside it are the caller's, valid as well.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut T,
            std::mem::size_of::<T>(),
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(result)
}

/// Loads a BPF_PROG_TYPE_CGROUP_DEVICE program. When the verifier refuses
/// it, the error carries the verifier's log.
pub fn load_cgroup_device_program(
    instructions: &[BpfInstruction],
) -> Result<std::os::fd::OwnedFd, std::io::Error> {
    use std::os::fd::FromRawFd;
    let license = c"Apache";
    let mut attr = BpfProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(instructions.len())
            .map_err(|_| std::io::Error::other("program too long"))?,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let loaded = bpf(BPF_PROG_LOAD, &mut attr).or_else(|error| {
        // Again, with a log, only to say why.
        let mut log = vec![0u8; 64 * 1024];
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
        let retried = bpf(BPF_PROG_LOAD, &mut attr);
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        retried.map_err(|_| {
            std::io::Error::new(
                error.kind(),
                format!("{error}: {}", String::from_utf8_lossy(&log[..end]).trim()),
            )
        })
    })?;
    let fd = i32::try_from(loaded).map_err(|_| std::io::Error::other("bad program fd"))?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Attaches a cgroup device program to the cgroup (v2) directory `cgroup`,
/// beside any others there (all must allow an access).
pub fn attach_cgroup_device_program(
    cgroup: std::os::fd::BorrowedFd<'_>,
    program: std::os::fd::BorrowedFd<'_>,
) -> Result<(), std::io::Error> {
    use std::os::fd::AsRawFd;
    let fd = |fd: std::os::fd::BorrowedFd<'_>| {
        u32::try_from(fd.as_raw_fd()).map_err(|_| std::io::Error::other("negative fd"))
    };
    let mut attr = BpfProgAttachAttr {
        target_fd: fd(cgroup)?,
        attach_bpf_fd: fd(program)?,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}
