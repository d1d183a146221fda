//! The only place in this crate with `unsafe`: fork for the single-threaded
//! monitor.
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
    let threads = std::fs::read_dir("/proc/self/task")?.count();
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

/// Closes every file descriptor from 3 up except `keep`, so a freshly forked
/// child holds nothing of its parent's (sockets, pipes, the signalfd).
/// Only for a child that never returns into code owning those descriptors.
pub fn close_inherited_fds(keep: std::os::fd::RawFd) -> Result<(), std::io::Error> {
    let keep = u32::try_from(keep).map_err(|_| std::io::Error::other("negative fd"))?;
    let ranges = [(3, keep.checked_sub(1)), (keep + 1, Some(u32::MAX))];
    for (first, last) in ranges {
        let Some(last) = last.filter(|&last| last >= first) else {
            continue;
        };
        // SAFETY: close_range only closes descriptors; the caller guarantees
        // no live Rust object will use them again (see above).
        if unsafe { libc::close_range(first, last, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Ends a forked child at once: no atexit handlers, no stdio flushing of
/// buffers copied from the parent.
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}
