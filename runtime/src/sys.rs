//! The only place in this crate with `unsafe`: bpf(2) for cgroup v2 device
//! programs, the new mount API for idmapped mounts, fd passing and tty
//! sizes. (Fork and the container init's syscalls are crid-monitor's, in
//! its own package: crid never links them.)
#![allow(unsafe_code)]

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

/// Sends `frame` with `fds` attached (SCM_RIGHTS), whole: a short send is
/// an error, since frames sent with descriptors are small and the socket
/// blocking.
pub fn send_with_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    frame: &[u8],
    fds: &[std::os::fd::OwnedFd],
) -> Result<(), std::io::Error> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let raw: Vec<std::os::fd::RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let iov = [std::io::IoSlice::new(frame)];
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &rights,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != frame.len() {
        return Err(std::io::Error::other(format!(
            "sent {sent} of {} bytes with the descriptors",
            frame.len()
        )));
    }
    Ok(())
}

/// Receives bytes into `buf` and the descriptors sent with them
/// (SCM_RIGHTS), close-on-exec, without blocking.
pub fn recv_with_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Vec<std::os::fd::OwnedFd>), std::io::Error> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    let mut fds = Vec::new();
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = control {
            for fd in received {
                // SAFETY: the kernel installed these descriptors for this
                // message just now; nothing else owns them.
                fds.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(std::io::Error::other(
            "more descriptors were sent than expected",
        ));
    }
    Ok((message.bytes, fds))
}

/// Sets the window size of the terminal whose pty master is `master`
/// (TIOCSWINSZ; the foreground process group gets SIGWINCH).
pub fn set_window_size(
    master: std::os::fd::BorrowedFd<'_>,
    columns: u16,
    rows: u16,
) -> Result<(), std::io::Error> {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize, which lives across the
    // call; the fd is borrowed, so it stays open.
    if unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCSWINSZ,
            &size as *const libc::winsize,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A detached copy of the mount at `path` (open_tree(2) with
/// OPEN_TREE_CLONE, not recursive): its attributes can be changed without
/// touching the original.
pub fn clone_mount(path: &std::path::Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the
    // other arguments are plain integers.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("open_tree: fd out of range"))?;
    // SAFETY: the kernel just returned this fd, and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// mount_setattr(2) on the mount `mount_root` (a mount's root or a
/// detached mount): sets `attr_set`, with `userns` for MOUNT_ATTR_IDMAP;
/// `recursive` for every mount below it too.
pub fn mount_setattr(
    mount_root: std::os::fd::BorrowedFd<'_>,
    attr_set: u64,
    userns: Option<std::os::fd::BorrowedFd<'_>>,
    recursive: bool,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: the path is a NUL-terminated literal, `attr` lives across the
    // call and its size is passed; the fds are borrowed, so they stay open.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount_root.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// move_mount(2) flag: the source is the fd itself (a detached mount).
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// Attaches the detached mount `mount` at `target` (move_mount(2)).
pub fn attach_mount(
    mount: std::os::fd::BorrowedFd<'_>,
    target: &std::path::Path,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(target.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call;
    // the fd is borrowed, so it stays open.
    let result = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
