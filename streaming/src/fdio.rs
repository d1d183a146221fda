//! Pipes and pty masters of an exec process, driven by tokio. A pty
//! master is read and written like a pipe's two ends (through two
//! descriptors of it); its EOF, once the last slave closed, reads as EIO.

use std::io;
use std::os::fd::OwnedFd;

use tokio::net::unix::pipe;

/// The process's output side of `fd` (non-blocking).
pub(crate) fn reader(fd: OwnedFd) -> io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// The process's input side of `fd` (non-blocking).
pub(crate) fn writer(fd: OwnedFd) -> io::Result<pipe::Sender> {
    pipe::Sender::from_owned_fd_unchecked(fd)
}
