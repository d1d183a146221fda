//! Writing a container's limits into its cgroup, v1 and v2: checked
//! against what the kernel accepts before any write, and all or nothing (a
//! write the kernel refuses puts back every file written before it).

use std::fs;
use std::path::{Path, PathBuf};

use super::{CgroupError, V1Mount, v1_mount};
use crate::spec::Resources;

/// Writes one control file. No O_CREAT: a file the kernel does not offer
/// (controller absent or not enabled) is an error naming it, not a new file.
pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    use std::io::Write as _;
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_owned(),
            source,
        })
}

/// CFS bandwidth bounds (kernel/sched/core.c): a period of 1 ms to 1 s, a
/// quota of at least 1 ms and at most what the kernel's fixed point holds.
const CPU_PERIOD_RANGE_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
const CPU_QUOTA_RANGE_US: std::ops::RangeInclusive<i64> = 1_000..=((1 << 44) - 1);
/// Which CPUs and memory nodes exist.
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";
const ONLINE_NODES: &str = "/sys/devices/system/node/online";

/// The numbers of a kernel list (`0-3,8`), or why it is not one.
fn parse_list(list: &str) -> Result<Vec<std::ops::RangeInclusive<u32>>, String> {
    list.trim()
        .split(',')
        .map(|part| {
            let (start, end) = part.split_once('-').unwrap_or((part, part));
            let number = |text: &str| {
                text.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{part:?} is not a number or a range a-b"))
            };
            let (start, end) = (number(start)?, number(end)?);
            if start > end {
                return Err(format!("the range {part:?} runs backwards"));
            }
            Ok(start..=end)
        })
        .collect()
}

