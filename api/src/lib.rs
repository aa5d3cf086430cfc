//! The protocol between Weft proxies and the config server, generated from
//! `proto/weft/control/v1/control.proto`.
//!
//! 1. A proxy calls [`ControlClient::subscribe`] with a stream of [`ProxyMessage`]s
//!    whose first is a [`Hello`].
//! 2. The server answers with [`Snapshot`]s: the current one at once, then each new one.
//! 3. The proxy answers every snapshot with an [`Ack`] or a [`Nack`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use weft_api::{ControlClient, Hello, ProxyMessage, proxy_message::Kind};
//! let mut client = ControlClient::connect("http://127.0.0.1:7070").await?;
//! let hello = ProxyMessage {
//!     kind: Some(Kind::Hello(Hello { node: "web-1".into(), service: "web".into(), ..Default::default() })),
//! };
//! let mut snapshots = client.subscribe(futures_util::stream::iter([hello])).await?.into_inner();
//! while let Some(snapshot) = snapshots.message().await? {
//!     println!("version {}", snapshot.version);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[allow(missing_docs, clippy::all)]
mod generated {
    tonic::include_proto!("weft.control.v1");
}

pub use generated::control_client::ControlClient;
pub use generated::control_server::{Control, ControlServer};
pub use generated::*;

/// Largest message either side accepts: snapshots carry filter modules.
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;
