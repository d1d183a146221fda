//! Generates `cri` from crid's own CRI proto.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "cri/runtime_v1.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    tonic_prost_build::configure()
        // crid keeps CRI configs in its store (JSON).
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Records written when the value was a string must still load.
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(deserialize_with = \"crate::env_value::deserialize\")]",
        )
        .compile_protos(&[PROTO], &["cri"])?;
    Ok(())
}
