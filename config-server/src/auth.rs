//! Who may do what:
//!
//! - writes need the API token;
//! - reads that show mesh or filter configs (which may hold secrets) need the API
//!   token from anywhere, this machine included;
//! - other reads (status, filter versions, a proxy's effective config with its
//!   secrets redacted) are open to this machine and need the token from anywhere
//!   else; asking for a proxy's config with its secrets (`show_secrets`) needs the
//!   API token from anywhere;
//! - the proxies' stream needs the proxy token, and only it (see `stream`);
//! - a request must name the server by a name of this machine (see [`Hosts`]) when
//!   the server listens on loopback, or when it comes from this machine without a
//!   token: else a page in a browser here, of a site whose name was made to resolve
//!   to 127.0.0.1, could read what this machine may read.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::store::write_atomic;
use crate::{ServerError, Shared};

/// A token: the one given, else the file's, else a new one written to the file
/// (0600). Returns the token and whether it was created now.
pub(crate) fn load_token(
    given: Option<String>,
    dir: &Path,
    file: &Path,
) -> Result<(String, bool), ServerError> {
    if let Some(token) = given {
        return Ok((token, false));
    }
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let token = text.trim();
            if token.is_empty() {
                return Err(ServerError::EmptyToken {
                    path: file.to_owned(),
                });
            }
            return Ok((token.to_owned(), false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ServerError::Io {
                path: file.to_owned(),
                source,
            });
        }
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ServerError::Io { path, source }
    };
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(io(Path::new("/dev/urandom")))?;
    let token = hex::encode(random);
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("token");
    write_atomic(dir, name, format!("{token}\n").as_bytes(), 0o600).map_err(io(file))?;
    Ok((token, true))
}

/// Whether `Authorization` carries the token, compared in constant time (over
/// digests, so not even the length leaks).
pub(crate) fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some(given) = authorization.and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    same_secret(given.trim(), token)
}

/// Whether two digests are equal, in constant time: `subtle` keeps the compiler from
/// turning the comparison into one that stops at the first difference. Every token
/// and secret is hashed first, so both sides have the same length whatever was sent.
pub(crate) fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Whether two secrets (tokens, instance secrets) are equal, compared as [`same`]
/// digests, so neither their bytes nor their lengths show in the time taken.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    same(
        &Sha256::digest(a.as_bytes()).into(),
        &Sha256::digest(b.as_bytes()).into(),
    )
}

/// Whether a request needs the token: every write, and reads from other machines.
pub(crate) fn needs_token(method: &Method, peer: SocketAddr) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    !(read && peer.ip().to_canonical().is_loopback())
}

/// Middleware on the API routes that need the token for writes and for reads from
/// other machines.
pub(crate) async fn require(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if needs_token(req.method(), peer) {
        return check(&shared, peer, req, next).await;
    }
    next.run(req).await
}

/// Middleware on the routes that always need the token: reads that show configs.
pub(crate) async fn require_always(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    check(&shared, peer, req, next).await
}

async fn check(shared: &Shared, peer: SocketAddr, req: Request, next: Next) -> Response {
    if let Err(why) = api_token(shared, req.headers(), "this request") {
        tracing::warn!(%peer, method = %req.method(), path = req.uri().path(), "refused: {why}");
        return why.into_response();
    }
    next.run(req).await
}

/// Whether the headers carry the API token; `what` names what needs it (a request,
/// or a part of one such as `show_secrets`) in the refusal.
pub(crate) fn api_token(shared: &Shared, headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer_matches(given, &shared.token) {
        return Ok(());
    }
    Err(ApiError::unauthorized(refusal(
        given.is_none(),
        bearer_matches(given, &shared.proxy_token),
        what,
    )))
}

/// Why a request without the API token is refused: none given, the proxy token in
/// its place, or a wrong one.
fn refusal(missing: bool, proxy_token: bool, what: &str) -> String {
    if missing {
        format!("{what} needs the API token: send `Authorization: Bearer TOKEN`")
    } else if proxy_token {
        format!("this is the proxy token, which only subscribes; {what} needs the API token")
    } else {
        "the API token is wrong".to_owned()
    }
}

/// The names a request may give the server (its `Host`, or HTTP/2's `:authority`)
/// where a browser on this machine could have sent it: `localhost`, any IP address,
/// and the names allowed at start.
#[derive(Debug)]
pub(crate) struct Hosts {
    /// Every request is checked: the server listens on loopback, so every request
    /// comes from this machine. Otherwise only those from this machine without a
    /// token are; the others need the token for everything.
    all: bool,
    /// Lower case, without a trailing dot.
    names: Vec<String>,
}

