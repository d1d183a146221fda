//! The process side of a container: its init and its exec processes, both
//! forked by crid-monitor (single-threaded, so the child may run any Rust
//! code until it execs).
//!
//! # How a child talks back
//! Each is forked with a report pipe ([`crate::report`]). The init keeps
//! the pipe until it execs, so once started, EOF means the exec happened.
//! The init waits for one byte on a second pipe before it execs.
//!
//! # PID namespaces
//! setns/unshare of a PID namespace only moves the caller's future
//! children, so the forked child joins everything and forks once more; that
//! grandchild becomes the container process and the child (the
//! intermediate) reports its pid and exits. crid-monitor is a sub-reaper,
//! so the grandchild becomes its child.

mod process;
mod rootfs;
mod seccomp;

pub use process::environment;
pub(super) use rootfs::pivot_into;

use super::confine::confine;

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{Pid, dup2_stderr, dup2_stdin, dup2_stdout, pipe2};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use proto::monitor::{CgroupView, ContainerCreate};

use crate::report::{Report, Reporter, Reporting, Reports, Spawned, fork_reporting};
use crate::sys::{Forked, close_inherited_fds, exit_child, fork_single_threaded};

/// The child ends of a container's stdio (for a tty: the pty slave three
/// times).
pub struct ChildStdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

impl ChildStdio {
    /// /dev/null three times.
    pub fn null() -> io::Result<ChildStdio> {
        let null = OwnedFd::from(File::open("/dev/null")?);
        Ok(ChildStdio {
            stdin: null.try_clone()?,
            stdout: null.try_clone()?,
            stderr: null,
        })
    }
}

/// How a container's init gets its stdio.
pub enum InitStdio {
    /// Ends made before the fork (pipes, /dev/null).
    Given(ChildStdio),
    /// A terminal of the container's own devpts, which exists only once the
    /// init has mounted it: the init then makes the pty, takes its slave as
    /// stdio and controlling terminal, and sends the master on this socket
    /// (before it reports `Ready`). Until then its stdio is /dev/null.
    Terminal(OwnedFd),
}

impl From<ChildStdio> for InitStdio {
    fn from(stdio: ChildStdio) -> InitStdio {
        InitStdio::Given(stdio)
    }
}

/// A container init that is set up and waits for its start signal.
/// Dropping it without [`CreatedInit::start`] makes the init exit (it reads
/// EOF instead of the start byte); the caller reaps it.
pub struct CreatedInit {
    pub pid: Pid,
    /// With `placed_by_crid`: keeps the container's cgroup until taken
    /// and released (see [`Holder`]).
    pub holder: Option<Holder>,
    start: File,
    reports: Reports,
}

/// A process that does nothing but keep a container's cgroup populated, so
/// the cgroup outlives the container's last process until the monitor has
/// read its OOM count. systemd removes an empty scope at once, with its
/// `memory.events`; a cgroup crid makes itself stays anyway, so only placed
/// containers get one. It counts as one task in the container's cgroup.
/// Dropping this releases it: it exits, and the monitor's reaper collects it.
pub struct Holder {
    pub pid: Pid,
    _release: File,
}

/// What a holder calls once confined: the read that waits for the
/// release, the report of its confinement, and the close of both pipes
/// (std checks a descriptor with fcntl before it closes it).
const HOLDER_SYSCALLS: [&str; 4] = ["read", "write", "close", "fcntl"];

