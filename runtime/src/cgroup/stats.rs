//! What a pod's or a container's cgroup has used: CPU, memory, pids, block
//! I/O, its processes' open files and (on v2) pressure, read from the v1 or
//! v2 control files (and procfs) the way cAdvisor reads them, so kubelet and
//! Prometheus see the figures they see with containerd.
//! Both drivers name a cgroup by its path below the hierarchy's root (a
//! systemd scope is `<slice path>/crid-<id>.scope`), so one reader serves both.
//!
//! The parsers take the files' text and are tested against the kernel's
//! documented formats; [`Hierarchy::stats`] reads the files (blocking).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Hierarchy, V1Mount, v1_mount};

/// A v1 limit at or above this is "no limit" (the kernel's unlimited is
/// `PAGE_COUNTER_MAX` pages, 9223372036854771712 bytes with 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 62;
/// `cpuacct.stat` counts in USER_HZ ticks, which Linux fixes at 100 for
/// user space on every architecture crid runs on (as runc assumes too).
const USER_HZ: u64 = 100;
const NANOS_PER_TICK: u64 = 1_000_000_000 / USER_HZ;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The cgroup does not exist (any more): its container has ended or
    /// was removed, possibly while it was being read.
    #[error("cgroup {0} does not exist")]
    Gone(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// A cgroup's figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    /// Bytes and operations per block device (v1 blkio throttle files,
    /// v2 `io.stat`); empty when the controller is absent.
    pub io: Vec<DeviceIo>,
    /// What the cgroup's own processes hold open.
    pub files: OpenFiles,
    /// Pressure stall information: cgroup v2 on a kernel with PSI only.
    pub pressure: Option<Pressure>,
}

/// One block device's cumulative I/O.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceIo {
    pub major: u64,
    pub minor: u64,
    /// `/dev/<name>` from sysfs, or `major:minor` when it has none.
    pub device: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// Open file descriptors of the processes in `cgroup.procs`, and how many
/// of them are sockets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenFiles {
    pub file_descriptors: u64,
    pub sockets: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuStats {
    /// CPU time used, all CPUs, since the cgroup was made.
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    /// CFS bandwidth periods, and how many of them were throttled.
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
    /// The limits in force: quota per period (None: no quota), the period,
    /// and the weight as v1 `cpu.shares` (v2's weight converted).
    pub quota_us: Option<u64>,
    pub period_us: u64,
    pub shares: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryStats {
    pub usage_bytes: u64,
    /// usage − inactive file pages (floored at 0): what the kernel cannot
    /// easily reclaim, the figure kubelet's eviction watches.
    pub working_set_bytes: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss_bytes: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache_bytes: u64,
    /// Swap used; None where swap is not accounted.
    pub swap_bytes: Option<u64>,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// How often the limit was hit (v1 `memory.failcnt`, v2 `max` events).
    pub failcnt: u64,
    /// None: no limit.
    pub limit_bytes: Option<u64>,
    pub oom_kills: u64,
    /// The highest usage seen (v1 `memory.max_usage_in_bytes`, v2
    /// `memory.peak`, Linux 5.19+); None where the kernel keeps none.
    pub max_usage_bytes: Option<u64>,
    /// Page cache mapped into processes (v1 `total_mapped_file`, v2
    /// `file_mapped`).
    pub mapped_file_bytes: u64,
    /// Kernel memory (v1 `memory.kmem.usage_in_bytes`, v2 `kernel`, or on
    /// kernels before 5.18 its parts `kernel_stack`, `pagetables`, `slab`).
    pub kernel_bytes: u64,
    /// The memory + swap limit (v1 `memory.memsw.limit_in_bytes`) or the
    /// swap limit (v2 `memory.swap.max`), as cAdvisor reports each; None:
    /// no limit, or swap not accounted.
    pub swap_limit_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PidsStats {
    pub current: u64,
    /// None: no limit (or no pids controller).
    pub limit: Option<u64>,
}

/// `cpu.pressure`, `memory.pressure`, `io.pressure`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
    pub io: Option<Psi>,
}

/// One pressure file: time some (and all, `full`) tasks were stalled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Psi {
    pub some: PsiLine,
    /// Absent in `cpu.pressure` of kernels before 5.13.
    pub full: Option<PsiLine>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PsiLine {
    /// Percent of wall time stalled over the last 10 s, 60 s, 300 s.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time, microseconds.
    pub total_us: u64,
}

/// Which figures a reading takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Only what the CRI stats calls report: CPU usage, memory usage,
    /// working set, rss, page faults and limit, swap, the process count
    /// and (v2) pressure. The other figures (throttling, limits, failcnt,
    /// block I/O, open files: several times the cost, for figures the CRI
    /// does not carry) stay as the last [`Detail::Full`] reading through
    /// the same [`ControlFiles`] found them; the first reading through
    /// them reads everything.
    Cri,
    /// Every figure of [`CgroupStats`] (what `/metrics` shows).
    Full,
}

impl Hierarchy {
    /// The figures of `cgroup` now (blocking), all of them.
    /// [`StatsError::Gone`] when the cgroup is not there, or vanished
    /// while it was read.
    pub fn stats(&self, cgroup: &str) -> Result<CgroupStats, StatsError> {
        self.stats_with(cgroup, &mut ControlFiles::default(), Detail::Full)
    }

