//! The protocol between Weft proxies and the config server, generated from
//! `proto/weft/control/v1/control.proto`.
//!
//! 1. A proxy calls [`ControlClient::subscribe`] with a stream of [`ProxyMessage`]s
//!    whose first is a [`Hello`], and the proxy token as the request's
//!    `authorization: Bearer TOKEN` metadata (see [`bearer`]).
//! 2. The server answers with [`Snapshot`]s: the current one at once, then each new one.
//! 3. The proxy answers every snapshot with an [`Ack`] or a [`Nack`] (and restates its
//!    [`Ack`] right after the Hello when it already serves one).
//! 4. A proxy that stops cleanly sends a [`Goodbye`], so the server frees its node id at
//!    once.
//! 5. A proxy with a live stream may call [`ControlClient::certify`] with a
//!    [`CertifyRequest`] (a CSR, its node and instance secret, and the proxy token):
//!    the server's CA answers with a workload certificate for the SPIFFE ID the mesh
//!    config gives it, and the trust bundle ([`CertifyResponse`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use weft_api::{ControlClient, Hello, ProxyMessage, proxy_message::Kind};
//! let mut client = ControlClient::connect("http://127.0.0.1:7070").await?
//!     .max_decoding_message_size(weft_api::MAX_MESSAGE_SIZE);
//! let hello = ProxyMessage {
//!     kind: Some(Kind::Hello(Hello {
//!         node: "web-1".into(),
//!         service: "web".into(),
//!         instance: "a random secret of this process".into(),
//!         ..Default::default()
//!     })),
//! };
//! let mut request = tonic::Request::new(futures_util::stream::iter([hello]));
//! request.metadata_mut().insert("authorization", weft_api::bearer("PROXY-TOKEN")?);
//! let mut snapshots = client.subscribe(request).await?.into_inner();
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

/// Largest snapshot the server sends and a proxy accepts: snapshots carry filter
/// modules.
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Largest message a proxy sends and the server accepts: a Hello, an ACK or a NACK
/// says who the proxy is and what it runs, which fits easily; anything larger is
/// refused before it is read (OUT_OF_RANGE).
pub const MAX_PROXY_MESSAGE_SIZE: usize = 64 << 10;

/// Response metadata of `Subscribe`: how often, in milliseconds, the proxy sends a
/// [`Report`]; absent or 0: never.
pub const REPORT_INTERVAL_HEADER: &str = "x-weft-report-interval-ms";

/// Most rows one [`Report`] may carry; a proxy splits longer lists.
pub const MAX_REPORT_ROWS: usize = 100;

/// Most buckets one [`Traffic`] histogram may have.
pub const MAX_REPORT_BUCKETS: usize = 65;

/// The `authorization` metadata value that carries a token: `Bearer TOKEN`. Fails
/// when the token holds characters metadata cannot carry.
pub fn bearer(
    token: &str,
) -> Result<
    tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    tonic::metadata::errors::InvalidMetadataValue,
> {
    format!("Bearer {token}").parse()
}