/// Forks a [`Holder`] and returns once it is confined: it keeps no
/// descriptor but its end of the release pipe, takes signals as any
/// process does (so a stop of its unit ends it), and exits when the
/// monitor closes the pipe or dies. It sits in the container's cgroup, so
/// it is confined as pause is, its empty root mounted over `mount_point`
/// in a mount namespace of its own.
fn fork_holder(mount_point: &Path) -> io::Result<Holder> {
    let (release_read, release_write) = pipe2(OFlag::O_CLOEXEC)?;
    match fork_reporting(false)? {
        Reporting::Child(mut report) => {
            drop(release_write);
            let keep = [release_read.as_raw_fd(), report.raw_fd()];
            let confined = close_inherited_fds(&keep)
                .and_then(|()| {
                    nix::sys::signal::sigprocmask(
                        nix::sys::signal::SigmaskHow::SIG_SETMASK,
                        Some(&nix::sys::signal::SigSet::empty()),
                        None,
                    )
                    .map_err(io::Error::from)
                })
                .and_then(|()| {
                    let _ = nix::sys::prctl::set_name(c"crid-holder");
                    // The OOM killer must never pick the holder over the
                    // container: a kill of it would count as the container's
                    // OOM kill. Best effort: it needs CAP_SYS_RESOURCE.
                    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
                    confine(
                        mount_point,
                        &keep,
                        &HOLDER_SYSCALLS,
                        (super::confine::CONFINED_ID, super::confine::CONFINED_ID),
                    )
                });
            if let Err(error) = confined {
                report.fail(&error)
            }
            // Confined: the monitor reads EOF.
            drop(report);
            let mut byte = [0u8; 1];
            // Nothing is ever written: this returns at EOF.
            let released = File::from(release_read).read(&mut byte);
            exit_child(i32::from(released.is_err()))
        }
        Reporting::Parent(spawned) => {
            drop(release_read);
            let pid = spawned
                .until_closed()
                .map_err(|error| io::Error::other(format!("holder: {error}")))?;
            Ok(Holder {
                pid,
                _release: File::from(release_write),
            })
        }
    }
}

/// Builds an `io::Error` that says what was being done.
pub(super) fn context<T, E: std::fmt::Display>(
    result: Result<T, E>,
    what: impl FnOnce() -> String,
) -> io::Result<T> {
    result.map_err(|error| io::Error::other(format!("{}: {error}", what())))
}

/// Forks the container's init: joins the spec's namespaces and the
/// container's cgroup, sets up and pivots into the rootfs, and leaves it
/// waiting for [`CreatedInit::start`]. Returns once the init is ready, or
/// the child's error; on error no process of it is left (all reaped).
///
/// With `create.placed_by_crid` the child first waits until `place` (given
/// its pid and a [`Holder`]'s) has returned, so everything it does and
/// forks happens in the cgroup crid put it in; if `place` fails, the child
/// exits untouched.
pub fn create(
    create: &ContainerCreate,
    spec: &Spec,
    stdio: impl Into<InitStdio>,
    place: impl FnOnce(Pid, Pid) -> io::Result<()>,
) -> io::Result<CreatedInit> {
    let env = environment(create, spec)?;
    let forked = fork_init(create, spec, &env, stdio)?;
    if let Some((pid, holder)) = forked.to_place()
        && let Err(error) = place(pid, holder)
    {
        return Err(forked.abandon(error));
    }
    forked.ready()
}

/// An init just forked: with `placed_by_crid` it waits, before it joins
/// anything, until [`ForkedInit::ready`] opens its gate. The monitor goes
/// on with other work while crid places it.
pub struct ForkedInit {
    spawned: Spawned,
    gate: Option<File>,
    holder: Option<Holder>,
    start: File,
    /// Seen `Ready` (set up, waiting for the start byte).
    is_ready: bool,
    /// A report line not yet whole.
    partial: Vec<u8>,
    /// The reports broke off or made no sense: kill before reaping.
    untrusted: bool,
}

