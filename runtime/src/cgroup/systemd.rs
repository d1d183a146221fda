//! The systemd cgroup driver: systemd owns the units, crid asks it over
//! D-Bus (org.freedesktop.systemd1.Manager), as kubelet expects when its
//! `cgroupDriver` is `systemd`.
//!
//! kubelet names a pod by its slice (`kubepods-burstable-pod<uid>.slice`,
//! where `-` nests: `kubepods.slice/kubepods-burstable.slice/…`). Each pod
//! gets a scope `crid-<sandbox id>.scope` for its monitor and pause, and each
//! container a scope `crid-<container id>.scope` beside it, both transient,
//! `Delegate=yes` (so crid may write the files under them) and carrying the
//! limits systemd can express as unit properties, which keeps systemd's view
//! (and what a `daemon-reload` re-applies) in line with the files. A pod
//! without a `cgroup_parent` has its scopes in `system.slice`, as runc puts
//! such containers: crid then makes no slice that it would have to remove
//! while another pod may be starting in it.
//!
//! A scope cannot exist without a process, so it is started with the pids
//! that belong in it: the monitor's and pause's once the monitor runs, and a
//! container's init right after its fork, before it joins any namespace (the
//! monitor holds it back until crid has placed it; see `ContainerCreate`).

use std::time::Duration;

use tokio_stream::StreamExt;
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, MessageStream, OwnedObjectPath, OwnedVariant, Variant};

use super::limits::cpu_weight;
use super::{CgroupError, Placement};
use crate::spec::Resources;

const SERVICE: &str = "org.freedesktop.systemd1";
const OBJECT: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// The interface of a scope unit's cgroup properties.
const SCOPE: &str = "org.freedesktop.systemd1.Scope";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
/// Bound on one systemd job (start or stop of a unit), not an expectation.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);
/// Where systemd marks itself as the running init (sd_booted(3)).
const BOOTED_MARKER: &str = "/run/systemd/system";

/// The slice of pods that come without a `cgroup_parent`.
pub const DEFAULT_SLICE: &str = "system.slice";

// ---------------------------------------------------------------- names

/// Checks a systemd `cgroup_parent`: a slice name as kubelet passes it
/// (`kubepods-burstable-pod<uid>.slice`), which systemd can nest.
pub fn validate_slice(name: &str) -> Result<(), CgroupError> {
    let refuse = |reason: &str| {
        Err(CgroupError::invalid(
            "linux.cgroup_parent",
            name,
            format!(
                "{reason}; the systemd cgroup driver wants a slice name such as \
                 kubepods-burstable-pod<uid>.slice"
            ),
        ))
    };
    let Some(prefix) = name.strip_suffix(".slice") else {
        return refuse("must end in .slice");
    };
    if name.len() > 255 {
        return refuse("is longer than a unit name may be (255)");
    }
    if prefix.is_empty() || prefix == "-" {
        return refuse("must name a slice below the root slice");
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-' | '\\'))
    {
        return refuse("may hold only ASCII letters, digits and :_.-\\");
    }
    if prefix.starts_with('-') || prefix.ends_with('-') || prefix.contains("--") {
        return refuse("has an empty level between dashes");
    }
    Ok(())
}

/// The cgroup of a slice: each `-` opens a level, so `a-b-c.slice` lives at
/// `/a.slice/a-b.slice/a-b-c.slice`.
pub fn slice_path(name: &str) -> Result<String, CgroupError> {
    validate_slice(name)?;
    let prefix = name.trim_end_matches(".slice");
    let mut path = String::new();
    for (end, _) in prefix
        .match_indices('-')
        .chain(std::iter::once((prefix.len(), "")))
    {
        path.push('/');
        path.push_str(&prefix[..end]);
        path.push_str(".slice");
    }
    Ok(path)
}

/// The scope of a pod's monitor and pause (by sandbox id) or of a container.
pub fn scope_name(id: &str) -> String {
    format!("crid-{id}.scope")
}

/// The unit whose cgroup `cgroup` is, when crid made it with this driver: a
/// scope named by [`scope_name`].
pub fn unit_of(cgroup: &str) -> Option<&str> {
    let leaf = cgroup.rsplit('/').next()?;
    (leaf.starts_with("crid-") && leaf.ends_with(".scope")).then_some(leaf)
}

/// The slice a placement's pod cgroup is (its last level).
pub fn pod_slice(placement: &Placement) -> &str {
    placement.pod.rsplit('/').next().unwrap_or_default()
}

/// The placement of a new pod: in kubelet's slice, or in [`DEFAULT_SLICE`].
/// Either way the slice is not crid's: its pods' scopes are.
pub fn placement(sandbox_id: &str, cgroup_parent: Option<&str>) -> Result<Placement, CgroupError> {
    let slice = cgroup_parent
        .filter(|parent| !parent.is_empty())
        .unwrap_or(DEFAULT_SLICE);
    let pod = slice_path(slice)?;
    Ok(Placement {
        sandbox: format!("{pod}/{}", scope_name(sandbox_id)),
        pod,
        owns_pod: false,
        systemd: true,
    })
}

// ---------------------------------------------------------------- properties

/// A unit property's value, in the D-Bus types systemd wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    U64(u64),
    Str(String),
    /// `au`
    Pids(Vec<u32>),
    /// `ay`: a CPU or NUMA node bit mask, lowest bit first.
    Mask(Vec<u8>),
}