/// A cpuset list must name only CPUs (nodes) the host has online.
fn check_cpuset(field: &str, list: &str, online_file: &str) -> Result<(), CgroupError> {
    let ranges = parse_list(list).map_err(|reason| CgroupError::invalid(field, list, reason))?;
    // Without the file (no NUMA: no node list) only 0 exists.
    let online = fs::read_to_string(online_file).unwrap_or_else(|_| "0".into());
    let online = parse_list(&online).map_err(|reason| CgroupError::Cgroup {
        path: online_file.into(),
        reason,
    })?;
    for range in ranges {
        for number in [*range.start(), *range.end()] {
            if !online.iter().any(|present| present.contains(&number)) {
                return Err(CgroupError::invalid(
                    field,
                    list,
                    format!(
                        "{number} is not online on this node (online: {})",
                        join(&online)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn join(ranges: &[std::ops::RangeInclusive<u32>]) -> String {
    ranges
        .iter()
        .map(|range| format!("{}-{}", range.start(), range.end()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The memory limits to write, checked: memory+swap below memory is refused.
fn memory_limits(resources: &Resources) -> Result<(Option<i64>, Option<i64>), CgroupError> {
    let (memory, swap) = resources.memory_and_swap();
    if let (Some(memory), Some(swap)) = (memory, swap)
        && memory > 0
        && (0..memory).contains(&swap)
    {
        return Err(CgroupError::invalid(
            "memory_swap_limit",
            swap.to_string(),
            format!("below memory_limit {memory}"),
        ));
    }
    Ok((memory, swap))
}

/// Page sizes become file names (`hugetlb.2MB.max`): a plain word only.
fn check_page_size(size: &str) -> Result<(), CgroupError> {
    if !size.is_empty() && size.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(CgroupError::invalid(
            "hugepage_limits.page_size",
            size,
            "must be a page size such as 2MB",
        ))
    }
}

/// The checks of `resources` that need no cgroup: what the kernel would
/// refuse whatever the container does, named by the CRI field. Also for
/// callers that act on them elsewhere first (systemd's unit properties).
pub(super) fn check(resources: &Resources) -> Result<(), CgroupError> {
    if let Some(period) = resources.cpu_period.filter(|&v| v != 0)
        && !CPU_PERIOD_RANGE_US.contains(&period)
    {
        return Err(CgroupError::invalid(
            "cpu_period",
            period.to_string(),
            "must be between 1000 and 1000000 microseconds",
        ));
    }
    if let Some(quota) = resources.cpu_quota.filter(|&v| v > 0)
        && !CPU_QUOTA_RANGE_US.contains(&quota)
    {
        return Err(CgroupError::invalid(
            "cpu_quota",
            quota.to_string(),
            format!(
                "must be -1 (none) or between {} and {} microseconds",
                CPU_QUOTA_RANGE_US.start(),
                CPU_QUOTA_RANGE_US.end()
            ),
        ));
    }
    if let Some(cpus) = resources.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
        check_cpuset("cpuset_cpus", cpus, ONLINE_CPUS)?;
    }
    if let Some(mems) = resources.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
        check_cpuset("cpuset_mems", mems, ONLINE_NODES)?;
    }
    memory_limits(resources)?;
    for (size, _) in &resources.hugepage_limits {
        check_page_size(size)?;
    }
    Ok(())
}

/// Cgroup files with the values they held before a change, oldest first:
/// what one `apply` wrote (so that a write the kernel refuses can put every
/// earlier one back), or a snapshot taken before someone else (systemd)
/// writes them. Kept by a caller whose later step may fail.
#[derive(Debug, Default)]
pub struct Restore {
    files: Vec<(PathBuf, String)>,
}

impl Restore {
    /// What those of `files` that exist hold now.
    pub(super) fn snapshot(files: impl IntoIterator<Item = PathBuf>) -> Restore {
        let files = files
            .into_iter()
            .filter_map(|path| {
                let value = fs::read_to_string(&path).ok()?;
                Some((path, value.trim().to_owned()))
            })
            .collect();
        Restore { files }
    }

    /// `later` is put back before this (it recorded newer writes).
    pub(super) fn then(mut self, later: Restore) -> Restore {
        self.files.extend(later.files);
        self
    }

    /// Writes `value` for the CRI field `field`. A value the kernel refuses
    /// (out of range, below what the cgroup uses now) is that field's error.
    fn write(&mut self, path: &Path, field: &str, value: &str) -> Result<(), CgroupError> {
        // A file that cannot be read cannot be put back; writing it still
        // tells whether the kernel takes the value.
        let previous = fs::read_to_string(path).ok();
        write(path, value).map_err(|error| refused(field, error))?;
        if let Some(previous) = previous {
            self.files
                .push((path.to_path_buf(), previous.trim().to_owned()));
        }
        Ok(())
    }

    /// Puts back what was recorded, newest first (the reverse of the order
    /// the kernel's cross-file rules were kept in). A file that already
    /// holds its old value is left alone. Best effort: what cannot be put
    /// back is logged.
    pub fn put_back(self) {
        for (path, previous) in self.files.into_iter().rev() {
            if fs::read_to_string(&path).is_ok_and(|now| now.trim() == previous) {
                continue;
            }
            // An empty list (cpuset.cpus) is written as a lone newline: an
            // empty write never reaches the kernel.
            let value = if previous.is_empty() { "\n" } else { &previous };
            if let Err(error) = write(&path, value) {
                tracing::warn!(%error, "cannot put back a cgroup limit after a failed update");
            }
        }
    }
}

/// A write the kernel refused because of its value becomes an error about
/// the request's field; other failures (a missing file) stay what they are.
fn refused(field: &str, error: CgroupError) -> CgroupError {
    match error {
        CgroupError::Write {
            path,
            value,
            source,
        } if matches!(
            source.raw_os_error(),
            Some(libc::EINVAL | libc::EBUSY | libc::ERANGE | libc::EOVERFLOW)
        ) =>
        {
            CgroupError::invalid(
                field,
                value,
                format!("the kernel refused it in {}: {source}", path.display()),
            )
        }
        other => other,
    }
}

/// Checks `r`, then writes it with `writes`; if any write fails, every
/// file written before it gets its old value back. Done, what was written
/// and its old values, for a caller whose later step fails.
fn apply_all_or_nothing(
    r: &Resources,
    writes: impl FnOnce(&mut Restore, &Resources) -> Result<(), CgroupError>,
) -> Result<Restore, CgroupError> {
    check(r)?;
    let mut journal = Restore::default();
    match writes(&mut journal, r) {
        Ok(()) => Ok(journal),
        Err(error) => {
            journal.put_back();
            Err(error)
        }
    }
}

/// v1 limits, each in the hierarchy of its controller (the file name's
/// first word).
pub(super) fn apply_v1(
    mounts: &[V1Mount],
    cgroup: &str,
    r: &Resources,
) -> Result<Restore, CgroupError> {
    apply_all_or_nothing(r, |journal, r| write_v1(journal, mounts, cgroup, r))
}

fn write_v1(
    journal: &mut Restore,
    mounts: &[V1Mount],
    cgroup: &str,
    r: &Resources,
) -> Result<(), CgroupError> {
    if !r.unified.is_empty() {
        let keys: Vec<&str> = r.unified.keys().map(String::as_str).collect();
        return Err(CgroupError::invalid(
            "unified",
            keys.join(","),
            "needs cgroup v2; this host has v1",
        ));
    }
    let relative = cgroup.trim_start_matches('/');
    let path = |file: &str| -> Result<PathBuf, CgroupError> {
        let controller = file.split('.').next().unwrap_or_default();
        let mount = v1_mount(mounts, controller).ok_or_else(|| CgroupError::Cgroup {
            path: cgroup.to_owned(),
            reason: format!("no cgroup v1 {controller} hierarchy for {file}"),
        })?;
        Ok(mount.dir.join(relative).join(file))
    };
    let mut set =
        |file: &str, field: &str, value: String| journal.write(&path(file)?, field, &value);

    if let Some(shares) = r.cpu_shares.filter(|&v| v != 0) {
        set("cpu.shares", "cpu_shares", shares.to_string())?;
    }
    let quota = r
        .cpu_quota
        .filter(|&v| v != 0)
        .map(|v| v.max(-1).to_string());
    let period = r.cpu_period.filter(|&v| v != 0).map(|v| v.to_string());
    // The kernel checks bandwidth (quota/period, against the parent's) on
    // every write: period first, unless the old quota makes it refuse that.
    let mut period_pending = false;
    if let Some(period) = &period {
        match set("cpu.cfs_period_us", "cpu_period", period.clone()) {
            Err(CgroupError::Invalid { .. }) if quota.is_some() => period_pending = true,
            result => result?,
        }
    }
    if let Some(quota) = quota {
        set("cpu.cfs_quota_us", "cpu_quota", quota)?;
    }
    if let Some(period) = period.filter(|_| period_pending) {
        set("cpu.cfs_period_us", "cpu_period", period)?;
    }
    if let Some(cpus) = r.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
        set("cpuset.cpus", "cpuset_cpus", cpus.clone())?;
    }
    if let Some(mems) = r.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
        set("cpuset.mems", "cpuset_mems", mems.clone())?;
    }

    let (memory, swap) = memory_limits(r)?;
    if memory.is_some() || swap.is_some() {
        let limit_file = path("memory.limit_in_bytes")?;
        let swap_file = limit_file.with_file_name("memory.memsw.limit_in_bytes");
        // Without swap accounting there is no memsw file and no swap limit.
        let swap = swap.filter(|_| swap_file.exists());
        // memsw >= memory at every moment: raising memory moves memsw up
        // first, lowering it moves memory down first.
        let raising = match memory {
            Some(new) => {
                let current = fs::read_to_string(&limit_file)
                    .map_err(CgroupError::io("cannot read", &limit_file))?;
                let current: i128 = current.trim().parse().map_err(|_| CgroupError::Cgroup {
                    path: limit_file.display().to_string(),
                    reason: format!("unreadable limit {:?}", current.trim()),
                })?;
                let new = if new < 0 { i64::MAX } else { new };
                i128::from(new) > current
            }
            None => true,
        };
        let memory = memory.map(|v| (&limit_file, "memory_limit_in_bytes", v.max(-1).to_string()));
        let swap = swap.map(|v| {
            (
                &swap_file,
                "memory_swap_limit_in_bytes",
                v.max(-1).to_string(),
            )
        });
        let order = if raising {
            [swap, memory]
        } else {
            [memory, swap]
        };
        for (file, field, value) in order.into_iter().flatten() {
            journal.write(file, field, &value)?;
        }
    }

    let mut set =
        |file: &str, field: &str, value: String| journal.write(&path(file)?, field, &value);
    if let Some(pids) = r.pids_limit.filter(|&v| v != 0) {
        set("pids.max", "pids_limit", unlimited_as_max(pids))?;
    }
    for (size, limit) in &r.hugepage_limits {
        set(
            &format!("hugetlb.{size}.limit_in_bytes"),
            "hugepage_limits",
            limit.max(&-1).to_string(),
        )?;
    }
    Ok(())
}

/// v2 limits, all in the one dir; `unified` last, so it has the final word.
pub(super) fn apply_v2(dir: &Path, r: &Resources) -> Result<Restore, CgroupError> {
    apply_all_or_nothing(r, |journal, r| write_v2(journal, dir, r))
}

fn write_v2(journal: &mut Restore, dir: &Path, r: &Resources) -> Result<(), CgroupError> {
    let mut set =
        |file: &str, field: &str, value: String| journal.write(&dir.join(file), field, &value);

    if let Some(shares) = r.cpu_shares.filter(|&v| v != 0) {
        set("cpu.weight", "cpu_shares", cpu_weight(shares).to_string())?;
    }
    let quota = r.cpu_quota.filter(|&v| v != 0);
    let period = r.cpu_period.filter(|&v| v != 0);
    if quota.is_some() || period.is_some() {
        // "<quota|max> [period]": without a period the kernel keeps its own.
        let quota = quota.map_or_else(|| "max".to_owned(), unlimited_as_max);
        let value = match period {
            Some(period) => format!("{quota} {period}"),
            None => quota,
        };
        set("cpu.max", "cpu_quota", value)?;
    }
    if let Some(cpus) = r.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
        set("cpuset.cpus", "cpuset_cpus", cpus.clone())?;
    }
    if let Some(mems) = r.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
        set("cpuset.mems", "cpuset_mems", mems.clone())?;
    }

    let (memory, swap) = memory_limits(r)?;
    if let Some(memory) = memory {
        set(
            "memory.max",
            "memory_limit_in_bytes",
            unlimited_as_max(memory),
        )?;
    }
    let swap_file = dir.join("memory.swap.max");
    // v2 limits swap alone, memory+swap minus memory; no file, no swap accounting.
    if let Some(swap) = swap.filter(|_| swap_file.exists()) {
        let value = match memory {
            _ if swap < 0 => "max".to_owned(),
            Some(memory) if memory > 0 => (swap - memory).to_string(),
            _ => {
                return Err(CgroupError::invalid(
                    "memory_swap_limit",
                    swap.to_string(),
                    "a swap limit needs a memory limit on cgroup v2",
                ));
            }
        };
        set("memory.swap.max", "memory_swap_limit_in_bytes", value)?;
    }

    if let Some(pids) = r.pids_limit.filter(|&v| v != 0) {
        set("pids.max", "pids_limit", unlimited_as_max(pids))?;
    }
    for (size, limit) in &r.hugepage_limits {
        set(
            &format!("hugetlb.{size}.max"),
            "hugepage_limits",
            unlimited_as_max(*limit),
        )?;
    }
    for (key, value) in &r.unified {
        if key.is_empty() || key.contains('/') || key.contains("..") {
            return Err(CgroupError::invalid(
                "unified",
                key,
                "must be a control file name",
            ));
        }
        set(key, &format!("unified[{key}]"), value.clone())?;
    }
    Ok(())
}

/// v1 `cpu.shares` [2, 262144] onto v2 `cpu.weight` [1, 10000] as runc
/// (since 1.3.2) and crun (since 1.23) map them: a log-quadratic curve
/// through (2, 1), (1024, 100) and (262144, 10000), so v1's default share
/// lands on v2's default weight and a 1-CPU container weighs as much as
/// the pod's sandbox leaf (the old linear map gave it 39).
pub(super) fn cpu_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    // Exact in f64 (shares < 2^18).
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    // Positive and at most 10000 by the bounds above.
    let weight = 10f64.powf(exponent).ceil() as u64;
    weight.clamp(1, 10_000)
}

/// A negative limit is "no limit".
fn unlimited_as_max(value: i64) -> String {
    if value < 0 {
        "max".to_owned()
    } else {
        value.to_string()
    }
}