    /// The `detail` figures of `cgroup` through `files`, the cgroup's
    /// control files kept open from its earlier readings (and for its
    /// next ones).
    pub fn stats_with(
        &self,
        cgroup: &str,
        files: &mut ControlFiles,
        detail: Detail,
    ) -> Result<CgroupStats, StatsError> {
        let relative = cgroup.trim_start_matches('/');
        let detail = if files.last.is_some() {
            detail
        } else {
            Detail::Full
        };
        let read = match self {
            Hierarchy::V1 { mounts } => v1_stats(mounts, relative, cgroup, files, detail)?,
            Hierarchy::V2 { root } => v2_stats(&root.join(relative), cgroup, files, detail)?,
        };
        let stats = match (detail, files.last.take()) {
            (Detail::Cri, Some(last)) => {
                read.with_unread(last, matches!(self, Hierarchy::V1 { .. }))
            }
            _ => read,
        };
        files.last = Some(stats.clone());
        // The text is needed only during a reading; kept, it would be a
        // page per cgroup for as long as the cgroup lives (8 KiB a pod).
        files.text = Vec::new();
        Ok(stats)
    }
}

impl CgroupStats {
    /// A [`Detail::Cri`] reading with the figures it does not read taken
    /// from `last` (v1 reads fewer CPU and memory figures there than v2).
    fn with_unread(self, last: CgroupStats, v1: bool) -> CgroupStats {
        let cpu = if v1 {
            CpuStats {
                usage_ns: self.cpu.usage_ns,
                ..last.cpu
            }
        } else {
            CpuStats {
                quota_us: last.cpu.quota_us,
                period_us: last.cpu.period_us,
                shares: last.cpu.shares,
                ..self.cpu
            }
        };
        let memory = MemoryStats {
            failcnt: last.memory.failcnt,
            oom_kills: last.memory.oom_kills,
            max_usage_bytes: last.memory.max_usage_bytes,
            swap_limit_bytes: last.memory.swap_limit_bytes,
            kernel_bytes: if v1 {
                last.memory.kernel_bytes
            } else {
                self.memory.kernel_bytes
            },
            ..self.memory
        };
        CgroupStats {
            cpu,
            memory,
            pids: PidsStats {
                current: self.pids.current,
                limit: last.pids.limit,
            },
            io: last.io,
            files: last.files,
            pressure: self.pressure,
        }
    }
}

/// One cgroup's control files, kept open between readings, and its block
/// devices' names: a reading is then a pread or two per file instead of a
/// path walk, an open, the reads and a close (several times cheaper, and
/// most of a stats call's time). An open control file does not keep its
/// cgroup from being removed: its reads then fail with ENODEV, which is
/// [`StatsError::Gone`]. One per cgroup; drop it when the cgroup goes.
#[derive(Debug, Default)]
pub struct ControlFiles {
    /// Boxed: a joined PathBuf keeps spare capacity for as long as the
    /// cgroup lives.
    open: HashMap<Box<Path>, KeptFile>,
    devices: HashMap<(u64, u64), String>,
    /// The text of the file read last, reused from read to read within
    /// one reading.
    text: Vec<u8>,
    /// The figures read last: what a [`Detail::Cri`] reading does not read.
    last: Option<CgroupStats>,
}

/// Bytes asked of a control file per read.
const CHUNK: usize = 4096;

/// A control file kept open between readings, counted against what the
/// whole process may keep ([`keep_budget`]).
#[derive(Debug)]
struct KeptFile(fs::File);

/// Control files kept open by every [`ControlFiles`] of the process.
static KEPT_OPEN: AtomicUsize = AtomicUsize::new(0);

impl KeptFile {
    /// Keeps `file` if the budget has room; gives it back otherwise, to be
    /// read once and closed.
    fn admit(file: fs::File) -> Result<KeptFile, fs::File> {
        if KEPT_OPEN.fetch_add(1, Ordering::Relaxed) < keep_budget() {
            Ok(KeptFile(file))
        } else {
            KEPT_OPEN.fetch_sub(1, Ordering::Relaxed);
            Err(file)
        }
    }
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        KEPT_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many control files the process keeps open at most: half its
/// descriptor limit (as it was at the first reading). A v1 container
/// keeps about 21, so a node of 1000 containers under a limit of 20000
/// would otherwise run out of descriptors, and RPCs fail with EMFILE;
/// past the budget a file is opened for each reading instead.
fn keep_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(0, |(soft, _)| {
                usize::try_from(soft / 2).unwrap_or(usize::MAX)
            })
    })
}

/// Control files kept open now by the whole process (for tests).
pub fn kept_open() -> usize {
    KEPT_OPEN.load(Ordering::Relaxed)
}

impl ControlFiles {
    /// Whether nothing was read through it yet.
    fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Whether `dir`'s `file` is open (so `dir` was there when last read).
    fn is_open(&self, dir: &Path, file: &str) -> bool {
        self.open.contains_key(dir.join(file).as_path())
    }

