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

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most content bytes one record carries (containerd's default
/// `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// Log files are readable by the node's log readers' group, not by all.
const LOG_MODE: u32 = 0o640;

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
    path: PathBuf,
    file: File,
    /// Never longer than [`MAX_LINE`]: longer content is written as `P`
    /// records at once, so a line without a newline cannot grow memory.
    pending: [Vec<u8>; 2],
    /// Reused for every record so writing allocates only once.
    record: Vec<u8>,
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_MODE)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open container log {}: {e}", path.display()),
            )
        })
}

impl CriLog {
    /// Opens (creating if missing) the log at `path` for appending. The
    /// parent directory is kubelet's to create; a missing one is an error
    /// naming the path.
    pub fn open(path: &Path) -> io::Result<CriLog> {
        Ok(CriLog {
            path: path.to_path_buf(),
            file: open_log(path)?,
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

    /// Opens the path again after kubelet renamed the file (rotation).
    /// Unfinished lines stay in memory and go to the new file. On error the
    /// old file is kept.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_log(&self.path)?;
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

    fn open(dir: &tempfile::TempDir) -> (CriLog, PathBuf) {
        let path = dir.path().join("0.log");
        (CriLog::open(&path).unwrap(), path)
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
    fn open_appends_with_mode_0640_and_needs_the_parent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, format!("{TS} stdout F before\n")).unwrap();
        let mut log = CriLog::open(&path).unwrap();
        log.write(Stream::Stdout, b"after\n", now()).unwrap();
        assert_eq!(
            records(&path),
            vec![rec("stdout", "F", "before"), rec("stdout", "F", "after")]
        );
        let fresh = dir.path().join("new.log");
        CriLog::open(&fresh).unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777 & !0o022, 0o640 & !0o022, "{mode:o}");
        assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");

        let missing = dir.path().join("no-such-dir").join("0.log");
        let e = CriLog::open(&missing).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-dir/0.log"), "{e}");
    }

    #[test]
    fn reopen_after_rotation_writes_the_new_file_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = open(&dir);
        log.write(Stream::Stdout, b"one\ntw", now()).unwrap();
        let rotated = dir.path().join("0.log.20261123-134501");
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