/// The first half of [`create`]: forks the init (and, for a placed one, its
/// holder) without waiting for anything.
pub fn fork_init(
    create: &ContainerCreate,
    spec: &Spec,
    env: &[CString],
    stdio: impl Into<InitStdio>,
) -> io::Result<ForkedInit> {
    let joins = Joins::for_create(spec, &create.cgroup_view)?;
    let (stdio, console) = match stdio.into() {
        InitStdio::Given(stdio) => (stdio, None),
        InitStdio::Terminal(console) => (ChildStdio::null()?, Some(console)),
    };
    let (start_read, start_write) = pipe2(OFlag::O_CLOEXEC)?;
    let (gate, holder) = match create.placed_by_crid {
        true => (
            Some(pipe2(OFlag::O_CLOEXEC)?),
            Some(fork_holder(&create.bundle)?),
        ),
        false => (None, None),
    };
    let spawned = match fork_reporting(joins.fork)? {
        Reporting::Child(mut report) => {
            drop(start_write);
            if let Some((gate_read, gate_write)) = gate {
                drop(gate_write);
                let mut byte = [0u8; 1];
                if !matches!(File::from(gate_read).read(&mut byte), Ok(1)) {
                    report.fail(&io::Error::other("crid did not place the init"));
                }
            }
            let mut keep = joins.fds();
            keep.extend([report.raw_fd(), start_read.as_raw_fd()]);
            keep.extend(console.as_ref().map(AsRawFd::as_raw_fd));
            // The mount namespace is new (unshared before the fork); the
            // rootfs is set up in it by the init itself.
            let entered = enter(&keep, stdio, &create.cgroup_procs, &joins)
                .and_then(|()| fork_into_pid_namespace(&joins, None));
            drop(joins);
            match entered {
                Ok(Forked::Child) => {
                    let start = File::from(start_read);
                    let error = init(create, spec, env, console, start, &mut report);
                    report.fail(&error)
                }
                Ok(Forked::Parent(pid)) => report.intermediate_done(pid),
                Err(error) => report.fail(&error),
            }
        }
        Reporting::Parent(spawned) => spawned,
    };
    drop((start_read, console));
    Ok(ForkedInit {
        spawned,
        gate: gate.map(|(gate_read, gate_write)| {
            drop(gate_read);
            File::from(gate_write)
        }),
        holder,
        start: File::from(start_write),
        is_ready: false,
        partial: Vec::new(),
        untrusted: false,
    })
}

impl ForkedInit {
    /// Readable when the init (or its intermediate) has reported.
    pub fn reports_fd(&self) -> BorrowedFd<'_> {
        self.spawned.reports.fd()
    }

    /// Lets a placed init go on (a no-op for one that places itself).
    pub fn release(&mut self) -> io::Result<()> {
        match self.gate.take() {
            Some(mut gate) => gate.write_all(b"p"),
            None => Ok(()),
        }
    }

    /// Takes what the init reported, without blocking (call when
    /// [`ForkedInit::reports_fd`] is readable): true once it is ready,
    /// an error once it failed (then [`ForkedInit::abandon`] it).
    pub fn progress(&mut self) -> io::Result<bool> {
        let reports = match self.spawned.reports.take_available(&mut self.partial) {
            Ok(Some(reports)) => reports,
            Ok(None) => {
                return Err(io::Error::other(
                    "the container init exited before it was ready",
                ));
            }
            Err(error) => {
                self.untrusted = true;
                return Err(error);
            }
        };
        for report in reports {
            match report {
                Report::Pid(grandchild) => self.spawned.intermediate_done(grandchild),
                Report::Ready => self.is_ready = true,
                Report::Warning(_) => {}
                Report::Error(message) | Report::SysctlRefused { message, .. } => {
                    return Err(io::Error::other(message));
                }
            }
        }
        Ok(self.is_ready && self.spawned.pid.is_some())
    }

    /// The init, once [`ForkedInit::progress`] said it is ready.
    pub fn into_created(self) -> CreatedInit {
        CreatedInit {
            pid: self.spawned.pid.unwrap_or(self.spawned.child),
            holder: self.holder,
            start: self.start,
            reports: self.spawned.reports,
        }
    }

    /// What crid must put into the container's cgroup before the init
    /// goes on: the init's pid and its holder's. None if the init places
    /// itself.
    pub fn to_place(&self) -> Option<(Pid, Pid)> {
        let holder = self.holder.as_ref()?;
        self.gate.as_ref()?;
        Some((self.spawned.child, holder.pid))
    }

    /// Lets a placed init go on, and waits until it is ready (its rootfs
    /// set up) or has failed; on failure nothing of it is left.
    pub fn ready(mut self) -> io::Result<CreatedInit> {
        if let Err(error) = self.release() {
            return Err(self.abandon(error));
        }
        loop {
            let mut fds = [nix::poll::PollFd::new(
                self.reports_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(error) => {
                    self.untrusted = true;
                    return Err(self.abandon(error.into()));
                }
            }
            match self.progress() {
                Ok(true) => return Ok(self.into_created()),
                Ok(false) => {}
                Err(error) => return Err(self.abandon(error)),
            }
        }
    }

    /// Like [`ForkedInit::abandon`], but kills what of the init runs first
    /// (a create removed half-way, or the pod going away) instead of
    /// waiting for it to fail on its own.
    pub fn kill(mut self, error: io::Error) -> io::Error {
        self.untrusted = true;
        self.abandon(error)
    }

    /// The create ends (placement failed, the init failed, the pod goes):
    /// an unopened gate or the start pipe closes, the init exits and is
    /// reaped (the holder with it); returns `error`.
    pub fn abandon(self, error: io::Error) -> io::Error {
        let ForkedInit {
            spawned,
            gate,
            holder,
            start,
            untrusted,
            ..
        } = self;
        drop((gate, start));
        let error = spawned.reap(error, untrusted);
        drop(holder);
        error
    }
}