    /// Reads a control file; a missing file or directory means the cgroup
    /// is gone.
    fn read(&mut self, dir: &Path, file: &str, cgroup: &str) -> Result<&str, StatsError> {
        let path = dir.join(file);
        let error = |source: std::io::Error| match source.kind() {
            // ENODEV: the cgroup was removed after the file was opened.
            ErrorKind::NotFound => StatsError::Gone(cgroup.to_owned()),
            _ if source.raw_os_error() == Some(libc::ENODEV) => StatsError::Gone(cgroup.to_owned()),
            _ => StatsError::Io {
                path: dir.join(file),
                source,
            },
        };
        let mut once = None;
        let opened: &fs::File = match self.open.entry(path.into_boxed_path()) {
            Entry::Occupied(kept) => &kept.into_mut().0,
            Entry::Vacant(slot) => {
                let opened = fs::File::open(slot.key()).map_err(error)?;
                match KeptFile::admit(opened) {
                    Ok(kept) => &slot.insert(kept).0,
                    Err(opened) => once.insert(opened),
                }
            }
        };
        // From offset 0 each time: a control file's text is made again
        // when read from its start, and read on from where the previous
        // read ended. Control (and proc) files are seq_files, which fill a
        // read as far as their text goes: a short read is the end, so a
        // file that fits takes one read, not a second one returning 0.
        self.text.clear();
        loop {
            let start = self.text.len();
            self.text.resize(start + CHUNK, 0);
            let read = opened
                .read_at(&mut self.text[start..], start as u64)
                .map_err(error)?;
            self.text.truncate(start + read);
            if read < CHUNK {
                break;
            }
        }
        std::str::from_utf8(&self.text).map_err(|_| StatsError::Parse {
            path: dir.join(file),
            reason: "not UTF-8".into(),
        })
    }

    /// A control file holding one number.
    fn number(&mut self, dir: &Path, file: &str, cgroup: &str) -> Result<u64, StatsError> {
        let text = self.read(dir, file, cgroup)?;
        parse_number(text, &dir.join(file))
    }

    /// A control file holding one number, which a kernel or a
    /// configuration may lack: None when it is missing.
    fn optional_number(
        &mut self,
        dir: &Path,
        file: &str,
        cgroup: &str,
    ) -> Result<Option<u64>, StatsError> {
        match self.read_optional(dir, file, cgroup)? {
            Some(text) => parse_number(text, &dir.join(file)).map(Some),
            None => Ok(None),
        }
    }

    /// A `max`-or-number file (v2 limits, `pids.max`), which a kernel or
    /// a configuration may lack: None for `max` and when it is missing.
    fn optional_limit(
        &mut self,
        dir: &Path,
        file: &str,
        cgroup: &str,
    ) -> Result<Option<u64>, StatsError> {
        match self.read_optional(dir, file, cgroup)? {
            Some(text) => parse_limit(text, &dir.join(file)),
            None => Ok(None),
        }
    }

    /// A control file that a kernel or a configuration may lack (swap
    /// accounting, PSI, pids): None when it is missing.
    fn read_optional(
        &mut self,
        dir: &Path,
        file: &str,
        cgroup: &str,
    ) -> Result<Option<&str>, StatsError> {
        match self.read(dir, file, cgroup) {
            Ok(text) => Ok(Some(text)),
            Err(StatsError::Gone(_)) if dir.is_dir() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Names each device as cAdvisor does, `/dev/<DEVNAME>` from sysfs,
    /// once per device and cgroup.
    fn name_devices(&mut self, devices: &mut [DeviceIo]) {
        for device in devices {
            device.device = self
                .devices
                .entry((device.major, device.minor))
                .or_insert_with(|| device_name(device.major, device.minor))
                .clone();
        }
    }
}

fn parse_number(text: &str, path: &Path) -> Result<u64, StatsError> {
    text.trim().parse().map_err(|_| StatsError::Parse {
        path: path.to_owned(),
        reason: format!("not a number: {:?}", text.trim()),
    })
}

/// A `max`-or-number file (v2 limits, `pids.max`): None for `max`.
fn parse_limit(text: &str, path: &Path) -> Result<Option<u64>, StatsError> {
    match text.trim() {
        "max" => Ok(None),
        value => parse_number(value, path).map(Some),
    }
}

/// A flat keyed file (`memory.stat`, `cpu.stat`, `memory.events`,
/// `cpuacct.stat`, `memory.oom_control`): `key value` per line; a key it
/// lacks reads 0, as cAdvisor reads it.
#[derive(Debug, Default)]
pub struct KeyedFile<'a>(Vec<(&'a str, u64)>);

