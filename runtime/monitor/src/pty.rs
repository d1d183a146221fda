//! Ptys of a container's own devpts instance. A pty of the host's devpts
//! would be a terminal the container cannot name: `tty` (ttyname) looks
//! for it in the container's `/dev/pts`, which is a new instance.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, OpenHow, ResolveFlag, fcntl, openat2};
use nix::sys::stat::{SFlag, fstat, makedev};
use nix::sys::statfs::{DEVPTS_SUPER_MAGIC, fstatfs};

/// A new pty of the devpts at `dev/pts` beneath `root` (a container's root
/// directory, resolved beneath it, no magic links): its master (blocking)
/// and its slave (O_NOCTTY), both close-on-exec. The multiplexer is checked
/// to be a devpts ptmx (5:2) first, so a container's own file there cannot
/// pass for it. The slave is opened through the master (TIOCGPTPEER), not
/// by a path the container could swap.
pub fn open_beneath(root: BorrowedFd<'_>) -> io::Result<(OwnedFd, OwnedFd)> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let master = openat2(root, "dev/pts/ptmx", how)
        .map_err(|e| io::Error::other(format!("opening the container's /dev/pts/ptmx: {e}")))?;
    let on_devpts = fstatfs(&master)?.filesystem_type() == DEVPTS_SUPER_MAGIC;
    let stat = fstat(&master)?;
    let is_ptmx = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
        && stat.st_rdev == makedev(5, 2);
    if !on_devpts || !is_ptmx {
        return Err(io::Error::other(
            "the container's /dev/pts/ptmx is not a devpts pty multiplexer",
        ));
    }
    // Opened non-blocking only so that a FIFO put there cannot hang the
    // open; blocking again, as any pty end handed on.
    fcntl(&master, FcntlArg::F_SETFL(OFlag::O_RDWR))?;
    let slave = crate::sys::open_pty_peer(master.as_fd())?;
    Ok((master, slave))
}
