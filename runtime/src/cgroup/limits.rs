//! Writing a container's limits into its cgroup, v1 and v2.

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

/// The checks of `resources` that need no cgroup, for callers that act on
/// them elsewhere first (systemd's unit properties).
pub(super) fn check(resources: &Resources) -> Result<(), CgroupError> {
    memory_limits(resources)?;
    for (size, _) in &resources.hugepage_limits {
        check_page_size(size)?;
    }
    Ok(())
}

/// v1 limits, each in the hierarchy of its controller (the file name's
/// first word).
pub(super) fn apply_v1(mounts: &[V1Mount], cgroup: &str, r: &Resources) -> Result<(), CgroupError> {
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
    let set = |file: &str, value: String| write(&path(file)?, &value);

    if let Some(shares) = r.cpu_shares.filter(|&v| v != 0) {
        set("cpu.shares", shares.to_string())?;
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
        match set("cpu.cfs_period_us", period.clone()) {
            Err(CgroupError::Write { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && quota.is_some() =>
            {
                period_pending = true;
            }
            result => result?,
        }
    }
    if let Some(quota) = quota {
        set("cpu.cfs_quota_us", quota)?;
    }
    if let Some(period) = period.filter(|_| period_pending) {
        set("cpu.cfs_period_us", period)?;
    }
    if let Some(cpus) = r.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
        set("cpuset.cpus", cpus.clone())?;
    }
    if let Some(mems) = r.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
        set("cpuset.mems", mems.clone())?;
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
        let memory = memory.map(|v| (&limit_file, v.max(-1).to_string()));
        let swap = swap.map(|v| (&swap_file, v.max(-1).to_string()));
        let order = if raising {
            [swap, memory]
        } else {
            [memory, swap]
        };
        for (file, value) in order.into_iter().flatten() {
            write(file, &value)?;
        }
    }

    if let Some(pids) = r.pids_limit.filter(|&v| v != 0) {
        set("pids.max", unlimited_as_max(pids))?;
    }
    for (size, limit) in &r.hugepage_limits {
        check_page_size(size)?;
        set(
            &format!("hugetlb.{size}.limit_in_bytes"),
            limit.max(&-1).to_string(),
        )?;
    }
    Ok(())
}

/// v2 limits, all in the one dir; `unified` last, so it has the final word.
pub(super) fn apply_v2(dir: &Path, r: &Resources) -> Result<(), CgroupError> {
    let set = |file: &str, value: String| write(&dir.join(file), &value);

    if let Some(shares) = r.cpu_shares.filter(|&v| v != 0) {
        set("cpu.weight", cpu_weight(shares).to_string())?;
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
        set("cpu.max", value)?;
    }
    if let Some(cpus) = r.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
        set("cpuset.cpus", cpus.clone())?;
    }
    if let Some(mems) = r.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
        set("cpuset.mems", mems.clone())?;
    }

    let (memory, swap) = memory_limits(r)?;
    if let Some(memory) = memory {
        set("memory.max", unlimited_as_max(memory))?;
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
        write(&swap_file, &value)?;
    }

    if let Some(pids) = r.pids_limit.filter(|&v| v != 0) {
        set("pids.max", unlimited_as_max(pids))?;
    }
    for (size, limit) in &r.hugepage_limits {
        check_page_size(size)?;
        set(&format!("hugetlb.{size}.max"), unlimited_as_max(*limit))?;
    }
    for (key, value) in &r.unified {
        if key.is_empty() || key.contains('/') || key.contains("..") {
            return Err(CgroupError::invalid(
                "unified",
                key,
                "must be a control file name",
            ));
        }
        set(key, value.clone())?;
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