impl CreatedInit {
    /// Tells the init to exec. Ok once it has exec'd (its report pipe is
    /// O_CLOEXEC, so EOF means success); otherwise the init's message,
    /// worded as runc's (`exec: "x": executable file not found in $PATH`).
    /// A failed init exits with 127; reaping it is the caller's job, as for
    /// any exit.
    pub fn start(self) -> io::Result<()> {
        let CreatedInit {
            pid: _,
            holder: _,
            mut start,
            mut reports,
        } = self;
        start.write_all(b"s")?;
        drop(start);
        loop {
            match reports.next()? {
                None => return Ok(()),
                Some(Report::Error(message)) => return Err(io::Error::other(message)),
                // Logged by next().
                Some(Report::Warning(_)) => {}
                Some(other) => {
                    return Err(io::Error::other(format!(
                        "the container init reported {other:?} at start"
                    )));
                }
            }
        }
    }
}

/// Runs `args` in the running container whose init is `init_pid`: joins its
/// namespaces (those that differ from the monitor's) and `cgroup_procs`,
/// then takes user, groups, cwd, capabilities and no_new_privs from
/// `spec.process` and the container's `env` ([`environment`]), as the init
/// did. Returns the exec process's pid (a child
/// or, after a PID namespace join, a grandchild of the sub-reaper monitor)
/// once it has exec'd, or why it could not.
pub fn exec(
    init_pid: Pid,
    spec: &Spec,
    env: &[CString],
    args: &[String],
    cgroup_procs: &[PathBuf],
    stdio: ChildStdio,
) -> io::Result<Pid> {
    if args.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "exec: no command given",
        ));
    }
    let joins = Joins::for_exec(init_pid)?;
    match fork_reporting(joins.fork)? {
        Reporting::Child(mut report) => {
            // Counted for the fork after the mount join, when this
            // process's /proc entry is out of sight.
            let tasks = match File::open("/proc/self/task") {
                Ok(tasks) => tasks,
                Err(error) => report.fail(&error),
            };
            let mut keep = joins.fds();
            keep.extend([report.raw_fd(), tasks.as_raw_fd()]);
            // Everything but the exec happens before the fork into the
            // container's PID namespace, so the process that appears there
            // never holds more than the container's credentials, nor the
            // host's root (see process::finish).
            let entered = enter(&keep, stdio, cgroup_procs, &joins)
                .and_then(|()| process::apply_oom_score_adj(spec, &mut report))
                .and_then(|()| joins.join_mount())
                .and_then(|()| process::finish(spec))
                .and_then(|finished| {
                    fork_into_pid_namespace(&joins, Some(&tasks)).map(|f| (f, finished))
                });
            drop((joins, tasks));
            match entered {
                Ok((Forked::Child, finished)) => {
                    match become_session_leader()
                        .and_then(|()| process::exec(finished, env, args, &report))
                    {
                        Err(error) => report.fail(&error),
                        Ok(never) => match never {},
                    }
                }
                Ok((Forked::Parent(pid), _)) => report.intermediate_done(pid),
                Err(error) => report.fail(&error),
            }
        }
        Reporting::Parent(spawned) => spawned.until_closed(),
    }
}

