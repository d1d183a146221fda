//! crid's CRI proto against the `k8s-cri` crate's (Kubernetes 1.32 level):
//! for every message both have, a value with every field set to a distinct
//! non-default value is encoded by one side and decoded by the other, both
//! ways, and compared field by field by name. A field whose number or type
//! disagreed would land elsewhere, fail to decode, or read back different.

use std::cell::Cell;
use std::collections::HashMap;

use prost::Message;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

/// Fields crid's proto has that the 1.32 one lacks (1.33 to 1.36 additions),
/// each with a field of the same message that tells the message apart.
const ADDED_FIELDS: &[(&str, &str)] = &[
    ("image_sub_path", "recursive_read_only"),
    ("image_ref", "user_specified_image"),
    ("stop_signal", "tty"),
    ("stop_signal", "finished_at"),
    ("user_namespaces_host_network", "supplemental_groups_policy"),
    ("io", "memory"),
    ("psi", "usage_core_nano_seconds"),
    ("psi", "working_set_bytes"),
];

/// Builds any generated message with every field set: nested messages
/// present, one element in every list and map, and each scalar a value no
/// other field of the tree has (signed integers negative, so a signedness
/// mismatch shows).
struct Filler<'a> {
    next: &'a Cell<u32>,
    depth: u32,
}

impl Filler<'_> {
    fn tick(&self) -> u32 {
        let n = self.next.get() + 1;
        self.next.set(n);
        n
    }
    fn nested(&self) -> Self {
        assert!(self.depth < 64, "message nesting too deep: a cycle?");
        Filler {
            next: self.next,
            depth: self.depth + 1,
        }
    }
}

impl<'de> Deserializer<'de> for Filler<'_> {
    type Error = de::value::Error;

    // Only KeyValue.value asks for "anything" (it accepts a string or bytes).
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        self.deserialize_string(v)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_bool(true)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_i32(-(self.tick() as i32))
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_i64(-i64::from(self.tick()) * 1_000_000_007)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_u32(self.tick())
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_u64(u64::from(self.tick()) * 1_000_000_007)
    }
    // Bytes fields are Vec<u8>, filled one u8 at a time: ASCII, so that the
    // one field that was a string (KeyValue.value) still decodes as one.
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_u8(b'a' + (self.tick() % 26) as u8)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_f64(f64::from(self.tick()) + 0.5)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_string(format!("value-{}", self.tick()))
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_some(self.nested())
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_seq(One {
            filler: Some(self.nested()),
            key: false,
        })
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_map(One {
            filler: Some(self.nested()),
            key: true,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_map(Fields {
            filler: self.nested(),
            fields: fields.iter(),
        })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i128 u16 u128 f32 char str bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A list or map of exactly one element.
struct One<'a> {
    filler: Option<Filler<'a>>,
    key: bool,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = de::value::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.filler.take().map(|f| seed.deserialize(f)).transpose()
    }
}

impl<'de> MapAccess<'de> for One<'_> {
    type Error = de::value::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        if !self.key {
            return Ok(None);
        }
        self.key = false;
        let filler = self
            .filler
            .as_ref()
            .map(Filler::nested)
            .expect("value follows key");
        seed.deserialize(filler).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let filler = self.filler.take().expect("one value per key");
        seed.deserialize(filler)
    }
}

/// The fields of a message, each named and then filled.
struct Fields<'a> {
    filler: Filler<'a>,
    fields: std::slice::Iter<'static, &'static str>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = de::value::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        self.fields
            .next()
            .map(|name| seed.deserialize((*name).into_deserializer()))
            .transpose()
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        seed.deserialize(self.filler.nested())
    }
}

fn filled<T: de::DeserializeOwned>() -> T {
    let next = Cell::new(0);
    T::deserialize(Filler {
        next: &next,
        depth: 0,
    })
    .expect("every generated message can be filled")
}

/// `sent` and `received` (JSON of the two sides' values) agree on every
/// field both know. A field only one side knows must be one of ADDED_FIELDS.
fn compare(path: &str, sent: &Value, received: &Value, problems: &mut Vec<String>) {
    match (sent, received) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let field = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => compare(&field, value, other, problems),
                    None if added(key, a) || added(key, b) => {}
                    None => problems.push(format!("{field}: missing on the other side")),
                }
            }
            for key in b.keys().filter(|key| !a.contains_key(*key)) {
                if !(added(key, a) || added(key, b)) {
                    problems.push(format!("{path}.{key}: missing on the other side"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{path}[{i}]"), x, y, problems);
            }
        }
        // KeyValue.value: bytes on one side, string on the other; the same
        // on the wire.
        (Value::String(s), Value::Array(bytes)) | (Value::Array(bytes), Value::String(s))
            if as_bytes(bytes).as_deref() == Some(s.as_bytes()) => {}
        (a, b) if a == b => {}
        (a, b) => problems.push(format!("{path}: sent {a}, received {b}")),
    }
}