pub type Property = (&'static str, Value);

/// systemd's "no limit" for byte and count properties.
const INFINITY: u64 = u64::MAX;
/// systemd keeps CPU quotas in steps of 10 ms per second (1%).
const QUOTA_STEP_USEC: u64 = 10_000;
/// The kernel's CFS period when none is asked for.
const DEFAULT_PERIOD_USEC: u64 = 100_000;
/// The kernel's NR_CPUS ceiling: a mask never needs more bits.
const MAX_CPUS: usize = 8192;

/// The limits of `r` that systemd can express, as unit properties (v2 or
/// v1 names). The rest (hugetlb, `unified`, v1 cpusets) only go to the
/// cgroup files. Unset (None, 0, empty) limits are left out.
pub fn limit_properties(r: &Resources, v2: bool) -> Result<Vec<Property>, CgroupError> {
    let mut properties = Vec::new();
    if let Some(shares) = r.cpu_shares.filter(|&v| v != 0) {
        properties.push(if v2 {
            ("CPUWeight", Value::U64(cpu_weight(shares)))
        } else {
            ("CPUShares", Value::U64(shares))
        });
    }
    let quota = r.cpu_quota.filter(|&v| v != 0);
    let period = r.cpu_period.filter(|&v| v != 0);
    if let Some(period) = period {
        properties.push(("CPUQuotaPeriodUSec", Value::U64(period)));
    }
    if let Some(quota) = quota {
        let per_second = match u64::try_from(quota) {
            Ok(quota) => {
                let period = period.unwrap_or(DEFAULT_PERIOD_USEC);
                let exact = u128::from(quota) * 1_000_000 / u128::from(period);
                // Rounded up to systemd's step, so the limit is never tighter
                // than asked; crid writes the exact quota to the file after.
                let steps = exact.div_ceil(u128::from(QUOTA_STEP_USEC));
                u64::try_from(steps * u128::from(QUOTA_STEP_USEC)).unwrap_or(INFINITY)
            }
            Err(_) => INFINITY,
        };
        properties.push(("CPUQuotaPerSecUSec", Value::U64(per_second)));
    }
    if v2 {
        if let Some(cpus) = r.cpuset_cpus.as_deref().filter(|v| !v.is_empty()) {
            properties.push(("AllowedCPUs", Value::Mask(mask("cpuset_cpus", cpus)?)));
        }
        if let Some(mems) = r.cpuset_mems.as_deref().filter(|v| !v.is_empty()) {
            properties.push((
                "AllowedMemoryNodes",
                Value::Mask(mask("cpuset_mems", mems)?),
            ));
        }
    }
    let (memory, swap) = r.memory_and_swap();
    if let Some(memory) = memory {
        let name = if v2 { "MemoryMax" } else { "MemoryLimit" };
        properties.push((name, Value::U64(limit(memory))));
    }
    // v2 limits swap alone (memory+swap minus memory); a swap below memory
    // is refused by the file writer, with the field's name.
    if v2 && let Some(swap) = swap {
        match memory {
            _ if swap < 0 => properties.push(("MemorySwapMax", Value::U64(INFINITY))),
            Some(memory) if memory > 0 && swap >= memory => {
                properties.push(("MemorySwapMax", Value::U64((swap - memory).unsigned_abs())))
            }
            _ => {}
        }
    }
    if let Some(pids) = r.pids_limit.filter(|&v| v != 0) {
        properties.push(("TasksMax", Value::U64(limit(pids))));
    }
    Ok(properties)
}

/// Everything a new scope gets: where it goes, the pids it starts with, the
/// accounting kubelet's stats need, delegation, and the limits.
pub fn scope_properties(
    slice: &str,
    pids: &[u32],
    r: &Resources,
    v2: bool,
) -> Result<Vec<Property>, CgroupError> {
    let mut properties = vec![
        ("Description", Value::Str("crid pod or container".into())),
        ("Slice", Value::Str(slice.into())),
        ("PIDs", Value::Pids(pids.to_vec())),
        // Its cgroup is crid's to write under.
        ("Delegate", Value::Bool(true)),
        // Not ordered against shutdown.target and friends: a pod is not a
        // boot-time service.
        ("DefaultDependencies", Value::Bool(false)),
        // A scope that failed (a kill, an OOM) is unloaded like a finished
        // one, so none stays behind as "failed".
        ("CollectMode", Value::Str("inactive-or-failed".into())),
        ("MemoryAccounting", Value::Bool(true)),
        ("CPUAccounting", Value::Bool(true)),
        ("TasksAccounting", Value::Bool(true)),
    ];
    properties.push(if v2 {
        ("IOAccounting", Value::Bool(true))
    } else {
        ("BlockIOAccounting", Value::Bool(true))
    });
    properties.extend(limit_properties(r, v2)?);
    Ok(properties)
}

/// The v2 control files systemd writes when it applies a scope's limit
/// properties: each touched controller's whole set, not only the file of
/// the property that changed.
pub(super) const LIMIT_FILES: &[&str] = &[
    "cpu.weight",
    "cpu.idle",
    "cpu.max",
    "cpuset.cpus",
    "cpuset.mems",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "memory.swap.max",
    "memory.zswap.max",
    "pids.max",
];

fn limit(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(INFINITY)
}

/// A cpuset list (`0-3,6`) as systemd's bit mask (byte 0 holds CPUs 0-7).
fn mask(field: &str, list: &str) -> Result<Vec<u8>, CgroupError> {
    let bad = |reason: &str| CgroupError::invalid(field, list, reason);
    let number = |text: &str| -> Result<usize, CgroupError> {
        let n: usize = text
            .trim()
            .parse()
            .map_err(|_| bad("must be a list such as 0-3,6"))?;
        if n >= MAX_CPUS {
            return Err(bad("names a CPU or node beyond 8191"));
        }
        Ok(n)
    };
    let mut bits = Vec::new();
    for item in list.split(',') {
        let (first, last) = match item.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => (number(item)?, number(item)?),
        };
        if first > last {
            return Err(bad("has a range that ends before it starts"));
        }
        if bits.len() <= last / 8 {
            bits.resize(last / 8 + 1, 0u8);
        }
        for n in first..=last {
            bits[n / 8] |= 1 << (n % 8);
        }
    }
    Ok(bits)
}

