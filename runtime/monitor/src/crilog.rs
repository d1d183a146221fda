//! The container log file in kubelet's CRI log format.
//!
//! Every record is `<RFC3339Nano UTC> <stdout|stderr> <F|P> <content>\n`.
//! `F` ends a line (its content is the line without the newline); `P` is
//! a piece of a longer line that continues in the next record of the same
//! stream. crid-monitor feeds the bytes of a container's stdout and stderr
//! (or its pty) in whatever chunks the pipes deliver; [`CriLog`] keeps the
//! unfinished line of each stream, so the two streams never mix inside a
//! line. Framing follows containerd's CRI plugin:
//! * a line longer than [`MAX_LINE`] bytes becomes `P` records of exactly
//!   that size and a last `F` record with the rest;
//! * a `\r` right before the `\n` is dropped (Go's `ReadLine`, which
//!   containerd uses, does so: tty output ends lines with `\r\n`);
//! * at the end of a stream, an unfinished line is written as `F`.
//!
//! Each record is written with one `write(2)` on a file opened `O_APPEND`,
//! so a reader following the file (kubelet, `crictl logs -f`) never sees
//! half a record and kubelet's rotation (rename, then [`CriLog::reopen`])
//! loses nothing.
//!
//! The monitor runs as root and the file's path comes from a request, so
//! the file is opened *beneath* the pod's log directory: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` from a
//! descriptor of that directory, at create and at every reopen. No `..`,
//! absolute path or symlink (to a directory on the way or as the file
//! itself) can make it create or append to a file anywhere else.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use proto::monitor::LogFile;

/// The most content bytes one record carries (containerd's default
/// `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// Log files are readable by the node's log readers' group, not by all.
const LOG_MODE: u32 = 0o640;
/// Directories made beneath the log directory (kubelet makes them 0755).
const DIR_MODE: u32 = 0o755;

/// Which output of the container a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The stream's name in a record.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Whether a record ends its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Full,
    Partial,
}

/// One container's log file and the unfinished line of each stream.
#[derive(Debug)]
pub struct CriLog {
    location: LogFile,
    /// `location` joined, for messages.
    path: PathBuf,
    file: File,
    /// Never longer than [`MAX_LINE`]: longer content is written as `P`
    /// records at once, so a line without a newline cannot grow memory.
    pending: [Vec<u8>; 2],
    /// Reused for every record so writing allocates only once.
    record: Vec<u8>,
}

/// Confined to the descriptor's directory, following no symlink at all:
/// kubelet's layout has none beneath the log directory.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// `relative`'s components, refusing anything but plain names (the kernel
/// would refuse them too; this names the problem).
fn names(location: &LogFile) -> io::Result<Vec<&std::ffi::OsStr>> {
    let mut names = Vec::new();
    for component in location.relative.components() {
        match component {
            Component::Normal(name) => names.push(name),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "container log {}: must be a relative path without '..'",
                        location.relative.display()
                    ),
                ));
            }
        }
    }
    if names.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "container log: empty path",
        ));
    }
    Ok(names)
}

fn directory_error(location: &LogFile, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("log directory {}: {e}", location.directory.display()),
    )
}

/// The log directory itself, as given: it is the pod's (absolute, checked
/// by RunPodSandbox); only what lies beneath it comes from the container's
/// request.
fn open_directory(location: &LogFile) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    open(&location.directory, flags, Mode::empty()).map_err(|e| directory_error(location, e.into()))
}

fn open_error(location: &LogFile, e: Errno) -> io::Error {
    let why = match e {
        Errno::ELOOP | Errno::EXDEV => ": a symlink or a path out of the log directory is refused",
        Errno::ENXIO => ": not a regular file",
        _ => "",
    };
    io::Error::new(
        io::Error::from(e).kind(),
        format!(
            "cannot open container log {} beneath {}: {e}{why}",
            location.relative.display(),
            location.directory.display()
        ),
    )
}

