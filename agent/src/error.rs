//! Why a stream to the config server could not start, or ended, in words an operator
//! can act on. The transport's own errors say "transport error" or name an HTTP/2
//! frame; the reason is further down their cause chain: the OS's (connection
//! refused, no route to host), or a peer that does not speak HTTP/2 at all.

use std::error::Error as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

/// What an HTTP/2 client sends first: the preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// How long a second look at a server that broke the connection may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a stream to the config server could not start, or ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// No connection could be made.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server's URL.
        server: String,
        /// The OS's reason, else the innermost cause.
        reason: String,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// Something answers at the address, but not in HTTP/2: a web server, a TLS
    /// port, another protocol.
    #[error("this is not a Weft config server (it does not speak gRPC at {addr})")]
    NotGrpc {
        /// Host and port.
        addr: String,
        /// What the transport said.
        #[source]
        source: Status,
    },
    /// A gRPC or HTTP/2 server answers, without Weft's control service.
    #[error(
        "this is not a Weft config server (it does not serve weft.control.v1.Control at {addr})"
    )]
    NoControl {
        /// Host and port.
        addr: String,
        /// What the server said.
        #[source]
        source: Status,
    },
    /// The server refused the stream.
    #[error("the config server refused the stream ({code:?}): {message}")]
    Refused {
        /// The gRPC code.
        code: Code,
        /// The server's reason.
        message: String,
    },
    /// The server ended the stream.
    #[error("the config server ended the stream ({code:?}): {message}")]
    Ended {
        /// The gRPC code.
        code: Code,
        /// The server's reason.
        message: String,
    },
    /// The connection broke.
    #[error("lost the connection to {server}: {reason}")]
    Lost {
        /// The server's URL.
        server: String,
        /// The OS's reason, else the innermost cause.
        reason: String,
        /// What the transport said.
        #[source]
        source: Status,
    },
}

impl StreamError {
    /// Connecting to `server` failed.
    pub(crate) fn connect(server: &str, source: tonic::transport::Error) -> Self {
        Self::Connect {
            server: server.to_owned(),
            reason: reason(&source),
            source,
        }
    }

    /// The `Subscribe` call to `server` (at `addr`) failed, before any snapshot.
    pub(crate) async fn subscribe(server: &str, addr: &str, status: Status) -> Self {
        if status.source().is_some() {
            // A peer that answers in another protocol and closes at once often
            // breaks the connection before the transport reads the answer: the
            // transport then tells a broken pipe, and only a second look tells why.
            if not_http2(&status) || answers_http2(addr).await == Some(false) {
                return Self::NotGrpc {
                    addr: addr.to_owned(),
                    source: status,
                };
            }
            return Self::lost(server, status);
        }
        // tonic says Unimplemented both for a gRPC server without the service and
        // for an HTTP/2 server that answers 404.
        if status.code() == Code::Unimplemented {
            return Self::NoControl {
                addr: addr.to_owned(),
                source: status,
            };
        }
        Self::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// The stream from `server` ended with an error.
    pub(crate) fn stream(server: &str, status: Status) -> Self {
        if status.source().is_some() {
            return Self::lost(server, status);
        }
        Self::Ended {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    fn lost(server: &str, status: Status) -> Self {
        Self::Lost {
            server: server.to_owned(),
            reason: reason(&status),
            source: status,
        }
    }

    /// Tells the same problem seen again at the next attempt from a new one: the
    /// same refusal may give other numbers each time (seconds left), the same
    /// connection failure gives the same reason.
    pub(crate) fn key(&self) -> String {
        match self {
            Self::Connect { reason, .. } => format!("connect: {reason}"),
            Self::NotGrpc { .. } => "not grpc".to_owned(),
            Self::NoControl { .. } => "no control".to_owned(),
            Self::Refused { code, .. } => format!("refused: {code:?}"),
            Self::Ended { code, .. } => format!("ended: {code:?}"),
            Self::Lost { reason, .. } => format!("lost: {reason}"),
        }
    }
}

/// Every error in `e`'s cause chain, `e` first.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |&e| e.source())
}

/// The OS's reason in `e`'s cause chain, else its innermost cause.
pub(crate) fn reason(e: &(dyn std::error::Error + 'static)) -> String {
    let io = chain(e).find_map(|e| {
        e.downcast_ref::<std::io::Error>()
            // h2 keeps the I/O error it met out of its cause chain.
            .or_else(|| e.downcast_ref::<h2::Error>()?.get_io())
    });
    match io {
        Some(io) => os_reason(io),
        None => chain(e)
            .last()
            .map_or_else(String::new, ToString::to_string),
    }
}

/// "connection refused", not "Connection refused (os error 111)": the reason reads
/// as the end of a sentence.
fn os_reason(io: &std::io::Error) -> String {
    let text = io.to_string();
    let text = match (io.raw_os_error(), text.find(" (os error ")) {
        (Some(_), Some(at)) => &text[..at],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => io.kind().to_string(),
    }
}

/// Whether the server at `addr` answers an HTTP/2 preface as every HTTP/2 server
/// must, with a SETTINGS frame; none when it says nothing at all.
async fn answers_http2(addr: &str) -> Option<bool> {
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        conn.write_all(PREFACE).await.ok()?;
        let mut head = [0u8; 9];
        let mut got = 0;
        while got < head.len() {
            match conn.read(&mut head[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        // A frame header: length (3 bytes), type 4 (SETTINGS), flags, stream 0.
        let settings = got == head.len() && head[3] == 0x4 && head[5..] == [0; 4];
        (got > 0).then_some(settings)
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
}

/// Whether HTTP/2 gave up on the peer's first bytes: an HTTP/1 answer ("HTTP/1.1
/// 400"), a TLS alert or any other protocol reads as a frame too large or
/// malformed.
fn not_http2(status: &Status) -> bool {
    chain(status).any(|e| {
        e.downcast_ref::<h2::Error>().is_some_and(|h2| {
            h2.is_go_away()
                && h2.is_library()
                && matches!(
                    h2.reason(),
                    Some(h2::Reason::FRAME_SIZE_ERROR | h2::Reason::PROTOCOL_ERROR)
                )
        })
    })
}

#[cfg(test)]
mod tests;
