//! The server's errors: [`ServerError`] stops it from starting; [`ApiError`] is one
//! refused request, answered as `{"error": "..."}`.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Why the config server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A file or folder of the data folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `state.json` is damaged. It is never reset silently: restore it from a backup
    /// or move it away to start empty.
    #[error("{}: damaged state, refusing to start: {message}", path.display())]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The token file exists but holds no token.
    #[error("{}: the token file is empty", path.display())]
    EmptyToken {
        /// The token file.
        path: PathBuf,
    },
    /// The API token and the proxy token are the same, so each role could act as the
    /// other.
    #[error(
        "the API token and the proxy token are the same; give each its own \
         (WEFT_TOKEN and WEFT_PROXY_TOKEN, or the files token and proxy-token)"
    )]
    SameToken,
    /// The filter engine, used to check filters and their configs, could not start.
    #[error("filter engine: {0}")]
    Engine(#[from] weft_engine::LoadError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A name to answer to besides this machine's is not a host name.
    #[error("{name:?} is not a host name to answer to (letters, digits, '-', '_' and '.')")]
    HostName {
        /// The name given.
        name: String,
    },
    /// The mesh CA could not be loaded or made.
    #[error("mesh CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    /// The trusted-keys file cannot be read, or holds no key.
    #[error("{0}")]
    TrustedKeys(String),
    /// TLS cannot be served as asked: a certificate or key that cannot be read or
    /// issued, or proxy identities required without TLS.
    #[error("TLS: {0}")]
    Tls(String),
    /// A startup task died (a bug).
    #[error("internal error while starting: {0}")]
    Internal(String),
}

/// A refused request: a status and a message that says precisely why.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        }
        let mut resp = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Run blocking work (compiling filters, fsync) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a background task failed: {e}")))
}

/// The start of a long value a peer sent, to name it in an error or the log.
pub(crate) fn short(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}