/// Creates the directories of the file that are missing (kubelet normally
/// has made them). The log directory is made as given, like containerd
/// does (clients other than kubelet rely on it); beneath it one name at a
/// time: `mkdirat` does not follow a symlink it finds as the name, and
/// each level is entered with the same resolution as the file.
fn make_parents(location: &LogFile) -> io::Result<()> {
    let names = names(location)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&location.directory)
        .map_err(|e| directory_error(location, e))?;
    let mut dir = open_directory(location)?;
    for name in &names[..names.len() - 1] {
        match mkdirat(&dir, *name, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(open_error(location, e)),
        }
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(beneath());
        dir = openat2(&dir, *name, how).map_err(|e| open_error(location, e))?;
    }
    Ok(())
}

/// Opens (creating) the file for appending, resolved beneath the log
/// directory. Only a regular file: a FIFO there would block the monitor's
/// one thread (hence `O_NONBLOCK`, which regular files ignore), a device
/// would take the output elsewhere.
fn open_log(location: &LogFile) -> io::Result<File> {
    names(location)?;
    let dir = open_directory(location)?;
    let flags = OFlag::O_WRONLY
        | OFlag::O_APPEND
        | OFlag::O_CREAT
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK;
    let how = OpenHow::new()
        .flags(flags)
        .mode(Mode::from_bits_truncate(LOG_MODE))
        .resolve(beneath());
    let fd = openat2(&dir, &location.relative, how).map_err(|e| open_error(location, e))?;
    let stat = fstat(&fd).map_err(|e| open_error(location, e))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(open_error(location, Errno::ENXIO));
    }
    Ok(File::from(fd))
}

impl CriLog {
    /// Opens (creating if missing) the log file for appending, and the
    /// directories it is in.
    pub fn open(location: &LogFile) -> io::Result<CriLog> {
        make_parents(location)?;
        Ok(CriLog {
            location: location.clone(),
            path: location.path(),
            file: open_log(location)?,
            pending: [Vec::new(), Vec::new()],
            record: Vec::with_capacity(MAX_LINE + 64),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the complete records in `data` (a chunk of `stream`) and
    /// keeps the rest of an unfinished line for the next chunk.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: SystemTime) -> io::Result<()> {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = (&rest[..nl], &rest[nl + 1..]);
            rest = after;
            let mut pending = std::mem::take(&mut self.pending[stream.index()]);
            let result = if pending.is_empty() {
                self.write_line(stream, line, now)
            } else {
                pending.extend_from_slice(line);
                let r = self.write_line(stream, &pending, now);
                pending.clear();
                r
            };
            // Give the buffer back (cleared) so its allocation is reused.
            self.pending[stream.index()] = pending;
            result?;
        }
        self.pending[stream.index()].extend_from_slice(rest);
        self.flush_overlong(stream, now)
    }

    /// The stream ended: what is left of its last line becomes an `F`
    /// record.
    pub fn finish(&mut self, stream: Stream, now: SystemTime) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if pending.is_empty() {
            return Ok(());
        }
        self.write_record(stream, Tag::Full, &pending, now)
    }

