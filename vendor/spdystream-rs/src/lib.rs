pub mod connection;
pub mod dictionary;
pub mod error;
pub mod frame;
pub mod framer;
pub mod server;
pub mod stream;

pub use connection::{BoxFuture, Connection};
pub use error::{Error, Result};
pub use frame::{Frame, GoAwayStatus, RstStatus};
pub use server::{accept, ServerConfig, UpgradeRequest};
pub use stream::Stream;
