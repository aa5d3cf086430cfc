//! One request target for everyone: the authority and the path that filters match on
//! are the ones the upstream receives.
//!
//! - **Authority** (RFC 9112 §3.2.2, RFC 9113 §8.3.1): an absolute-form target wins
//!   over `Host`; HTTP/1.1 needs exactly one `Host`; an HTTP/2 `host` that disagrees
//!   with `:authority` is refused. Afterwards the request carries its authority in one
//!   `host` header and an origin-form URI, whatever the client sent.
//! - **Path** (RFC 3986 §6.2.2): percent-encoded unreserved characters are decoded,
//!   the hex digits of other escapes upper-cased, dot segments removed and runs of
//!   slashes merged, as nginx does before it matches a location. `%2F` stays encoded:
//!   it is data, not a separator; so is a `%` that starts no escape, written `%25`.
//!   The normal form is normal: normalising it again changes nothing.
//! - **Headers**: those that describe one connection (hop-by-hop) go, and those the
//!   proxy sets on requests (`x-weft-attempt`, a caller's workload) are never a
//!   client's to send.

use http::header::{CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Uri, Version};

use crate::error::ProxyError;

fn bad(reason: &'static str, detail: String) -> ProxyError {
    ProxyError::bad_request(reason, detail)
}

/// Settle the request's one authority, as described in the module docs.
pub fn authority(parts: &mut Parts) -> Result<(), ProxyError> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one host", "two host headers".into()));
    }
    let chosen: Authority = match (parts.uri.authority(), host) {
        // Absolute form (HTTP/1) or :authority (HTTP/2).
        (Some(target), host) => {
            if parts.version == Version::HTTP_2
                && let Some(host) = host
                && !host
                    .as_bytes()
                    .eq_ignore_ascii_case(target.as_str().as_bytes())
            {
                return Err(bad(
                    "host and :authority differ",
                    format!("host {host:?} and :authority {:?}", target.as_str()),
                ));
            }
            target.clone()
        }
        (None, Some(host)) => Authority::try_from(host.as_bytes())
            .map_err(|e| bad("invalid host", format!("host {host:?}: {e}")))?,
        // HTTP/1.0 clients may omit it; everyone else must say where they go.
        (None, None) if parts.version <= Version::HTTP_10 => return Ok(()),
        (None, None) => return Err(bad("missing host", "no host header".into())),
    };
    if chosen.as_str().contains('@') || !usable_host(chosen.host()) {
        return Err(bad(
            "invalid host",
            format!("authority {:?}", chosen.as_str()),
        ));
    }
    if host.is_none_or(|h| h.as_bytes() != chosen.as_str().as_bytes()) {
        let value = HeaderValue::from_str(chosen.as_str())
            .map_err(|e| bad("invalid host", format!("{:?}: {e}", chosen.as_str())))?;
        parts.headers.insert(HOST, value);
    }
    if parts.uri.authority().is_some() || parts.uri.scheme().is_some() {
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from(pq);
    }
    Ok(())
}

/// Whether a host names something: an IPv6 literal in brackets that parses, or a
/// non-empty name (`[]`, `[x]` and an empty host are not), so that nothing downstream
/// (a metric label, a route, a report) ever meets a request for no host.
fn usable_host(host: &str) -> bool {
    if host.starts_with('[') {
        return weft_config::is_bracketed_ipv6(host);
    }
    !host.is_empty() && !host.contains([']', '['])
}

/// Normalise the path of `parts.uri` in place (see the module docs); the query is
/// kept as sent. Paths that need nothing cost one scan and no allocation.
pub fn path(parts: &mut Parts) -> Result<(), ProxyError> {
    let Some(pq) = parts.uri.path_and_query() else {
        return Ok(());
    };
    let Some(normal) = normal_path(pq.path()) else {
        return Ok(());
    };
    let mut text = normal;
    if let Some(q) = pq.query() {
        text.push('?');
        text.push_str(q);
    }
    let pq = PathAndQuery::try_from(text)
        .map_err(|e| bad("invalid path", format!("normalised path: {e}")))?;
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query = Some(pq);
    parts.uri = Uri::from_parts(uri).map_err(|e| bad("invalid path", e.to_string()))?;
    Ok(())
}