/// The namespaces a child enters, opened by the monitor before it forks
/// (so a missing pinned namespace fails before any process exists).
struct Joins {
    /// The pod's user namespace: entered before all the others, which
    /// belong to it (see [`crate::userns`]).
    user: Option<File>,
    /// setns in this order (mount last: after it, host paths are gone).
    files: Vec<(File, CloneFlags, String)>,
    unshare: CloneFlags,
    /// A PID namespace is joined or created: fork once more.
    fork: bool,
}

impl Joins {
    fn for_create(spec: &Spec, view: &CgroupView) -> io::Result<Joins> {
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.namespaces().as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut joins = Joins {
            user: None,
            files: Vec::new(),
            unshare: CloneFlags::empty(),
            fork: false,
        };
        for namespace in namespaces {
            let typ = namespace.typ();
            if typ == LinuxNamespaceType::User {
                // Only the pod's, pinned: a new one would need its maps
                // written from outside.
                let path = namespace.path().as_ref().ok_or_else(|| {
                    unsupported("a user namespace of the container's own is not supported".into())
                })?;
                joins.user = Some(context(File::open(path), || {
                    format!("opening user namespace {}", path.display())
                })?);
                continue;
            }
            let flag = match typ {
                LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
                LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
                LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
                LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
                LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
                LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
                LinuxNamespaceType::User | LinuxNamespaceType::Time => {
                    return Err(unsupported(format!("{typ:?} namespaces are not supported")));
                }
            };
            joins.fork |= typ == LinuxNamespaceType::Pid;
            match namespace.path() {
                // The rootfs is set up in a new mount namespace; joining one
                // would pivot someone else's root.
                Some(_) if typ == LinuxNamespaceType::Mount => {
                    return Err(unsupported(
                        "joining an existing mount namespace is not supported".into(),
                    ));
                }
                Some(path) => joins.join(path, flag, &format!("{typ:?}"))?,
                None => joins.unshare |= flag,
            }
        }
        if !joins.unshare.contains(CloneFlags::CLONE_NEWNS) {
            return Err(unsupported(
                "the spec must ask for a new mount namespace".into(),
            ));
        }
        // v2: a cgroup namespace rooted at the container's own cgroup, so
        // the cgroup2 mount shows only that.
        let joins_cgroup = joins
            .files
            .iter()
            .any(|(_, flag, _)| *flag == CloneFlags::CLONE_NEWCGROUP);
        if *view == CgroupView::V2 && !joins_cgroup {
            joins.unshare |= CloneFlags::CLONE_NEWCGROUP;
        }
        Ok(joins)
    }

    /// The init's namespaces that differ from the monitor's own.
    fn for_exec(init: Pid) -> io::Result<Joins> {
        let mut joins = Joins {
            user: None,
            files: Vec::new(),
            unshare: CloneFlags::empty(),
            fork: false,
        };
        for (name, flag) in [
            ("user", CloneFlags::CLONE_NEWUSER),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("net", CloneFlags::CLONE_NEWNET),
            ("pid", CloneFlags::CLONE_NEWPID),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let theirs = PathBuf::from(format!("/proc/{init}/ns/{name}"));
            let ours = Path::new("/proc/self/ns").join(name);
            let (theirs_meta, ours_meta) = (
                context(std::fs::metadata(&theirs), || {
                    format!("container init {init}: {}", theirs.display())
                })?,
                std::fs::metadata(&ours)?,
            );
            if (theirs_meta.dev(), theirs_meta.ino()) != (ours_meta.dev(), ours_meta.ino()) {
                joins.fork |= flag == CloneFlags::CLONE_NEWPID;
                if flag == CloneFlags::CLONE_NEWUSER {
                    joins.user = Some(context(File::open(&theirs), || {
                        format!("opening user namespace {}", theirs.display())
                    })?);
                } else {
                    joins.join(&theirs, flag, name)?;
                }
            }
        }
        Ok(joins)
    }