fn added(key: &str, message: &serde_json::Map<String, Value>) -> bool {
    ADDED_FIELDS
        .iter()
        .any(|(field, sibling)| *field == key && message.contains_key(*sibling))
}

fn as_bytes(values: &[Value]) -> Option<Vec<u8>> {
    values
        .iter()
        .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
        .collect()
}

fn check<Ours, Theirs>(name: &str, problems: &mut Vec<String>)
where
    Ours: Message + Default + serde::Serialize + de::DeserializeOwned,
    Theirs: Message + Default + serde::Serialize + de::DeserializeOwned,
{
    let ours: Ours = filled();
    match Theirs::decode(ours.encode_to_vec().as_slice()) {
        Ok(theirs) => compare(
            &format!("{name} (ours to theirs)"),
            &json(&ours),
            &json(&theirs),
            problems,
        ),
        Err(e) => problems.push(format!("{name}: k8s-cri cannot decode ours: {e}")),
    }
    let theirs: Theirs = filled();
    match Ours::decode(theirs.encode_to_vec().as_slice()) {
        Ok(ours) => compare(
            &format!("{name} (theirs to ours)"),
            &json(&theirs),
            &json(&ours),
            problems,
        ),
        Err(e) => problems.push(format!("{name}: ours cannot decode k8s-cri's: {e}")),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("generated messages serialize")
}

macro_rules! messages_agree {
    ($($message:ident),* $(,)?) => {{
        let mut problems = Vec::new();
        $(check::<proto::cri::$message, k8s_cri::v1::$message>(stringify!($message), &mut problems);)*
        problems
    }};
}

#[test]
fn every_shared_message_has_the_same_wire_format() {
    let problems = messages_agree!(
        AttachRequest,
        AttachResponse,
        AuthConfig,
        CdiDevice,
        Capability,
        CheckpointContainerRequest,
        CheckpointContainerResponse,
        Container,
        ContainerAttributes,
        ContainerConfig,
        ContainerEventResponse,
        ContainerFilter,
        ContainerMetadata,
        ContainerMetrics,
        ContainerResources,
        ContainerStateValue,
        ContainerStats,
        ContainerStatsFilter,
        ContainerStatsRequest,
        ContainerStatsResponse,
        ContainerStatus,
        ContainerStatusRequest,
        ContainerStatusResponse,
        ContainerUser,
        CpuUsage,
        CreateContainerRequest,
        CreateContainerResponse,
        DnsConfig,
        Device,
        ExecRequest,
        ExecResponse,
        ExecSyncRequest,
        ExecSyncResponse,
        FilesystemIdentifier,
        FilesystemUsage,
        GetEventsRequest,
        HugepageLimit,
        IdMapping,
        Image,
        ImageFilter,
        ImageFsInfoRequest,
        ImageFsInfoResponse,
        ImageSpec,
        ImageStatusRequest,
        ImageStatusResponse,
        Int64Value,
        KeyValue,
        LinuxContainerConfig,
        LinuxContainerResources,
        LinuxContainerSecurityContext,
        LinuxContainerUser,
        LinuxPodSandboxConfig,
        LinuxPodSandboxStats,
        LinuxPodSandboxStatus,
        LinuxRuntimeConfiguration,
        LinuxSandboxSecurityContext,
        ListContainerStatsRequest,
        ListContainerStatsResponse,
        ListContainersRequest,
        ListContainersResponse,
        ListImagesRequest,
        ListImagesResponse,
        ListMetricDescriptorsRequest,
        ListMetricDescriptorsResponse,
        ListPodSandboxMetricsRequest,
        ListPodSandboxMetricsResponse,
        ListPodSandboxRequest,
        ListPodSandboxResponse,
        ListPodSandboxStatsRequest,
        ListPodSandboxStatsResponse,
        MemoryUsage,
        Metric,
        MetricDescriptor,
        Mount,
        Namespace,
        NamespaceOption,
        NetworkConfig,
        NetworkInterfaceUsage,
        NetworkUsage,
        PodIp,
        PodSandbox,
        PodSandboxAttributes,
        PodSandboxConfig,
        PodSandboxFilter,
        PodSandboxMetadata,
        PodSandboxMetrics,
        PodSandboxNetworkStatus,
        PodSandboxStateValue,
        PodSandboxStats,
        PodSandboxStatsFilter,
        PodSandboxStatsRequest,
        PodSandboxStatsResponse,
        PodSandboxStatus,
        PodSandboxStatusRequest,
        PodSandboxStatusResponse,
        PortForwardRequest,
        PortForwardResponse,
        PortMapping,
        ProcessUsage,
        PullImageRequest,
        PullImageResponse,
        RemoveContainerRequest,
        RemoveContainerResponse,
        RemoveImageRequest,
        RemoveImageResponse,
        RemovePodSandboxRequest,
        RemovePodSandboxResponse,
        ReopenContainerLogRequest,
        ReopenContainerLogResponse,
        RunPodSandboxRequest,
        RunPodSandboxResponse,
        RuntimeCondition,
        RuntimeConfig,
        RuntimeConfigRequest,
        RuntimeConfigResponse,
        RuntimeFeatures,
        RuntimeHandler,
        RuntimeHandlerFeatures,
        RuntimeStatus,
        SeLinuxOption,
        SecurityProfile,
        StartContainerRequest,
        StartContainerResponse,
        StatusRequest,
        StatusResponse,
        StopContainerRequest,
        StopContainerResponse,
        StopPodSandboxRequest,
        StopPodSandboxResponse,
        SwapUsage,
        UInt64Value,
        UpdateContainerResourcesRequest,
        UpdateContainerResourcesResponse,
        UpdateRuntimeConfigRequest,
        UpdateRuntimeConfigResponse,
        UserNamespace,
        VersionRequest,
        VersionResponse,
        WindowsContainerConfig,
        WindowsContainerResources,
        WindowsContainerSecurityContext,
        WindowsContainerStats,
        WindowsCpuGroupAffinity,
        WindowsCpuUsage,
        WindowsFilesystemUsage,
        WindowsMemoryUsage,
        WindowsNamespaceOption,
        WindowsNetworkInterfaceUsage,
        WindowsNetworkUsage,
        WindowsPodSandboxConfig,
        WindowsPodSandboxStats,
        WindowsProcessUsage,
        WindowsSandboxSecurityContext,
    );
    assert!(
        problems.is_empty(),
        "wire format differs:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_filler_sets_every_field() {
    // Without this the comparison above could pass on empty values.
    let config: proto::cri::ContainerConfig = filled();
    let json = json(&config);
    let unset: Vec<_> = json
        .as_object()
        .expect("a message is an object")
        .iter()
        .filter(|(_, v)| {
            matches!(v, Value::Null | Value::Bool(false))
                || v.as_i64() == Some(0)
                || v.as_str() == Some("")
                || v.as_array().is_some_and(Vec::is_empty)
                || v.as_object().is_some_and(|o| o.is_empty())
        })
        .map(|(k, _)| k.clone())
        .collect();
    assert!(unset.is_empty(), "fields left at their default: {unset:?}");
    let _: HashMap<String, String> = config.labels;
}

macro_rules! enums_agree {
    ($($enum:ident)::+) => {{
        let mut problems = Vec::new();
        let mut values = 0;
        for value in -1..=100 {
            let ours = proto::cri::$($enum)::+::try_from(value).ok().map(|e| e.as_str_name());
            let theirs = k8s_cri::v1::$($enum)::+::try_from(value).ok().map(|e| e.as_str_name());
            values += usize::from(ours.is_some());
            if ours != theirs {
                problems.push(format!("{} = {value}: ours {ours:?}, theirs {theirs:?}", stringify!($($enum)::+)));
            }
        }
        assert!(values >= 2, "{} has values", stringify!($($enum)::+));
        problems
    }};
}

#[test]
fn every_shared_enum_has_the_same_values() {
    let problems = [
        enums_agree!(Protocol),
        enums_agree!(MountPropagation),
        enums_agree!(NamespaceMode),
        enums_agree!(SupplementalGroupsPolicy),
        enums_agree!(security_profile::ProfileType),
        enums_agree!(PodSandboxState),
        enums_agree!(ContainerState),
        enums_agree!(ContainerEventType),
        enums_agree!(MetricType),
        enums_agree!(CgroupDriver),
    ]
    .concat();
    assert!(
        problems.is_empty(),
        "enums differ:\n{}",
        problems.join("\n")
    );
}
