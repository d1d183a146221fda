//! The only place in this crate with `unsafe`: fork for the single-threaded
//! monitor and the few syscalls of a container's init that neither nix nor
//! std wrap safely.
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
    runtime::sys::mount_setattr(mount_root, libc::MOUNT_ATTR_RDONLY, None, true)
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

/// How far below the caller's frame the stack is left alone: this call's
/// own frames and the libc wrapper's live there.
const STACK_MARGIN: usize = 16 * 1024;
/// How much stack below that margin is given back at most: the deepest
/// work (a create, an exec) uses well under this.
const STACK_RELEASE_SPAN: usize = 1024 * 1024;

/// The addresses the main thread's stack can ever occupy: from its top
/// down by its size limit. Nothing else is mapped there (the kernel keeps
/// the mmap area below the stack limit), which is what makes giving back
/// the part below the current frame sound.
static MAIN_STACK: std::sync::OnceLock<std::ops::Range<usize>> = std::sync::OnceLock::new();

/// Notes where the main thread's stack is, from /proc/self/maps; called
/// once by the monitor's main before anything else. Without it
/// [`release_idle_memory`] leaves the stack alone.
pub fn note_main_stack() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(top) = maps
        .lines()
        .filter(|line| line.ends_with("[stack]"))
        .filter_map(|line| line.split(['-', ' ']).nth(1))
        .find_map(|end| usize::from_str_radix(end, 16).ok())
    else {
        return;
    };
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK)
        .ok()
        .and_then(|(soft, _)| usize::try_from(soft).ok())
        .unwrap_or(usize::MAX)
        .min(8 * 1024 * 1024);
    let _ = MAIN_STACK.set(top.saturating_sub(limit)..top);
}

/// Gives the kernel back the memory this process touched once and no longer
/// uses: free heap pages, and the main stack below the caller's frame. A
/// monitor (and its pause) idles for the pod's whole life; without this
/// what one create or exec touched stays resident in every pod.
pub fn release_idle_memory() {
    // SAFETY: malloc_trim only hands free heap pages back to the kernel;
    // no live allocation is touched.
    unsafe { libc::malloc_trim(0) };
    release_stack_below_caller();
}

#[inline(never)]
fn release_stack_below_caller() {
    let Some(stack) = MAIN_STACK.get() else {
        return;
    };
    let marker = 0u8;
    let here = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    // Only on the main thread's stack (a thread's stack has neighbours).
    if !stack.contains(&here) {
        return;
    }
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok())
        .unwrap_or(4096);
    let top = here.saturating_sub(STACK_MARGIN) & !(page - 1);
    let bottom = top.saturating_sub(STACK_RELEASE_SPAN).max(stack.start);
    if bottom >= top {
        return;
    }
    // SAFETY: [bottom, top) is main-stack address space below every live
    // frame (the deepest, the madvise wrapper's, is within STACK_MARGIN of
    // `here`), so nothing refers to it; MADV_DONTNEED on private anonymous
    // memory only makes later reads see zero pages. The part not mapped
    // yet is skipped (ENOMEM, ignored).
    unsafe {
        libc::madvise(
            bottom as *mut libc::c_void,
            top - bottom,
            libc::MADV_DONTNEED,
        )
    };
}

/// Unlocks the pty master `master` and opens its peer, the slave, through
/// the master itself (TIOCSPTLCK 0, then TIOCGPTPEER): no path is looked
/// up, so it works whichever mount namespace the pty's devpts lives in.
pub fn open_pty_peer(
    master: std::os::fd::BorrowedFd<'_>,
) -> Result<std::os::fd::OwnedFd, std::io::Error> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int through the pointer, which lives
    // across the call; the fd is borrowed, so it stays open.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes its open flags as an int argument, no
    // pointer; the fd is borrowed, so it stays open.
    let peer = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if peer < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd, and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(peer) })
}