    /// Opens the file again after kubelet renamed it (rotation), resolved
    /// as at [`CriLog::open`] (a directory swapped for a symlink meanwhile
    /// is refused); directories are not made again. Unfinished lines stay
    /// in memory and go to the new file. On error the old file is kept.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_log(&self.location)?;
        Ok(())
    }

    /// A complete line: `P` records of [`MAX_LINE`] while more than that
    /// is left, then `F` with the rest.
    fn write_line(&mut self, stream: Stream, line: &[u8], now: SystemTime) -> io::Result<()> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut rest = line;
        while rest.len() > MAX_LINE {
            let (piece, after) = rest.split_at(MAX_LINE);
            self.write_record(stream, Tag::Partial, piece, now)?;
            rest = after;
        }
        self.write_record(stream, Tag::Full, rest, now)
    }

    /// Writes `P` records while the unfinished line is longer than
    /// [`MAX_LINE`]; exactly [`MAX_LINE`] stays, since a newline may still
    /// make it an `F`.
    fn flush_overlong(&mut self, stream: Stream, now: SystemTime) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        let mut start = 0;
        let mut result = Ok(());
        while pending.len() - start > MAX_LINE {
            result =
                self.write_record(stream, Tag::Partial, &pending[start..start + MAX_LINE], now);
            if result.is_err() {
                break;
            }
            start += MAX_LINE;
        }
        let mut pending = pending;
        pending.drain(..start);
        self.pending[stream.index()] = pending;
        result
    }

    fn write_record(
        &mut self,
        stream: Stream,
        tag: Tag,
        content: &[u8],
        now: SystemTime,
    ) -> io::Result<()> {
        self.record.clear();
        push_timestamp(&mut self.record, now);
        self.record.push(b' ');
        self.record.extend_from_slice(stream.as_str().as_bytes());
        self.record.extend_from_slice(match tag {
            Tag::Full => b" F ",
            Tag::Partial => b" P ",
        });
        self.record.extend_from_slice(content);
        self.record.push(b'\n');
        // One write(2) for the whole record on an O_APPEND file; write_all
        // only loops on a short write, which a regular file gives only
        // when it is out of space.
        self.file.write_all(&self.record).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write container log {}: {e}", self.path.display()),
            )
        })
    }
}

/// `t` as RFC 3339 in UTC with exactly nine fractional digits, e.g.
/// `2026-11-23T13:45:01.123456789Z` (what kubelet parses).
pub fn format_timestamp(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(30);
    push_timestamp(&mut out, t);
    // Only ASCII digits and separators were pushed.
    String::from_utf8_lossy(&out).into_owned()
}

fn push_timestamp(out: &mut Vec<u8>, t: SystemTime) {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).map_or(i64::MIN, |s| -s);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs.saturating_sub(1), 1_000_000_000 - n),
            }
        }
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    );
}

