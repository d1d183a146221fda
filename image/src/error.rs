//! The one error type of the crate. Each variant maps onto one gRPC code
//! (see the table in the crate docs); every message names the reference,
//! layer digest or path it is about.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A malformed image reference (→ InvalidArgument).
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// Malformed registry configuration or credentials (→ InvalidArgument).
    #[error("invalid {what}: {reason}")]
    InvalidConfig { what: String, reason: String },

    /// The registry does not know the repository, tag, manifest or blob
    /// (→ NotFound).
    #[error("image {reference} not found: {detail}")]
    NotFound { reference: String, detail: String },

    /// The registry refused the credentials, or wants some (→ Unauthenticated
    /// without credentials, PermissionDenied with).
    #[error("registry refused access to {reference}: {detail}")]
    Unauthorized { reference: String, detail: String },

    /// The registry could not be reached or failed (→ Unavailable).
    #[error("registry error pulling {reference}: {detail}")]
    Registry { reference: String, detail: String },

    /// Content did not match its digest (→ FailedPrecondition / DataLoss).
    #[error("digest mismatch in {what} of {reference}: expected {expected}, got {actual}")]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },

    /// A layer tried to write outside its directory (→ FailedPrecondition).
    #[error("unsafe layer {layer} in {reference}: entry {path:?}: {reason}")]
    UnsafeLayer {
        reference: String,
        layer: String,
        path: String,
        reason: String,
    },

    /// The image is malformed or uses something we do not support
    /// (→ FailedPrecondition).
    #[error("bad image {reference}: {reason}")]
    BadImage { reference: String, reason: String },

    /// A local file system error (→ Internal).
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand used inside the crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