    fn join(&mut self, path: &Path, flag: CloneFlags, name: &str) -> io::Result<()> {
        let file = context(File::open(path), || {
            format!("opening {name} namespace {}", path.display())
        })?;
        let entry = (file, flag, format!("{name} namespace {}", path.display()));
        // Mount last: once in it, the other paths may not resolve.
        if flag == CloneFlags::CLONE_NEWNS {
            self.files.push(entry);
        } else {
            self.files.insert(0, entry);
        }
        Ok(())
    }

    /// Joins the mount namespace, if one is to be joined: last, because
    /// the other namespaces' paths may not resolve from inside it.
    fn join_mount(&self) -> io::Result<()> {
        for (file, flag, name) in self.files.iter().filter(|(_, flag, _)| is_mount(flag)) {
            context(setns(file.as_fd(), *flag), || format!("joining {name}"))?;
        }
        Ok(())
    }

    fn fds(&self) -> Vec<RawFd> {
        self.files
            .iter()
            .map(|(file, ..)| file.as_raw_fd())
            .chain(self.user.as_ref().map(AsRawFd::as_raw_fd))
            .collect()
    }
}

fn unsupported(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, message)
}

/// In the forked child: drop every inherited fd but `keep`, take the
/// container's stdio, join the cgroup (so every later child is born in
/// it) and the namespaces but a mount namespace, and unshare the new ones.
fn enter(
    keep: &[RawFd],
    stdio: ChildStdio,
    cgroup_procs: &[PathBuf],
    joins: &Joins,
) -> io::Result<()> {
    // Set once for the whole monitor (see monitor::launch); checked here,
    // before any container namespace is joined, because a dumpable fork in
    // there is the CVE-2019-5736 hole.
    if context(nix::sys::prctl::get_dumpable(), || "PR_GET_DUMPABLE".into())? {
        return Err(io::Error::other(
            "refusing to enter a container while dumpable",
        ));
    }
    let mut keep = keep.to_vec();
    keep.extend([&stdio.stdin, &stdio.stdout, &stdio.stderr].map(|fd| fd.as_raw_fd()));
    close_inherited_fds(&keep)?;
    take_stdio(stdio)?;
    for procs in cgroup_procs {
        // "0" is the writer itself.
        context(std::fs::write(procs, "0"), || {
            format!("joining cgroup {}", procs.display())
        })?;
    }
    if let Some(user) = &joins.user {
        crate::userns::join(user.as_fd())?;
    }
    for (file, flag, name) in joins.files.iter().filter(|(_, flag, _)| !is_mount(flag)) {
        context(setns(file.as_fd(), *flag), || format!("joining {name}"))?;
    }
    context(unshare(joins.unshare), || {
        format!("unshare({:?})", joins.unshare)
    })
}

/// A joined PID namespace holds only children: fork once more, and the
/// child joins the mount namespace unless that was joined already. Its
/// /proc belongs to the container's PID namespace, where the intermediate
/// has no /proc/self, so a fork after the mount join counts this
/// process's threads in `tasks`, its /proc/self/task opened before.
fn fork_into_pid_namespace(joins: &Joins, tasks: Option<&File>) -> io::Result<Forked> {
    let forked = match (joins.fork, tasks) {
        (false, _) => Forked::Child,
        (true, None) => fork_single_threaded()?,
        (true, Some(tasks)) => crate::sys::fork_single_threaded_counting(tasks)?,
    };
    if let (Forked::Child, None) = (&forked, tasks) {
        joins.join_mount()?;
    }
    Ok(forked)
}