/// The proleptic Gregorian (year, month, day) of a count of days since
/// 1970-01-01, by counting whole 400-year eras (146097 days each) and
/// then years within the era in a calendar that starts on March 1st, so
/// that the leap day is the era-year's last day.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // In range by construction: month 1..=12, day 1..=31.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    const TS: &str = "2026-11-23T13:45:01.123456789Z";

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// 2026-11-23T13:45:01.123456789Z
    fn now() -> SystemTime {
        at(1_795_441_501, 123_456_789)
    }

    fn beneath(dir: &Path, relative: &str) -> LogFile {
        LogFile {
            directory: dir.to_path_buf(),
            relative: relative.into(),
        }
    }

    fn open(dir: &tempfile::TempDir) -> (CriLog, PathBuf) {
        let location = beneath(dir.path(), "0.log");
        (CriLog::open(&location).unwrap(), location.path())
    }

    /// Every entry under `dir`, recursively (what a refused open must not
    /// have added).
    fn tree(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.clone());
            if path.is_dir() && !path.is_symlink() {
                out.extend(tree(&path));
            }
        }
        out.sort();
        out
    }

    /// The file's records as (stream, tag, content), checking each
    /// timestamp.
    fn records(path: &Path) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|line| {
                let mut parts = line.splitn(4, ' ');
                let ts = parts.next().unwrap();
                assert_eq!(ts, TS);
                let stream = parts.next().unwrap().to_owned();
                let tag = parts.next().unwrap().to_owned();
                let content = parts.next().unwrap().to_owned();
                (stream, tag, content)
            })
            .collect()
    }

    fn rec(stream: &str, tag: &str, content: &str) -> (String, String, String) {
        (stream.into(), tag.into(), content.into())
    }

    #[test]
    fn full_lines_and_several_in_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        log.write(Stream::Stdout, b"hello\n", now()).unwrap();
        log.write(Stream::Stdout, b"a\nb b\n\nc\n", now()).unwrap();
        assert_eq!(
            records(&path),
            vec![
                rec("stdout", "F", "hello"),
                rec("stdout", "F", "a"),
                rec("stdout", "F", "b b"),
                rec("stdout", "F", ""),
                rec("stdout", "F", "c"),
            ]
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("{TS} stdout F hello\n")));
        assert!(text.contains(&format!("{TS} stdout F \n")), "empty line");
    }

    #[test]
    fn a_line_split_across_chunks_is_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        log.write(Stream::Stdout, b"hel", now()).unwrap();
        assert_eq!(records(&path), vec![], "nothing until the line ends");
        log.write(Stream::Stdout, b"", now()).unwrap();
        log.write(Stream::Stdout, b"lo wor", now()).unwrap();
        log.write(Stream::Stdout, b"ld\nnext", now()).unwrap();
        assert_eq!(records(&path), vec![rec("stdout", "F", "hello world")]);
        log.write(Stream::Stdout, b"\n", now()).unwrap();
        assert_eq!(records(&path)[1], rec("stdout", "F", "next"));
    }

    #[test]
    fn crlf_line_ends_drop_the_cr() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        log.write(Stream::Stdout, b"tty\r\nmid\rdle\r", now())
            .unwrap();
        log.write(Stream::Stdout, b"\n", now()).unwrap();
        assert_eq!(
            records(&path),
            vec![rec("stdout", "F", "tty"), rec("stdout", "F", "mid\rdle")]
        );
    }

    fn sizes(path: &Path) -> Vec<(String, usize)> {
        records(path)
            .into_iter()
            .map(|(_, tag, content)| (tag, content.len()))
            .collect()
    }

    #[test]
    fn long_lines_become_partial_records_of_max_line() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        let mut line = vec![b'x'; 40 * 1024];
        line.push(b'\n');
        log.write(Stream::Stdout, &line, now()).unwrap();
        assert_eq!(
            sizes(&path),
            vec![
                ("P".into(), MAX_LINE),
                ("P".into(), MAX_LINE),
                ("F".into(), 8 * 1024)
            ]
        );
    }

    #[test]
    fn long_lines_in_small_chunks_and_exact_multiples() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        // 40 KiB fed 1000 bytes at a time: P records as soon as more than
        // MAX_LINE is pending, so memory stays bounded.
        let line = vec![b'y'; 40 * 1024];
        for chunk in line.chunks(1000) {
            log.write(Stream::Stderr, chunk, now()).unwrap();
        }
        assert_eq!(
            sizes(&path),
            vec![("P".into(), MAX_LINE), ("P".into(), MAX_LINE)]
        );
        assert!(log.pending[Stream::Stderr.index()].len() <= MAX_LINE);
        log.write(Stream::Stderr, b"\n", now()).unwrap();
        assert_eq!(sizes(&path)[2], ("F".into(), 8 * 1024));

        // A line of exactly 2 * MAX_LINE: P then F, no empty record.
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        log.write(Stream::Stdout, &vec![b'z'; 2 * MAX_LINE], now())
            .unwrap();
        log.write(Stream::Stdout, b"\n", now()).unwrap();
        assert_eq!(
            sizes(&path),
            vec![("P".into(), MAX_LINE), ("F".into(), MAX_LINE)]
        );
    }

    #[test]
    fn end_of_stream_writes_the_unfinished_line_as_full() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        log.write(Stream::Stdout, b"done\nno newline", now())
            .unwrap();
        log.finish(Stream::Stdout, now()).unwrap();
        // Nothing pending: nothing written; finishing twice is harmless.
        log.finish(Stream::Stdout, now()).unwrap();
        log.finish(Stream::Stderr, now()).unwrap();
        assert_eq!(
            records(&path),
            vec![rec("stdout", "F", "done"), rec("stdout", "F", "no newline")]
        );
    }

    #[test]
    fn streams_keep_their_own_unfinished_line() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        log.write(Stream::Stdout, b"out-", now()).unwrap();
        log.write(Stream::Stderr, b"err-", now()).unwrap();
        log.write(Stream::Stderr, b"1\nerr-2", now()).unwrap();
        log.write(Stream::Stdout, b"1\n", now()).unwrap();
        log.finish(Stream::Stderr, now()).unwrap();
        assert_eq!(
            records(&path),
            vec![
                rec("stderr", "F", "err-1"),
                rec("stdout", "F", "out-1"),
                rec("stderr", "F", "err-2"),
            ]
        );
    }

    #[test]
    fn open_appends_with_mode_0640_and_makes_the_dirs_beneath() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, format!("{TS} stdout F before\n")).unwrap();
        let mut log = CriLog::open(&beneath(dir.path(), "c.log")).unwrap();
        log.write(Stream::Stdout, b"after\n", now()).unwrap();
        assert_eq!(
            records(&path),
            vec![rec("stdout", "F", "before"), rec("stdout", "F", "after")]
        );
        assert_eq!(log.path(), path);

        // kubelet's layout, `<name>/<restart>.log`, and deeper: the missing
        // directories are made.
        for relative in ["app/0.log", "a/b/c/1.log"] {
            let log = CriLog::open(&beneath(dir.path(), relative)).unwrap();
            let fresh = dir.path().join(relative);
            assert_eq!(log.path(), fresh);
            let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
            assert_eq!(mode & 0o777 & !0o022, 0o640 & !0o022, "{mode:o}");
            assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");
            assert!(fresh.parent().unwrap().is_dir());
        }

        // A missing log directory is made too (as containerd does); one
        // that is not a directory is an error naming it.
        let missing = dir.path().join("no-such-dir/pod");
        CriLog::open(&beneath(&missing, "app/0.log")).unwrap();
        assert!(missing.join("app/0.log").is_file());
        let file = dir.path().join("c.log");
        let e = CriLog::open(&beneath(&file, "app/0.log")).unwrap_err();
        assert!(e.to_string().contains("log directory"), "{e}");
        assert!(e.to_string().contains("c.log"), "{e}");
    }

    #[test]
    fn paths_out_of_the_directory_are_refused_and_create_nothing() {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(logs.join("real")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, logs.join("app")).unwrap();
        std::os::unix::fs::symlink("../outside", logs.join("rel")).unwrap();
        std::os::unix::fs::symlink(outside.join("f.log"), logs.join("real/0.log")).unwrap();
        std::os::unix::fs::symlink("/proc/self/cwd", logs.join("magic")).unwrap();
        nix::unistd::mkfifo(&logs.join("real/fifo.log"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(logs.join("real/dir.log")).unwrap();
        let before = tree(root.path());
        for relative in [
            // A directory on the way that is a symlink out (absolute or
            // relative), and one to a magic link.
            "app/0.log",
            "app/sub/0.log",
            "rel/0.log",
            "magic/0.log",
            // The file itself a symlink out, or no regular file.
            "real/0.log",
            "real/fifo.log",
            "real/dir.log",
            // Climbing out, or absolute.
            "../outside/0.log",
            "real/../../outside/0.log",
            "..",
            "/tmp/crilog-absolute.log",
            "",
        ] {
            let e = CriLog::open(&beneath(&logs, relative)).unwrap_err();
            assert!(e.to_string().contains("container log"), "{relative:?}: {e}");
        }
        assert_eq!(tree(root.path()), before, "nothing was created");
        assert!(!Path::new("/tmp/crilog-absolute.log").exists());
    }

    #[test]
    fn reopen_after_rotation_writes_the_new_file_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let location = beneath(dir.path(), "app/0.log");
        let mut log = CriLog::open(&location).unwrap();
        let path = location.path();
        log.write(Stream::Stdout, b"one\ntw", now()).unwrap();
        let rotated = dir.path().join("app/0.log.20261123-134501");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().unwrap();
        log.write(Stream::Stdout, b"o\nthree\n", now()).unwrap();
        assert_eq!(records(&rotated), vec![rec("stdout", "F", "one")]);
        assert_eq!(
            records(&path),
            vec![rec("stdout", "F", "two"), rec("stdout", "F", "three")]
        );

        // A failed reopen keeps writing to the old file.
        std::fs::remove_dir_all(dir.path()).unwrap();
        assert!(log.reopen().is_err());
    }

    #[test]
    fn reopen_is_confined_like_open() {
        let root = tempfile::tempdir().unwrap();
        let logs = root.path().join("logs");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let location = beneath(&logs, "app/0.log");
        let mut log = CriLog::open(&location).unwrap();
        log.write(Stream::Stdout, b"kept\nafter-", now()).unwrap();

        // The container's directory swapped for a symlink out, then a
        // rotation: the reopen is refused, nothing appears outside, and
        // the old file keeps the output.
        std::fs::rename(logs.join("app"), logs.join("app.old")).unwrap();
        std::os::unix::fs::symlink(&outside, logs.join("app")).unwrap();
        let e = log.reopen().unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        log.write(Stream::Stdout, b"swap\n", now()).unwrap();
        assert_eq!(tree(&outside), Vec::<PathBuf>::new());
        assert_eq!(
            records(&logs.join("app.old/0.log")),
            vec![rec("stdout", "F", "kept"), rec("stdout", "F", "after-swap")]
        );

        // The file itself swapped for a symlink out: refused too.
        std::fs::remove_file(logs.join("app")).unwrap();
        std::fs::create_dir(logs.join("app")).unwrap();
        std::os::unix::fs::symlink(outside.join("0.log"), logs.join("app/0.log")).unwrap();
        assert!(log.reopen().is_err());
        assert_eq!(tree(&outside), Vec::<PathBuf>::new());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_nine_digits() {
        let table = [
            (at(0, 0), "1970-01-01T00:00:00.000000000Z"),
            (now(), TS),
            (at(1, 5), "1970-01-01T00:00:01.000000005Z"),
            // Leap days and the turn of centuries.
            (at(951_782_400, 0), "2000-02-29T00:00:00.000000000Z"),
            (
                at(951_868_799, 999_999_999),
                "2000-02-29T23:59:59.999999999Z",
            ),
            (at(1_709_164_800, 1_000), "2024-02-29T00:00:00.000001000Z"),
            (at(1_709_251_199, 0), "2024-02-29T23:59:59.000000000Z"),
            (at(1_709_251_200, 0), "2024-03-01T00:00:00.000000000Z"),
            (at(4_107_542_400, 0), "2100-03-01T00:00:00.000000000Z"),
            (at(1_735_689_599, 0), "2024-12-31T23:59:59.000000000Z"),
            (at(1_735_689_600, 0), "2025-01-01T00:00:00.000000000Z"),
        ];
        for (t, want) in table {
            assert_eq!(format_timestamp(t), want);
        }
        // Before the epoch (a badly set clock): still a valid timestamp.
        let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
        assert_eq!(format_timestamp(before), "1969-12-31T23:59:58.750000000Z");
        let before = UNIX_EPOCH - Duration::from_secs(86_400 * 365);
        assert_eq!(format_timestamp(before), "1969-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn civil_dates_round_trip_day_by_day() {
        // Every day from 1900 to 2200 is the day after the one before.
        let mut prev = civil_from_days(-25_567);
        assert_eq!(prev, (1900, 1, 1));
        for days in -25_566..84_000 {
            let (y, m, d) = civil_from_days(days);
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            let next_of_prev = if prev.2 < month_len[(prev.1 - 1) as usize] {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!((y, m, d), next_of_prev, "day {days}");
            prev = (y, m, d);
        }
    }
}