/// The normal form of `path`, or `None` when it is already normal.
pub fn normal_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    if !bytes.starts_with(b"/") || !needs_work(bytes) {
        return None;
    }
    // Decode unreserved escapes first: `%2e%2e` is a dot segment like `..`.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            let c = hi << 4 | lo;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                decoded.push(c);
            } else {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        if bytes[i] == b'%' {
            // A `%` that starts no escape is data, written as one: else a character
            // decoded after it could complete an escape (`%4%41` would become `%4A`,
            // `%%32%65` a `%2e` that the next decoder takes for a dot), and what the
            // upstream decodes would differ from what the filters matched.
            decoded.extend_from_slice(b"%25");
            i += 1;
            continue;
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    // Remove dot segments and empty segments; a path that ended on a directory
    // (`/a/`, `/a/.`, `/a/b/..`) keeps its trailing slash.
    let mut out: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for segment in decoded[1..].split(|&b| b == b'/') {
        trailing = true;
        match segment {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        // Only ASCII went in: the input was a valid URI path.
        normal.push_str(std::str::from_utf8(s).unwrap_or_default());
    }
    if trailing || out.is_empty() {
        normal.push('/');
    }
    (normal != path).then_some(normal)
}

/// Whether a path could change at all: it has an escape, a `//`, or a `.` segment.
fn needs_work(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' => return true,
            b'/' if prev == b'/' => return true,
            b'.' if prev == b'/' => {
                let rest = &bytes[i..];
                if rest == b"."
                    || rest == b".."
                    || rest.starts_with(b"./")
                    || rest.starts_with(b"../")
                {
                    return true;
                }
            }
            _ => {}
        }
        prev = b;
    }
    false
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Tells the upstream which attempt of a request it sees, when retries are possible.
pub(crate) const ATTEMPT_HEADER: HeaderName = HeaderName::from_static("x-weft-attempt");
/// The header in which a proxy names its caller's workload to the next hop.
const SOURCE_WORKLOAD: HeaderName = HeaderName::from_static("x-weft-source-workload");

/// Remove from a client's request the headers the proxy sets on requests: the
/// attempt number, and the caller's workload unless the peer is a mesh proxy.
/// (`x-weft-fault` and the like are the client's to send: filters match on them.)
pub(crate) fn strip_owned(headers: &mut HeaderMap, mesh_internal: bool) {
    headers.remove(ATTEMPT_HEADER);
    if !mesh_internal {
        headers.remove(SOURCE_WORKLOAD);
    }
}

/// Remove the headers that only mean something on one connection (RFC 9110 §7.6.1),
/// including those the `connection` header names. `te: trailers` stays: gRPC needs it.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            // `te: trailers` is for gRPC; `host` is the request's target, not a
            // property of the connection, whatever a client says.
            if name != TE && name != HOST {
                headers.remove(name);
            }
        }
        headers.remove(CONNECTION);
    }
    for name in [TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    if let Some(te) = headers.get(TE)
        && !te.as_bytes().eq_ignore_ascii_case(b"trailers")
    {
        headers.remove(TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> String {
        normal_path(path).unwrap_or_else(|| path.to_owned())
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/public/%2E%2e/admin"), "/admin");
        assert_eq!(n("/public/.%2e/admin"), "/admin");
        assert_eq!(n("/a/./b"), "/a/b");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/."), "/a/");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("//a///b//"), "/a/b/");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/a/..."), "/a/...");
        assert_eq!(n("/a/.b/c."), "/a/.b/c.");
    }

    #[test]
    fn escapes() {
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/a%2fb"), "/a%2Fb", "an encoded slash stays data");
        assert_eq!(n("/a%20b"), "/a%20b");
        assert_eq!(n("/a%zzb"), "/a%25zzb", "a stray % is data");
        assert_eq!(
            n("/a%4%41"),
            "/a%254A",
            "no escape is made of a decoded character"
        );
        assert_eq!(n("/%%32%65%%32%65/x"), "/%252e%252e/x");
        assert_eq!(n("/a%"), "/a%25");
        assert_eq!(n("/a%7e"), "/a~");
    }

    #[test]
    fn normal_paths_cost_nothing() {
        for p in ["/", "/api/users", "/a.b/c", "/x/.well-known/y", "*"] {
            assert_eq!(normal_path(p), None, "{p}");
        }
    }

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn absolute_form_wins_over_host() {
        let mut p =
            parts(http::Request::get("http://evil.example/admin?x=1").header("host", "127.0.0.1"));
        authority(&mut p).unwrap();
        assert_eq!(p.headers["host"], "evil.example");
        assert_eq!(p.uri, "/admin?x=1");
        assert_eq!(p.headers.get_all("host").iter().count(), 1);
    }

    #[test]
    fn ambiguous_hosts_are_refused() {
        let mut p = parts(
            http::Request::get("/")
                .header("host", "a")
                .header("host", "b"),
        );
        assert_eq!(authority(&mut p).unwrap_err().status, 400);
        let mut p = parts(http::Request::get("/"));
        assert_eq!(authority(&mut p).unwrap_err().reason, "missing host");
        let mut p = parts(http::Request::get("/").version(Version::HTTP_10));
        authority(&mut p).unwrap();
        let mut p = parts(
            http::Request::get("http://a.example/")
                .version(Version::HTTP_2)
                .header("host", "b.example"),
        );
        assert_eq!(
            authority(&mut p).unwrap_err().reason,
            "host and :authority differ"
        );
        let mut p = parts(http::Request::get("/").header("host", "user@a.example"));
        assert_eq!(authority(&mut p).unwrap_err().reason, "invalid host");
        let mut p = parts(http::Request::get("/").header("host", "a b"));
        assert_eq!(authority(&mut p).unwrap_err().reason, "invalid host");
    }

    #[test]
    fn http2_authority_becomes_host() {
        let mut p =
            parts(http::Request::get("https://svc.internal:8443/x").version(Version::HTTP_2));
        authority(&mut p).unwrap();
        assert_eq!(p.headers["host"], "svc.internal:8443");
        assert_eq!(p.uri, "/x");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));

        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("te"));
    }
}