fn variant(value: &Value) -> Variant<'_> {
    match value {
        Value::Bool(v) => Variant::from(*v),
        Value::U64(v) => Variant::from(*v),
        Value::Str(v) => Variant::from(v.as_str()),
        Value::Pids(v) => Variant::from(v.clone()),
        Value::Mask(v) => Variant::from(v.clone()),
    }
}

// ---------------------------------------------------------------- D-Bus

/// A connection to systemd (PID 1), shared by clones.
#[derive(Debug, Clone)]
pub struct Systemd {
    /// Replaced when it breaks (the bus restarted), for the next call.
    connection: std::sync::Arc<std::sync::Mutex<Connection>>,
}

fn systemd_error(what: impl Into<String>, reason: impl std::fmt::Display) -> CgroupError {
    CgroupError::Systemd {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// systemd's answer for a unit it does not have loaded.
fn is_no_such_unit(error: &zbus::Error) -> bool {
    matches!(error, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

impl Systemd {
    /// Connects to systemd over the system bus, as kubelet, runc and
    /// containerd do. Refuses a host whose init is not systemd.
    pub async fn connect() -> Result<Systemd, CgroupError> {
        if !std::path::Path::new(BOOTED_MARKER).is_dir() {
            return Err(systemd_error(
                "the systemd cgroup driver",
                format!(
                    "systemd is not this host's init ({BOOTED_MARKER} is missing); \
                     set [runtime] cgroup_driver = \"cgroupfs\""
                ),
            ));
        }
        // Not systemd's private socket (/run/systemd/private): there systemd
        // signs its messages with a well-known name, which zbus refuses as a
        // sender.
        let connection = Systemd::open().await?;
        Ok(Systemd {
            connection: std::sync::Arc::new(std::sync::Mutex::new(connection)),
        })
    }

    async fn open() -> Result<Connection, CgroupError> {
        let connection = zbus::connection::Builder::system()
            .build()
            .await
            .map_err(|error| {
                systemd_error(
                    "connecting to systemd over the system bus (is dbus running?)",
                    error,
                )
            })?;
        // On the system bus systemd signals job ends only to subscribers.
        connection
            .call_method(Some(SERVICE), OBJECT, Some(MANAGER), "Subscribe", &())
            .await
            .map_err(|error| systemd_error("subscribing to systemd's signals", error))?;
        Ok(connection)
    }

    fn connection(&self) -> Connection {
        match self.connection.lock() {
            Ok(connection) => connection.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After an I/O error the connection is gone for good (the bus
    /// restarted): the next call gets a new one.
    async fn renew_if_broken(&self, error: &zbus::Error) {
        if !matches!(error, zbus::Error::InputOutput(_)) {
            return;
        }
        match Systemd::open().await {
            Ok(fresh) => {
                tracing::warn!(%error, "the connection to systemd broke; reconnected");
                match self.connection.lock() {
                    Ok(mut connection) => *connection = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
            }
            Err(reconnect) => tracing::warn!(%error, %reconnect, "the connection to systemd broke"),
        }
    }

    async fn call<B>(&self, method: &str, body: &B) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        self.call_at(OBJECT, MANAGER, method, body).await
    }

    async fn call_at<B>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        let result = self
            .connection()
            .call_method(Some(SERVICE), path, Some(interface), method, body)
            .await;
        if let Err(error) = &result {
            self.renew_if_broken(error).await;
        }
        result
    }

    /// Calls a Manager method that returns a job and waits until systemd
    /// has finished that job; its result ("done", "failed", …) is returned.
    /// `Ok(None)`: systemd has no such unit loaded.
    async fn run_job<B>(
        &self,
        unit: &str,
        method: &str,
        body: &B,
    ) -> Result<Option<String>, CgroupError>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        let what = || format!("{method} {unit}");
        // Listening before the call: the job may end before its reply is read.
        // Only systemd's signals about this unit: signals of other jobs would
        // queue unread here, and a full queue stops zbus reading the socket
        // (replies included); and another bus client could fake them.
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(SERVICE)
            .path(OBJECT)
            .interface(MANAGER)
            .member("JobRemoved")
            .arg(2, unit)
            .build()
            .map_err(|error| systemd_error(what(), error))?;
        let mut removed = match MessageStream::for_match_rule(rule, &self.connection(), None).await
        {
            Ok(removed) => removed,
            Err(error) => {
                self.renew_if_broken(&error).await;
                return Err(systemd_error(what(), error));
            }
        };
        let reply = tokio::time::timeout(JOB_TIMEOUT, self.call(method, body))
            .await
            .map_err(|_| systemd_error(what(), format!("no reply within {JOB_TIMEOUT:?}")))?;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) if is_no_such_unit(&error) => return Ok(None),
            Err(error) => return Err(systemd_error(what(), error)),
        };
        let job: OwnedObjectPath = reply
            .body()
            .deserialize()
            .map_err(|error| systemd_error(what(), error))?;
        let wait = async {
            while let Some(message) = removed.next().await {
                let message = message.map_err(|error| systemd_error(what(), error))?;
                let Ok((_id, path, _unit, result)) =
                    message
                        .body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if path == job {
                    return Ok(Some(result));
                }
            }
            Err(systemd_error(what(), "the connection to systemd closed"))
        };
        tokio::time::timeout(JOB_TIMEOUT, wait)
            .await
            .map_err(|_| systemd_error(what(), format!("no answer within {JOB_TIMEOUT:?}")))?
    }

    /// Starts the transient scope `unit` with `properties` (which hold its
    /// pids) and waits until it runs.
    pub async fn start_scope(
        &self,
        unit: &str,
        properties: &[Property],
    ) -> Result<(), CgroupError> {
        let properties: Vec<(&str, Variant<'_>)> = properties
            .iter()
            .map(|(name, value)| (*name, variant(value)))
            .collect();
        let auxiliary: Vec<(&str, Vec<(&str, Variant<'_>)>)> = Vec::new();
        let result = self
            .run_job(
                unit,
                "StartTransientUnit",
                &(unit, "fail", properties, auxiliary),
            )
            .await?;
        match result.as_deref() {
            Some("done") => Ok(()),
            other => {
                // Whatever systemd made of it goes: no half-started unit stays.
                let _ = self.stop(unit).await;
                Err(systemd_error(
                    format!("starting {unit}"),
                    format!("the job ended {}", other.unwrap_or("with no unit")),
                ))
            }
        }
    }

    /// Stops `unit` (killing what is left in it) and waits for that; a
    /// unit systemd does not have is fine. A failed unit is reset so that
    /// none stays listed.
    pub async fn stop(&self, unit: &str) -> Result<(), CgroupError> {
        let result = self.run_job(unit, "StopUnit", &(unit, "replace")).await?;
        if let Err(error) = self.call("ResetFailedUnit", &(unit,)).await
            && !is_no_such_unit(&error)
        {
            tracing::debug!(unit, %error, "reset-failed");
        }
        match result.as_deref() {
            None | Some("done") => Ok(()),
            Some(other) => Err(systemd_error(
                format!("stopping {unit}"),
                format!("the job ended {other}"),
            )),
        }
    }

    /// Changes properties of a running unit (a container's new limits);
    /// false if systemd has no such unit (its processes have all ended).
    pub async fn set_properties(
        &self,
        unit: &str,
        properties: &[Property],
    ) -> Result<bool, CgroupError> {
        let properties: Vec<(&str, Variant<'_>)> = properties
            .iter()
            .map(|(name, value)| (*name, variant(value)))
            .collect();
        match self
            .call("SetUnitProperties", &(unit, true, properties))
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_no_such_unit(&error) => Ok(false),
            Err(error) => Err(systemd_error(
                format!("setting properties of {unit}"),
                error,
            )),
        }
    }

    /// The values the running scope `unit` has now for the properties
    /// `names`, in the types SetUnitProperties takes back; None if systemd
    /// has no such unit (its processes have all ended).
    pub async fn properties(
        &self,
        unit: &str,
        names: &[&'static str],
    ) -> Result<Option<Vec<Property>>, CgroupError> {
        let what = || format!("reading properties of {unit}");
        let path: OwnedObjectPath = match self.call("GetUnit", &(unit,)).await {
            Ok(reply) => reply
                .body()
                .deserialize()
                .map_err(|error| systemd_error(what(), error))?,
            Err(error) if is_no_such_unit(&error) => return Ok(None),
            Err(error) => return Err(systemd_error(what(), error)),
        };
        let mut properties = Vec::with_capacity(names.len());
        for &name in names {
            let reply = self
                .call_at(path.as_str(), PROPERTIES, "Get", &(SCOPE, name))
                .await
                .map_err(|error| systemd_error(what(), error))?;
            let value: OwnedVariant = reply
                .body()
                .deserialize()
                .map_err(|error| systemd_error(what(), error))?;
            // Limits are `t`, CPU and node masks `ay` (see [`Value`]).
            let value = match u64::try_from(&value) {
                Ok(number) => Value::U64(number),
                Err(_) => Value::Mask(
                    Vec::<u8>::try_from(value)
                        .map_err(|error| systemd_error(format!("{} {name}", what()), error))?,
                ),
            };
            properties.push((name, value));
        }
        Ok(Some(properties))
    }

    /// Puts `previous` (read by [`Systemd::properties`]) back on `unit`
    /// after a failed update. systemd takes a set all or nothing, so if it
    /// refuses the set, each property is tried alone. Best effort: what
    /// cannot be put back is logged.
    pub async fn restore_properties(&self, unit: &str, previous: &[Property]) {
        let Err(error) = self.set_properties(unit, previous).await else {
            return;
        };
        tracing::warn!(unit, %error, "cannot put back the unit's properties at once; one by one");
        for property in previous {
            if let Err(error) = self
                .set_properties(unit, std::slice::from_ref(property))
                .await
            {
                tracing::warn!(unit, property = property.0, %error, "cannot put back a unit property after a failed update");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_nest_at_each_dash() {
        assert_eq!(
            slice_path("kubepods-burstable-pod12_34.slice").expect("valid"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice"
        );
        assert_eq!(
            slice_path("kubepods.slice").expect("valid"),
            "/kubepods.slice"
        );
        for bad in [
            "/kubepods/burstable/pod1",
            "kubepods",
            "-.slice",
            ".slice",
            "-kubepods.slice",
            "kubepods-.slice",
            "kube--pods.slice",
            "kube/pods.slice",
            "kube pods.slice",
        ] {
            let error = slice_path(bad).expect_err(bad);
            let CgroupError::Invalid { field, value, .. } = &error else {
                panic!("{bad}: {error:?}");
            };
            assert_eq!(
                (field.as_str(), value.as_str()),
                ("linux.cgroup_parent", bad)
            );
            assert!(error.to_string().contains(".slice"), "{error}");
        }
    }

    #[test]
    fn placement_in_kubelets_slice_or_crids_own() {
        let kubelet = placement("abc", Some("kubepods-besteffort-pod9.slice")).expect("valid");
        assert_eq!(
            kubelet,
            Placement {
                pod: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice"
                    .into(),
                sandbox: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod9.slice/crid-abc.scope".into(),
                owns_pod: false,
                systemd: true,
            }
        );
        assert_eq!(pod_slice(&kubelet), "kubepods-besteffort-pod9.slice");
        let default = placement("abc", None).expect("valid");
        assert_eq!(default.pod, "/system.slice");
        assert_eq!(default.sandbox, "/system.slice/crid-abc.scope");
        assert!(!default.owns_pod);
        assert_eq!(pod_slice(&default), "system.slice");
        assert!(placement("abc", Some("/kubepods/pod1")).is_err());
    }

    #[test]
    fn units_are_known_by_their_cgroup() {
        assert_eq!(
            unit_of("/kubepods.slice/kubepods-pod1.slice/crid-c0ffee.scope"),
            Some("crid-c0ffee.scope")
        );
        assert_eq!(unit_of("/kubepods/pod1/c0ffee"), None);
        assert_eq!(unit_of("/crid/abc/sandbox"), None);
        assert_eq!(unit_of("/system.slice/cron.service"), None);
        assert_eq!(scope_name("c0ffee"), "crid-c0ffee.scope");
    }

    #[test]
    fn limits_become_v2_properties() {
        let r = Resources {
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            cpuset_cpus: Some("0-2,9".into()),
            cpuset_mems: Some("0".into()),
            memory_limit: Some(64 << 20),
            memory_swap_limit: Some(96 << 20),
            pids_limit: Some(42),
            ..Resources::default()
        };
        assert_eq!(
            limit_properties(&r, true).expect("valid"),
            vec![
                ("CPUWeight", Value::U64(100)),
                ("CPUQuotaPeriodUSec", Value::U64(100_000)),
                ("CPUQuotaPerSecUSec", Value::U64(500_000)),
                ("AllowedCPUs", Value::Mask(vec![0b0000_0111, 0b0000_0010])),
                ("AllowedMemoryNodes", Value::Mask(vec![1])),
                ("MemoryMax", Value::U64(64 << 20)),
                ("MemorySwapMax", Value::U64(32 << 20)),
                ("TasksMax", Value::U64(42)),
            ]
        );
    }

    #[test]
    fn limits_become_v1_properties() {
        let r = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(-1),
            cpuset_cpus: Some("1".into()),
            memory_limit: Some(-1),
            pids_limit: Some(-1),
            ..Resources::default()
        };
        // No cpuset on v1 (the files take it), unlimited as systemd's infinity.
        assert_eq!(
            limit_properties(&r, false).expect("valid"),
            vec![
                ("CPUShares", Value::U64(512)),
                ("CPUQuotaPerSecUSec", Value::U64(u64::MAX)),
                ("MemoryLimit", Value::U64(u64::MAX)),
                ("TasksMax", Value::U64(u64::MAX)),
            ]
        );
        assert!(
            limit_properties(&Resources::default(), false)
                .expect("valid")
                .is_empty()
        );
    }

    #[test]
    fn quotas_round_up_to_systemds_step() {
        // 12345 µs per 100 ms is 123450 µs per second: 130000 in 1% steps.
        let r = Resources {
            cpu_quota: Some(12_345),
            ..Resources::default()
        };
        assert_eq!(
            limit_properties(&r, true).expect("valid"),
            vec![("CPUQuotaPerSecUSec", Value::U64(130_000))]
        );
    }

    #[test]
    fn bad_cpu_lists_name_the_field() {
        for (list, reason) in [
            ("a", "list"),
            ("3-1", "ends before"),
            ("0-9000", "beyond"),
            ("", "list"),
        ] {
            let error = mask("cpuset_cpus", list).expect_err(list);
            assert!(
                matches!(&error, CgroupError::Invalid { field, .. } if field == "cpuset_cpus"),
                "{error:?}"
            );
            assert!(error.to_string().contains(reason), "{list}: {error}");
        }
        assert_eq!(mask("cpuset_cpus", "8").expect("valid"), vec![0, 1]);
    }

    #[test]
    fn new_scopes_are_delegated_and_placed() {
        let properties = scope_properties("kubepods.slice", &[7, 8], &Resources::default(), true)
            .expect("valid");
        for expected in [
            ("Slice", Value::Str("kubepods.slice".into())),
            ("PIDs", Value::Pids(vec![7, 8])),
            ("Delegate", Value::Bool(true)),
            ("DefaultDependencies", Value::Bool(false)),
            ("IOAccounting", Value::Bool(true)),
        ] {
            assert!(
                properties.contains(&expected),
                "{expected:?} in {properties:?}"
            );
        }
    }
}
