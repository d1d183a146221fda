//! crid's image store: references, registry pulls, the content store and
//! safe layer unpacking. No gRPC here: `cri-server` maps this API onto the
//! CRI ImageService and keeps image records in its own metadata store.
//!
//! # API
//! * [`Reference::parse`]`(&str) -> Result<Reference>`: the Docker reference
//!   grammar with kubelet's normalisation (`busybox` →
//!   `docker.io/library/busybox:latest`); `Display` prints the normal form.
//! * [`RegistryConfig`] per registry host (`endpoints` = mirrors tried in
//!   order before the host; `insecure`), in a `BTreeMap<String, RegistryConfig>`.
//! * [`Credentials::from_auth_config`]`(&AuthConfig, host)`: CRI `AuthConfig`
//!   → credentials (username/password, `auth`, identity token, registry token).
//! * [`ImageStore::open`]`(root, registries, PullLimits)`: layers fetched at
//!   once, and how long a registry may send nothing before a pull fails.
//! * [`ImageStore::pull`]`(&Reference, Option<Credentials>) -> Result<PulledImage>`
//!   (async). Two concurrent pulls of one image share the layer work; a pull
//!   of a present image downloads only the documents and missing layers.
//! * [`ImageStore::layer_dir`]`(chain_id) -> Result<PathBuf>`: an unpacked
//!   layer, usable as an overlayfs lower dir (whiteouts are overlay
//!   whiteouts: 0/0 char devices and `trusted.overlay.opaque=y`).
//! * [`ImageStore::remove_unreferenced`]`(keep_chain_ids, keep_blob_digests)`
//!   (async GC), [`ImageStore::fs_usage`] (async, for ImageFsInfo),
//!   [`ImageStore::read_blob`] (config JSON for a verbose ImageStatus),
//!   [`ImageStore::metrics`] (pull byte and layer counters).
//!
//! # Errors → gRPC codes
//! | [`ImageError`] | code |
//! |---|---|
//! | `InvalidReference`, `InvalidConfig` | InvalidArgument |
//! | `NotFound` | NotFound |
//! | `Unauthorized` | Unauthenticated (no credentials) / PermissionDenied |
//! | `Registry` | Unavailable |
//! | `DigestMismatch`, `UnsafeLayer`, `BadImage` | FailedPrecondition |
//! | `Io` | Internal |
//!
//! # Layer safety
//! Layers are unpacked by our own code over `pathrs` (tar only parses).
//! Entry names with `..` or a leading `/`, and any entry (or hard link
//! target) whose path goes through a symlink, fail the pull with
//! `UnsafeLayer` naming the layer digest and the entry. Symlink entries
//! themselves may point anywhere (they are data, never followed here).
//! Devices, fifos, hard links, ownership, modes, mtimes and xattrs are
//! applied as they are; `trusted.overlay.*` xattrs from a layer are dropped.
//!
//! # Store layout
//! `blobs/sha256/<hex>` (documents and compressed layers), `layers/<chain
//! hex>/` (unpacked), `tmp/` (in progress, cleared at open). A failed pull
//! leaves nothing in `tmp/` and nothing half-made under the other two.

mod auth;
mod digest;
mod error;
mod manifest;
mod reference;
mod registry;
mod store;
mod unpack;

pub use auth::{AuthConfig, Credentials};
pub use digest::{chain_ids, sha256_digest};
pub use error::ImageError;
pub use manifest::ImageConfig;
pub use reference::{DOCKER_HUB, Reference};
pub use registry::RegistryConfig;
pub use store::{FsUsage, GcReport, ImageStore, LayerRecord, PullLimits, PullMetrics, PulledImage};

/// The layer unpacker alone: applies an uncompressed layer (a tar stream)
/// to the empty directory `dest` as a pull does, for the fuzz targets
/// (`fuzz/`). The error is the message a failed pull gives.
#[doc(hidden)]
pub fn unpack_layer(reader: impl std::io::Read, dest: &std::path::Path) -> Result<(), String> {
    unpack::unpack_layer(reader, dest)
        .map(drop)
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod unpack_tests;