impl<'a> KeyedFile<'a> {
    pub fn parse(text: &'a str) -> KeyedFile<'a> {
        KeyedFile(
            text.lines()
                .filter_map(|line| {
                    let mut words = line.split_whitespace();
                    let key = words.next()?;
                    let value = words.next()?.parse().ok()?;
                    Some((key, value))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
    }

    fn value(&self, key: &str) -> u64 {
        self.get(key).unwrap_or(0)
    }
}

/// A PSI file (Documentation/accounting/psi.rst):
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0`, then a `full` line.
pub fn parse_psi(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next();
        let mut parsed = PsiLine::default();
        for word in words {
            let (key, value) = word.split_once('=')?;
            match key {
                "avg10" => parsed.avg10 = value.parse().ok()?,
                "avg60" => parsed.avg60 = value.parse().ok()?,
                "avg300" => parsed.avg300 = value.parse().ok()?,
                "total" => parsed.total_us = value.parse().ok()?,
                _ => {}
            }
        }
        match kind {
            Some("some") => some = Some(parsed),
            Some("full") => full = Some(parsed),
            _ => {}
        }
    }
    Some(Psi { some: some?, full })
}

/// v2 `cpu.weight` (1..10000) as v1 `cpu.shares` (2..262144), the inverse
/// of the conversion runc and systemd apply when writing it.
pub fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.saturating_sub(1) * 262_142) / 9_999
}

/// v2 `cpu.max`: `$MAX $PERIOD`, `max` for no quota.
fn parse_cpu_max(text: &str, path: &Path) -> Result<(Option<u64>, u64), StatsError> {
    let mut words = text.split_whitespace();
    let quota = parse_limit(words.next().unwrap_or("max"), path)?;
    let period = match words.next() {
        Some(period) => parse_number(period, path)?,
        None => 100_000,
    };
    Ok((quota, period))
}

fn v2_stats(
    dir: &Path,
    cgroup: &str,
    files: &mut ControlFiles,
    detail: Detail,
) -> Result<CgroupStats, StatsError> {
    // Once read, an open file's ENODEV tells it is gone.
    if files.is_empty() && !dir.is_dir() {
        return Err(StatsError::Gone(cgroup.to_owned()));
    }
    let full = detail == Detail::Full;
    let mut cpu = {
        let stat = KeyedFile::parse(files.read(dir, "cpu.stat", cgroup)?);
        CpuStats {
            usage_ns: stat.value("usage_usec") * 1000,
            user_ns: stat.value("user_usec") * 1000,
            system_ns: stat.value("system_usec") * 1000,
            periods: stat.value("nr_periods"),
            throttled_periods: stat.value("nr_throttled"),
            throttled_ns: stat.value("throttled_usec") * 1000,
            quota_us: None,
            period_us: 100_000,
            shares: 0,
        }
    };
    if full {
        if let Some(text) = files.read_optional(dir, "cpu.max", cgroup)? {
            (cpu.quota_us, cpu.period_us) = parse_cpu_max(text, &dir.join("cpu.max"))?;
        }
        if let Some(weight) = files.optional_number(dir, "cpu.weight", cgroup)? {
            cpu.shares = weight_to_shares(weight);
        }
    }

    let memory = match files.optional_number(dir, "memory.current", cgroup)? {
        // No memory controller delegated here: no memory figures.
        None => MemoryStats::default(),
        Some(usage_bytes) => {
            let mut memory = {
                let stat = KeyedFile::parse(files.read(dir, "memory.stat", cgroup)?);
                MemoryStats {
                    usage_bytes,
                    working_set_bytes: usage_bytes.saturating_sub(stat.value("inactive_file")),
                    rss_bytes: stat.value("anon"),
                    cache_bytes: stat.value("file"),
                    page_faults: stat.value("pgfault"),
                    major_page_faults: stat.value("pgmajfault"),
                    mapped_file_bytes: stat.value("file_mapped"),
                    kernel_bytes: stat.get("kernel").unwrap_or_else(|| {
                        stat.value("kernel_stack") + stat.value("pagetables") + stat.value("slab")
                    }),
                    ..MemoryStats::default()
                }
            };
            memory.swap_bytes = files.optional_number(dir, "memory.swap.current", cgroup)?;
            let text = files.read(dir, "memory.max", cgroup)?;
            memory.limit_bytes = parse_limit(text, &dir.join("memory.max"))?;
            if full {
                let events = KeyedFile::parse(files.read(dir, "memory.events", cgroup)?);
                memory.failcnt = events.value("max");
                memory.oom_kills = events.value("oom_kill");
                memory.max_usage_bytes = files.optional_number(dir, "memory.peak", cgroup)?;
                memory.swap_limit_bytes = files.optional_limit(dir, "memory.swap.max", cgroup)?;
            }
            memory
        }
    };

    let pids = pids_stats(dir, cgroup, files, detail)?;
    let (io, open) = if full {
        let mut io = files
            .read_optional(dir, "io.stat", cgroup)?
            .map(parse_io_stat)
            .unwrap_or_default();
        files.name_devices(&mut io);
        (io, open_files(dir, cgroup, files)?)
    } else {
        Default::default()
    };
    let mut pressure = Pressure::default();
    for (file, slot) in [
        ("cpu.pressure", &mut pressure.cpu),
        ("memory.pressure", &mut pressure.memory),
        ("io.pressure", &mut pressure.io),
    ] {
        // Reading a pressure file of a kernel booted with psi=0 fails
        // with EOPNOTSUPP: that is "no PSI" as well.
        match files.read_optional(dir, file, cgroup) {
            Ok(text) => *slot = text.and_then(parse_psi),
            Err(StatsError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(error) => return Err(error),
        }
    }
    let has_pressure = pressure.cpu.is_some() || pressure.memory.is_some() || pressure.io.is_some();
    Ok(CgroupStats {
        cpu,
        memory,
        pids,
        io,
        files: open,
        pressure: has_pressure.then_some(pressure),
    })
}

/// v2 `io.stat`: `MAJ:MIN rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`
/// per device.
pub fn parse_io_stat(text: &str) -> Vec<DeviceIo> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (major, minor) = parse_device(words.next()?)?;
            let mut device = DeviceIo {
                major,
                minor,
                ..Default::default()
            };
            for word in words {
                let Some((key, value)) = word.split_once('=') else {
                    continue;
                };
                let Ok(value) = value.parse() else { continue };
                match key {
                    "rbytes" => device.read_bytes = value,
                    "wbytes" => device.write_bytes = value,
                    "rios" => device.reads = value,
                    "wios" => device.writes = value,
                    _ => {}
                }
            }
            Some(device)
        })
        .collect()
}

fn parse_device(word: &str) -> Option<(u64, u64)> {
    let (major, minor) = word.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// v1 `blkio.throttle.io_service_bytes` and `blkio.throttle.io_serviced`:
/// `MAJ:MIN Read N`, `MAJ:MIN Write N`, … per device, then `Total N`.
pub fn parse_v1_blkio(service_bytes: &str, serviced: &str) -> Vec<DeviceIo> {
    let mut devices: Vec<DeviceIo> = Vec::new();
    for (text, is_bytes) in [(service_bytes, true), (serviced, false)] {
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(device), Some(operation), Some(value)) =
                (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let (Some((major, minor)), Ok(value)) = (parse_device(device), value.parse::<u64>())
            else {
                continue;
            };
            let index = match devices
                .iter()
                .position(|d| d.major == major && d.minor == minor)
            {
                Some(index) => index,
                None => {
                    devices.push(DeviceIo {
                        major,
                        minor,
                        ..Default::default()
                    });
                    devices.len() - 1
                }
            };
            let entry = &mut devices[index];
            match (operation, is_bytes) {
                ("Read", true) => entry.read_bytes = value,
                ("Write", true) => entry.write_bytes = value,
                ("Read", false) => entry.reads = value,
                ("Write", false) => entry.writes = value,
                _ => {}
            }
        }
    }
    devices
}

/// A block device's name as cAdvisor shows it: `/dev/<DEVNAME>` from
/// sysfs, or `major:minor` when it has none.
fn device_name(major: u64, minor: u64) -> String {
    let uevent = format!("/sys/dev/block/{major}:{minor}/uevent");
    let name = fs::read_to_string(uevent).ok().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("DEVNAME=").map(str::to_owned))
    });
    match name {
        Some(name) => format!("/dev/{name}"),
        None => format!("{major}:{minor}"),
    }
}

/// Counts the open descriptors (and sockets among them) of the processes
/// listed in `dir`'s `cgroup.procs`. A process that exits meanwhile, or a
/// descriptor closed meanwhile, simply is not counted.
fn open_files(dir: &Path, cgroup: &str, files: &mut ControlFiles) -> Result<OpenFiles, StatsError> {
    let Some(procs) = files.read_optional(dir, "cgroup.procs", cgroup)? else {
        return Ok(OpenFiles::default());
    };
    let mut counted = OpenFiles::default();
    for pid in procs.split_whitespace() {
        let Ok(entries) = fs::read_dir(Path::new("/proc").join(pid).join("fd")) else {
            continue;
        };
        for entry in entries.flatten() {
            counted.file_descriptors += 1;
            if fs::read_link(entry.path()).is_ok_and(|target| {
                target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"socket:[")
            }) {
                counted.sockets += 1;
            }
        }
    }
    Ok(counted)
}

fn pids_stats(
    dir: &Path,
    cgroup: &str,
    files: &mut ControlFiles,
    detail: Detail,
) -> Result<PidsStats, StatsError> {
    let Some(current) = files.optional_number(dir, "pids.current", cgroup)? else {
        return Ok(PidsStats::default());
    };
    let limit = match detail {
        Detail::Full => files.optional_limit(dir, "pids.max", cgroup)?,
        Detail::Cri => None,
    };
    Ok(PidsStats { current, limit })
}

/// The dir of `relative` in the v1 hierarchy of `controller`.
fn v1_dir(mounts: &[V1Mount], controller: &str, relative: &str) -> Option<PathBuf> {
    v1_mount(mounts, controller).map(|mount| mount.dir.join(relative))
}

fn v1_stats(
    mounts: &[V1Mount],
    relative: &str,
    cgroup: &str,
    files: &mut ControlFiles,
    detail: Detail,
) -> Result<CgroupStats, StatsError> {
    let memory_dir = v1_dir(mounts, "memory", relative);
    let cpuacct_dir = v1_dir(mounts, "cpuacct", relative);
    // Every container has a memory and a cpuacct dir: without them it is
    // gone. Once read, an open file's ENODEV tells it.
    if files.is_empty()
        && ![&memory_dir, &cpuacct_dir]
            .into_iter()
            .flatten()
            .any(|dir| dir.is_dir())
    {
        return Err(StatsError::Gone(cgroup.to_owned()));
    }
    let full = detail == Detail::Full;

    let mut cpu = CpuStats {
        period_us: 100_000,
        ..CpuStats::default()
    };
    if let Some(dir) = &cpuacct_dir {
        cpu.usage_ns = files.number(dir, "cpuacct.usage", cgroup)?;
    }
    if let (Some(dir), true) = (&cpuacct_dir, full) {
        // usage_user/usage_sys (Linux 4.6+) count in ns; cpuacct.stat in ticks.
        match (
            files.optional_number(dir, "cpuacct.usage_user", cgroup)?,
            files.optional_number(dir, "cpuacct.usage_sys", cgroup)?,
        ) {
            (Some(user), Some(system)) => (cpu.user_ns, cpu.system_ns) = (user, system),
            _ => {
                let stat = KeyedFile::parse(files.read(dir, "cpuacct.stat", cgroup)?);
                cpu.user_ns = stat.value("user") * NANOS_PER_TICK;
                cpu.system_ns = stat.value("system") * NANOS_PER_TICK;
            }
        }
    }
    if let (Some(dir), true) = (v1_dir(mounts, "cpu", relative), full) {
        if let Some(text) = files.read_optional(&dir, "cpu.stat", cgroup)? {
            let stat = KeyedFile::parse(text);
            cpu.periods = stat.value("nr_periods");
            cpu.throttled_periods = stat.value("nr_throttled");
            cpu.throttled_ns = stat.value("throttled_time");
        }
        if let Some(period) = files.optional_number(&dir, "cpu.cfs_period_us", cgroup)? {
            cpu.period_us = period;
        }
        if let Some(text) = files.read_optional(&dir, "cpu.cfs_quota_us", cgroup)? {
            // -1: no quota.
            cpu.quota_us = text.trim().parse::<u64>().ok();
        }
        if let Some(shares) = files.optional_number(&dir, "cpu.shares", cgroup)? {
            cpu.shares = shares;
        }
    }

    let memory = match &memory_dir {
        Some(dir) => v1_memory(dir, cgroup, files, detail)?,
        None => MemoryStats::default(),
    };
    let pids_dir = v1_dir(mounts, "pids", relative);
    let pids = match &pids_dir {
        Some(dir) => pids_stats(dir, cgroup, files, detail)?,
        None => PidsStats::default(),
    };
    if !full {
        return Ok(CgroupStats {
            cpu,
            memory,
            pids,
            ..CgroupStats::default()
        });
    }
    let mut io = match v1_dir(mounts, "blkio", relative) {
        Some(dir) => {
            let bytes = files
                .read_optional(&dir, "blkio.throttle.io_service_bytes", cgroup)?
                .map(str::to_owned);
            match (
                bytes,
                files.read_optional(&dir, "blkio.throttle.io_serviced", cgroup)?,
            ) {
                (Some(bytes), Some(serviced)) => parse_v1_blkio(&bytes, serviced),
                _ => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    files.name_devices(&mut io);
    // Every hierarchy lists the same processes: any present one will do.
    let open = match pids_dir
        .iter()
        .chain(&memory_dir)
        .find(|dir| files.is_open(dir, "cgroup.procs") || dir.is_dir())
    {
        Some(dir) => open_files(dir, cgroup, files)?,
        None => OpenFiles::default(),
    };
    Ok(CgroupStats {
        cpu,
        memory,
        pids,
        io,
        files: open,
        pressure: None,
    })
}

fn v1_memory(
    dir: &Path,
    cgroup: &str,
    files: &mut ControlFiles,
    detail: Detail,
) -> Result<MemoryStats, StatsError> {
    let usage_bytes = files.number(dir, "memory.usage_in_bytes", cgroup)?;
    let limit = files.number(dir, "memory.limit_in_bytes", cgroup)?;
    // memsw counts memory + swap; only with swap accounting on.
    let swap_bytes = files
        .optional_number(dir, "memory.memsw.usage_in_bytes", cgroup)?
        .map(|memsw| memsw.saturating_sub(usage_bytes));
    let (failcnt, oom_kills) = match detail {
        Detail::Full => (
            files.number(dir, "memory.failcnt", cgroup)?,
            KeyedFile::parse(files.read(dir, "memory.oom_control", cgroup)?).value("oom_kill"),
        ),
        Detail::Cri => (0, 0),
    };
    // Read last: the stat's keys borrow its text.
    let mut memory = {
        let stat = KeyedFile::parse(files.read(dir, "memory.stat", cgroup)?);
        v1_memory_from(usage_bytes, &stat, oom_kills, failcnt, limit, swap_bytes)
    };
    if detail == Detail::Full {
        memory.max_usage_bytes = files.optional_number(dir, "memory.max_usage_in_bytes", cgroup)?;
        memory.kernel_bytes = files
            .optional_number(dir, "memory.kmem.usage_in_bytes", cgroup)?
            .unwrap_or(0);
        memory.swap_limit_bytes = files
            .optional_number(dir, "memory.memsw.limit_in_bytes", cgroup)?
            .filter(|&limit| limit < V1_UNLIMITED);
    }
    Ok(memory)
}

/// The v1 memory figures from the files' values (the `total_` keys of
/// `memory.stat` count the whole subtree, which a pod cgroup needs).
fn v1_memory_from(
    usage_bytes: u64,
    stat: &KeyedFile,
    oom_kills: u64,
    failcnt: u64,
    limit: u64,
    swap_bytes: Option<u64>,
) -> MemoryStats {
    MemoryStats {
        usage_bytes,
        working_set_bytes: usage_bytes.saturating_sub(stat.value("total_inactive_file")),
        rss_bytes: stat.value("total_rss"),
        cache_bytes: stat.value("total_cache"),
        swap_bytes,
        page_faults: stat.value("total_pgfault"),
        major_page_faults: stat.value("total_pgmajfault"),
        failcnt,
        limit_bytes: (limit < V1_UNLIMITED).then_some(limit),
        oom_kills,
        mapped_file_bytes: stat.value("total_mapped_file"),
        ..MemoryStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_is_read_as_cadvisor_reads_it() {
        let stat = KeyedFile::parse(
            "cache 100\nrss 50\ninactive_file 7\ntotal_cache 4096\ntotal_rss 8192\n\
             total_swap 0\ntotal_pgfault 31\ntotal_pgmajfault 2\ntotal_inactive_file 1024\n\
             mapped_file 1\ntotal_mapped_file 2048\n",
        );
        let oom_kills =
            KeyedFile::parse("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").value("oom_kill");
        let memory = v1_memory_from(20_000, &stat, oom_kills, 5, 9223372036854771712, Some(0));
        assert_eq!(
            memory,
            MemoryStats {
                usage_bytes: 20_000,
                working_set_bytes: 20_000 - 1024,
                rss_bytes: 8192,
                cache_bytes: 4096,
                swap_bytes: Some(0),
                page_faults: 31,
                major_page_faults: 2,
                failcnt: 5,
                limit_bytes: None,
                oom_kills: 3,
                mapped_file_bytes: 2048,
                ..MemoryStats::default()
            }
        );
        let limited = v1_memory_from(10, &stat, oom_kills, 0, 64 << 20, None);
        assert_eq!(limited.limit_bytes, Some(64 << 20));
        assert_eq!(limited.working_set_bytes, 0, "floored at 0");
    }

    #[test]
    fn v1_memory_files_give_peak_kernel_and_swap_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = [
            ("memory.usage_in_bytes", "8192\n"),
            ("memory.stat", "total_rss 4096\ntotal_mapped_file 512\n"),
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n"),
            ("memory.failcnt", "0\n"),
            ("memory.limit_in_bytes", "67108864\n"),
            ("memory.max_usage_in_bytes", "16384\n"),
            ("memory.kmem.usage_in_bytes", "1024\n"),
            ("memory.memsw.usage_in_bytes", "8192\n"),
            ("memory.memsw.limit_in_bytes", "134217728\n"),
        ];
        for (name, text) in files {
            fs::write(dir.path().join(name), text).expect("write");
        }
        let memory = v1_memory(
            dir.path(),
            "/test",
            &mut ControlFiles::default(),
            Detail::Full,
        )
        .expect("memory");
        assert_eq!(memory.max_usage_bytes, Some(16384));
        assert_eq!(memory.kernel_bytes, 1024);
        assert_eq!(memory.mapped_file_bytes, 512);
        assert_eq!(memory.swap_limit_bytes, Some(128 << 20));
        assert_eq!(memory.swap_bytes, Some(0));

        fs::write(
            dir.path().join("memory.memsw.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .expect("write");
        for file in ["memory.max_usage_in_bytes", "memory.kmem.usage_in_bytes"] {
            fs::remove_file(dir.path().join(file)).expect("remove");
        }
        let memory = v1_memory(
            dir.path(),
            "/test",
            &mut ControlFiles::default(),
            Detail::Full,
        )
        .expect("memory");
        assert_eq!(memory.swap_limit_bytes, None, "unlimited");
        assert_eq!(memory.max_usage_bytes, None);
        assert_eq!(memory.kernel_bytes, 0);
    }

    #[test]
    fn block_io_parses_per_device_from_v1_and_v2_files() {
        let v1 = parse_v1_blkio(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Total 12288\n\
             253:1 Read 0\n253:1 Write 512\n253:1 Total 512\nTotal 12800\n",
            "8:0 Read 2\n8:0 Write 3\n8:0 Total 5\n253:1 Write 1\nTotal 6\n",
        );
        assert_eq!(
            v1,
            [
                DeviceIo {
                    major: 8,
                    minor: 0,
                    device: String::new(),
                    read_bytes: 4096,
                    write_bytes: 8192,
                    reads: 2,
                    writes: 3,
                },
                DeviceIo {
                    major: 253,
                    minor: 1,
                    device: String::new(),
                    read_bytes: 0,
                    write_bytes: 512,
                    reads: 0,
                    writes: 1,
                },
            ]
        );
        let v2 = parse_io_stat(
            "8:16 rbytes=1024 wbytes=2048 rios=1 wios=2 dbytes=0 dios=0\n\
             259:0 rbytes=5 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\nbogus\n",
        );
        assert_eq!(v2.len(), 2);
        assert_eq!(
            (
                v2[0].major,
                v2[0].minor,
                v2[0].read_bytes,
                v2[0].write_bytes
            ),
            (8, 16, 1024, 2048)
        );
        assert_eq!((v2[0].reads, v2[0].writes), (1, 2));
        assert_eq!(v2[1].read_bytes, 5);
        let mut unnamed = vec![DeviceIo {
            major: 4095,
            minor: 4095,
            ..Default::default()
        }];
        ControlFiles::default().name_devices(&mut unnamed);
        assert_eq!(unnamed[0].device, "4095:4095", "no such device in sysfs");
    }

    #[test]
    fn open_files_count_descriptors_and_sockets_of_listed_processes() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            open_files(dir.path(), "/test", &mut ControlFiles::default()).expect("no cgroup.procs"),
            OpenFiles::default()
        );
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        // This process, and one that no longer exists.
        fs::write(
            dir.path().join("cgroup.procs"),
            format!("{}\n999999999\n", std::process::id()),
        )
        .expect("write");
        let files =
            open_files(dir.path(), "/test", &mut ControlFiles::default()).expect("open files");
        assert!(files.sockets >= 1, "{files:?}");
        assert!(files.file_descriptors > files.sockets, "{files:?}");
        drop(socket);
    }

    #[test]
    fn v2_files_parse_as_the_kernel_documents_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = [
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\n\
                 nr_throttled 2\nthrottled_usec 7\nnr_bursts 0\nburst_usec 0\n",
            ),
            ("cpu.max", "50000 100000\n"),
            ("cpu.weight", "100\n"),
            ("memory.current", "1048576\n"),
            (
                "memory.stat",
                "anon 4096\nfile 8192\nshmem 0\ninactive_anon 0\nactive_anon 4096\n\
                 inactive_file 12288\nactive_file 0\npgfault 99\npgmajfault 1\n\
                 file_mapped 2048\nkernel_stack 16384\npagetables 4096\nslab 8192\n",
            ),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            ("memory.swap.current", "0\n"),
            ("memory.max", "max\n"),
            ("memory.peak", "2097152\n"),
            ("memory.swap.max", "67108864\n"),
            (
                "io.stat",
                "8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
            ),
            ("pids.current", "3\n"),
            ("pids.max", "100\n"),
            (
                "cpu.pressure",
                "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=678\n",
            ),
            (
                "memory.pressure",
                "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            ),
        ];
        for (name, text) in files {
            fs::write(dir.path().join(name), text).expect("write");
        }
        let stats = v2_stats(
            dir.path(),
            "/test",
            &mut ControlFiles::default(),
            Detail::Full,
        )
        .expect("stats");
        assert_eq!(
            stats.cpu,
            CpuStats {
                usage_ns: 1_500_000,
                user_ns: 1_000_000,
                system_ns: 500_000,
                periods: 10,
                throttled_periods: 2,
                throttled_ns: 7000,
                quota_us: Some(50_000),
                period_us: 100_000,
                // v2's default weight, as runc converts it back.
                shares: 2597,
            }
        );
        assert_eq!(
            stats.memory,
            MemoryStats {
                usage_bytes: 1_048_576,
                working_set_bytes: 1_048_576 - 12288,
                rss_bytes: 4096,
                cache_bytes: 8192,
                swap_bytes: Some(0),
                page_faults: 99,
                major_page_faults: 1,
                failcnt: 4,
                limit_bytes: None,
                oom_kills: 1,
                max_usage_bytes: Some(2_097_152),
                mapped_file_bytes: 2048,
                // No `kernel` key (before 5.18): the sum of its parts.
                kernel_bytes: 16384 + 4096 + 8192,
                swap_limit_bytes: Some(64 << 20),
            }
        );
        assert_eq!(
            stats.pids,
            PidsStats {
                current: 3,
                limit: Some(100)
            }
        );
        assert_eq!(stats.io.len(), 1);
        assert_eq!(
            (stats.io[0].read_bytes, stats.io[0].writes),
            (4096, 1),
            "{:?}",
            stats.io
        );
        assert_eq!(stats.files, OpenFiles::default(), "no cgroup.procs");
        let pressure = stats.pressure.clone().expect("pressure");
        let cpu = pressure.cpu.expect("cpu pressure");
        assert_eq!(cpu.some.avg10, 1.5);
        assert_eq!(cpu.some.total_us, 12345);
        assert_eq!(cpu.full.map(|full| full.total_us), Some(678));
        assert!(pressure.memory.is_some());
        assert!(pressure.io.is_none(), "no io.pressure file");

        // A CRI reading reads the CRI's figures anew and keeps the others
        // from the last full reading through the same files (the first
        // reading through them reads everything).
        let mut kept = ControlFiles::default();
        let first = v2_stats_with(dir.path(), &mut kept, Detail::Cri);
        assert_eq!(first, stats, "a first reading is a full one");
        fs::write(dir.path().join("cpu.stat"), "usage_usec 9000\n").expect("write");
        fs::write(dir.path().join("memory.current"), "2097152\n").expect("write");
        fs::write(dir.path().join("memory.events"), "max 9\noom_kill 2\n").expect("write");
        fs::write(dir.path().join("pids.max"), "50\n").expect("write");
        let cri = v2_stats_with(dir.path(), &mut kept, Detail::Cri);
        assert_eq!(cri.cpu.usage_ns, 9_000_000);
        assert_eq!(cri.memory.usage_bytes, 2_097_152);
        assert_eq!(
            (cri.memory.failcnt, cri.memory.oom_kills, cri.pids.limit),
            (4, 1, Some(100)),
            "not read: as the full reading found them"
        );
        assert_eq!((cri.cpu.quota_us, &cri.io), (Some(50_000), &stats.io));
        let full = v2_stats_with(dir.path(), &mut kept, Detail::Full);
        assert_eq!(
            (full.memory.failcnt, full.memory.oom_kills, full.pids.limit),
            (9, 2, Some(50))
        );

        // A missing cgroup, and one removed under the reader, are Gone.
        let gone = v2_stats(
            &dir.path().join("removed"),
            "/removed",
            &mut ControlFiles::default(),
            Detail::Full,
        );
        assert!(matches!(gone, Err(StatsError::Gone(_))), "{gone:?}");
        fs::remove_file(dir.path().join("memory.stat")).expect("remove");
        fs::remove_file(dir.path().join("cpu.stat")).expect("remove");
        let vanished = v2_stats(
            dir.path(),
            "/test",
            &mut ControlFiles::default(),
            Detail::Full,
        );
        assert!(matches!(vanished, Err(StatsError::Gone(_))), "{vanished:?}");
    }

    /// `dir` as a v2 cgroup read through `files`.
    fn v2_stats_with(dir: &Path, files: &mut ControlFiles, detail: Detail) -> CgroupStats {
        let hierarchy = Hierarchy::V2 {
            root: dir.to_owned(),
        };
        hierarchy.stats_with("/", files, detail).expect("stats")
    }

    #[test]
    fn psi_without_full_and_cpu_max_without_quota() {
        let psi = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").expect("psi");
        assert_eq!(psi.some.total_us, 5);
        assert!(psi.full.is_none());
        assert!(parse_psi("garbage\n").is_none());
        let path = Path::new("cpu.max");
        assert_eq!(
            parse_cpu_max("max 100000\n", path).expect("cpu.max"),
            (None, 100_000)
        );
        assert!(parse_cpu_max("lots 100000\n", path).is_err());
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
    }

    #[test]
    fn keyed_files_skip_lines_that_are_not_key_value() {
        let file = KeyedFile::parse("user 12\nsystem 3\n\nbogus\nhalf x\n");
        assert_eq!(file.get("user"), Some(12));
        assert_eq!(file.value("system"), 3);
        assert_eq!(file.get("half"), None);
        assert_eq!(file.value("missing"), 0);
    }
}