impl Hosts {
    pub(crate) fn new(listen: SocketAddr, names: &[String]) -> Result<Self, ServerError> {
        let names = names
            .iter()
            .map(|name| {
                let plain = name.strip_suffix('.').unwrap_or(name);
                let ok = !plain.is_empty()
                    && plain.len() <= 253
                    && !plain.starts_with(['.', '-'])
                    && (plain.bytes()).all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                if ok {
                    Ok(plain.to_ascii_lowercase())
                } else {
                    Err(ServerError::HostName { name: name.clone() })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            all: listen.ip().to_canonical().is_loopback(),
            names,
        })
    }

    /// Whether `authority` (a host, with or without a port) names this server.
    fn allows(&self, authority: &str) -> bool {
        // The proxies' admin listeners answer by the same rule as one on loopback.
        weft_config::host_allowed(Ipv4Addr::LOCALHOST.into(), Some(authority), &self.names)
    }
}

/// Middleware on every route: a request that must name the server by one of its
/// [`Hosts`] and does not is answered 421.
pub(crate) async fn check_host(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let hosts = &shared.hosts;
    let checked =
        hosts.all || (peer.ip().to_canonical().is_loopback() && !has_token(&shared, &req));
    if checked {
        let authority = match req.uri().authority() {
            Some(a) => Some(Ok(a.as_str())),
            None => (req.headers().get(header::HOST)).map(|h| h.to_str()),
        };
        // A request that names no host at all is no browser's.
        let named = authority.is_none_or(|a| a.is_ok_and(|a| hosts.allows(a)));
        if !named {
            let (method, path) = (req.method(), req.uri().path());
            tracing::warn!(%peer, %method, path, "refused: the Host is not a name of this server");
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "the request's Host is not a name of this server: from this machine, name it \
                 localhost or by an IP address, or start the server with --allow-host NAME",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Whether the request carries the API token or the proxy token.
fn has_token(shared: &Shared, req: &Request) -> bool {
    let given = (req.headers().get(header::AUTHORIZATION)).and_then(|v| v.to_str().ok());
    bearer_matches(given, &shared.token) || bearer_matches(given, &shared.proxy_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_match_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cretx"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn secrets_compare_by_digest_whatever_their_length() {
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cret", "s3creT"));
        assert!(!same_secret("", "s3cret"));
        assert!(!same_secret(&"a".repeat(1000), "a"));
        let (a, b) = ([7u8; 32], [7u8; 32]);
        assert!(same(&a, &b));
        let mut c = b;
        c[31] ^= 1;
        assert!(!same(&a, &c));
        c = b;
        c[0] ^= 0x80;
        assert!(!same(&a, &c));
    }

    #[test]
    fn a_refusal_says_which_token_was_missing() {
        let r = refusal(true, false, "show_secrets");
        assert!(r.starts_with("show_secrets needs the API token"), "{r}");
        let r = refusal(false, true, "this request");
        assert!(r.contains("proxy token") && r.ends_with("this request needs the API token"));
        assert_eq!(refusal(false, false, "x"), "the API token is wrong");
    }

    #[test]
    fn reads_are_open_to_loopback_only() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let remote: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert!(!needs_token(&Method::GET, local));
        assert!(!needs_token(&Method::GET, mapped));
        assert!(needs_token(&Method::GET, remote));
        assert!(needs_token(&Method::PUT, local));
        assert!(needs_token(&Method::POST, local));
    }

    #[test]
    fn a_server_on_loopback_answers_to_names_of_this_machine() {
        let local = Hosts::new(
            "127.0.0.1:7070".parse().unwrap(),
            &["Weft.Internal.".into()],
        )
        .unwrap();
        assert!(local.all);
        for ok in [
            "127.0.0.1:7070",
            "127.0.0.1",
            "[::1]:7070",
            "10.1.2.3",
            "localhost",
            "LocalHost.:7070",
            "weft.internal:7070",
        ] {
            assert!(local.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7070",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "weft.internal.evil",
        ] {
            assert!(!local.allows(bad), "{bad}");
        }
        assert!(
            !Hosts::new("0.0.0.0:7070".parse().unwrap(), &[])
                .unwrap()
                .all
        );
        assert!(Hosts::new("[::1]:7070".parse().unwrap(), &[]).unwrap().all);
        assert!(Hosts::new("127.0.0.1:0".parse().unwrap(), &["a b".into()]).is_err());
        assert!(Hosts::new("127.0.0.1:0".parse().unwrap(), &["".into()]).is_err());
    }
}