fn is_mount(flag: &CloneFlags) -> bool {
    *flag == CloneFlags::CLONE_NEWNS
}

/// dup2s the container's stdio onto 0, 1 and 2. Each is first copied above
/// 2 (std's try_clone is F_DUPFD_CLOEXEC from 3), so one given as 0..=2
/// cannot be overwritten by another's dup2.
fn take_stdio(stdio: ChildStdio) -> io::Result<()> {
    let (stdin, stdout, stderr) = (
        stdio.stdin.try_clone()?,
        stdio.stdout.try_clone()?,
        stdio.stderr.try_clone()?,
    );
    drop(stdio);
    dup2_stdin(&stdin)?;
    dup2_stdout(&stdout)?;
    dup2_stderr(&stderr)?;
    Ok(())
}

/// Makes the pty of [`InitStdio::Terminal`] in the container's devpts
/// (mounted by now, beneath the new root), sends its master on `console`
/// and takes its slave as stdio. The init keeps no master: the container
/// must not read its own terminal's input side.
fn take_terminal(console: OwnedFd) -> io::Result<()> {
    let root = context(
        nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ),
        || "opening the container's root".into(),
    )?;
    let (master, slave) = crate::pty::open_beneath(root.as_fd())?;
    context(
        runtime::sys::send_with_fds(console.as_fd(), b"t", &[master]),
        || "sending the terminal to the monitor".into(),
    )?;
    take_stdio(ChildStdio {
        stdin: slave.try_clone()?,
        stdout: slave.try_clone()?,
        stderr: slave,
    })
}

/// A new session, so signals to the monitor's group miss it; with a tty
/// on stdin, that tty becomes its controlling terminal.
fn become_session_leader() -> io::Result<()> {
    context(nix::unistd::setsid(), || "setsid".into())?;
    let stdin = io::stdin();
    if nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
        context(crate::sys::set_controlling_terminal(stdin.as_fd()), || {
            "making the tty the controlling terminal".into()
        })?;
    }
    Ok(())
}

/// The init proper (the only process in its new world): rootfs and the
/// container's credentials, then `Ready`, then wait for the start byte,
/// then exec. Returns only on failure.
fn init(
    create: &ContainerCreate,
    spec: &Spec,
    env: &[CString],
    console: Option<OwnedFd>,
    mut start: File,
    report: &mut Reporter,
) -> io::Error {
    let ready = rootfs::prepare(&create.bundle, spec, &create.cgroup_view)
        .and_then(|()| console.map_or(Ok(()), take_terminal))
        .and_then(|()| become_session_leader())
        .and_then(|()| set_hostname(spec));
    let finished = match ready
        .and_then(|()| process::apply_oom_score_adj(spec, report))
        .and_then(|()| process::finish(spec))
    {
        Ok(finished) => finished,
        Err(error) => return error,
    };
    report.send(&Report::Ready);
    let mut byte = [0u8; 1];
    match start.read(&mut byte) {
        Ok(1) => {}
        // The monitor dropped the container before starting it.
        _ => exit_child(0),
    }
    drop(start);
    let args = spec
        .process()
        .as_ref()
        .and_then(|process| process.args().clone())
        .unwrap_or_default();
    match process::exec(finished, env, &args, report) {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

/// The pod's UTS namespace already has the pod's hostname; only a new UTS
/// namespace of the container's own gets the spec's.
fn set_hostname(spec: &Spec) -> io::Result<()> {
    let new_uts = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().as_ref())
        .is_some_and(|namespaces| {
            namespaces
                .iter()
                .any(|ns| ns.typ() == LinuxNamespaceType::Uts && ns.path().is_none())
        });
    if let Some(hostname) = spec.hostname().as_deref().filter(|_| new_uts) {
        context(nix::unistd::sethostname(hostname), || {
            format!("sethostname {hostname:?}")
        })?;
    }
    if spec.domainname().as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported("domainname is not supported".into()));
    }
    Ok(())
}
