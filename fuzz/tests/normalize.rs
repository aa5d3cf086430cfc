//! The request target the proxy settles before filters see it
//! (`proxy/src/normalize.rs`): the path's normal form and the one authority.
//!
//! - A path never makes it panic; its normal form is normal (normalising it again
//!   changes nothing), has no `.` or `..` segment and no `//`, and a valid URI's path
//!   normalises to a valid URI with the same query.
//! - An authority the proxy accepts ends up in exactly one `host` header, with an
//!   origin-form URI, and settling it again changes nothing; the accepted text reads
//!   back as the same authority.
//!
//! Longer runs (`docs/fuzzing.md`):
//! `WEFT_FUZZ_CASES=1000000 cargo test -p weft-fuzz --test normalize`, or on nightly,
//! coverage-guided: `cargo bolero test -p weft-fuzz --test normalize path_normal_form`.

use bolero::check;
use http::uri::Authority;
use http::{HeaderValue, Request, Uri, Version};
use weft_fuzz::{Choices, cases};
use weft_proxy::fuzzing::{authority, normal_path, path};

/// Pieces paths are made of: dot segments plain and escaped, escapes of every kind,
/// separators, and the odd byte.
const PATH_PIECES: &[&str] = &[
    "/", "a", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2f", "%2F", "%", "%4", "%41", "%7e",
    "%7E", "%zz", "%25", "%252e", "~", "-", "_", "//", "/./", "/../", "é", "%00", "%ff", ";", "=",
    "@", ":", "*",
];

fn made_path(c: &mut Choices<'_>) -> String {
    let mut p = String::new();
    if !c.chance(5) {
        p.push('/');
    }
    for _ in 0..c.below(12) {
        p.push_str(c.pick::<&str>(PATH_PIECES));
    }
    p
}

/// What every normal path is.
fn assert_normal(original: &str, normal: &str) {
    assert!(normal.starts_with('/'), "{original:?} -> {normal:?}");
    for bad in ["//", "/./", "/../"] {
        assert!(
            !normal.contains(bad),
            "{original:?} -> {normal:?} has {bad}"
        );
    }
    assert!(
        !normal.ends_with("/.") && !normal.ends_with("/.."),
        "{original:?} -> {normal:?} ends in a dot segment"
    );
    assert_eq!(
        normal_path(normal),
        None,
        "{original:?} -> {normal:?} is not normal yet"
    );
}

fn check_path(p: &str) {
    let normal = normal_path(p);
    if p.starts_with('/') {
        assert_normal(p, normal.as_deref().unwrap_or(p));
    } else {
        assert_eq!(normal, None, "{p:?} is not a path to normalise");
    }
    // As the proxy meets it: a request's URI, with a query that must stay as it is.
    let Ok(uri) = format!("{p}?q=%2e%2E/..").parse::<Uri>() else {
        return;
    };
    let mut parts = Request::get(uri.clone())
        .body(())
        .expect("a request")
        .into_parts()
        .0;
    path(&mut parts).unwrap_or_else(|e| panic!("{uri} failed to normalise: {}", e.detail));
    assert_eq!(parts.uri.query(), uri.query(), "{uri} -> {}", parts.uri);
    if uri.path().starts_with('/') {
        assert_normal(uri.path(), parts.uri.path());
    }
}

#[test]
fn path_normal_form() {
    check!()
        .with_iterations(cases(50_000))
        .with_max_len(256)
        .for_each(|bytes: &[u8]| {
            check_path(&made_path(&mut Choices::new(bytes)));
            check_path(&String::from_utf8_lossy(bytes));
        });
}

/// Pieces of authorities: names, addresses, ports, and what must not be in one.
const HOST_PIECES: &[&str] = &[
    "a",
    "example.com",
    "127.0.0.1",
    "[::1]",
    "[",
    "]",
    "[]",
    "[x]",
    ":",
    ":80",
    ":0",
    ":65536",
    "@",
    "user@",
    "%",
    "%41",
    " ",
    ".",
    "-",
    "é",
    "\t",
    "?",
    "#",
    "/",
    "*",
    "",
];

fn made_host(c: &mut Choices<'_>) -> Vec<u8> {
    let mut h = Vec::new();
    for _ in 0..c.below(5) {
        h.extend_from_slice(c.pick(HOST_PIECES).as_bytes());
    }
    if c.chance(10) {
        h.push(c.byte());
    }
    h
}

/// A request the way a client might send it: origin or absolute form, zero to two
/// `host` headers, HTTP/1.0, 1.1 or 2.
fn made_request(c: &mut Choices<'_>) -> Option<http::request::Parts> {
    let version = *c.pick(&[Version::HTTP_11, Version::HTTP_2, Version::HTTP_10]);
    let target = if c.chance(40) {
        let host = String::from_utf8_lossy(&made_host(c)).into_owned();
        let scheme = c.pick(&["http", "https"]);
        format!("{scheme}://{host}/p?x")
    } else {
        "/p?x".to_owned()
    };
    let uri: Uri = target.parse().ok()?;
    let mut parts = Request::get(uri)
        .version(version)
        .body(())
        .ok()?
        .into_parts()
        .0;
    for _ in 0..c.below(3) {
        let value = HeaderValue::from_bytes(&made_host(c)).ok()?;
        parts.headers.append(http::header::HOST, value);
    }
    Some(parts)
}

fn check_authority(mut parts: http::request::Parts) {
    let before = format!("{:?} {:?}", parts.uri, parts.headers);
    let original_host = parts.headers.get(http::header::HOST).cloned();
    let from_uri = parts.uri.authority().map(|a| a.as_str().to_owned());
    if authority(&mut parts).is_err() {
        return;
    }
    assert!(
        parts.uri.scheme().is_none() && parts.uri.authority().is_none(),
        "{before}"
    );
    let hosts: Vec<&HeaderValue> = parts.headers.get_all(http::header::HOST).iter().collect();
    let Some(host) = hosts.first() else {
        assert_eq!(parts.version, Version::HTTP_10, "{before}: no host kept");
        return;
    };
    assert_eq!(hosts.len(), 1, "{before}: {hosts:?}");
    let host = host
        .to_str()
        .unwrap_or_else(|_| panic!("{before}: host {host:?}"));
    // The accepted text reads back as the same authority, and is what was sent.
    let parsed: Authority = host
        .parse()
        .unwrap_or_else(|e| panic!("{before}: {host:?}: {e}"));
    assert_eq!(parsed.as_str(), host, "{before}");
    assert!(
        !host.contains('@') && !parsed.host().is_empty(),
        "{before}: {host:?}"
    );
    match (&from_uri, &original_host) {
        (Some(target), _) => assert_eq!(host, target, "{before}"),
        (None, Some(sent)) => assert_eq!(host.as_bytes(), sent.as_bytes(), "{before}"),
        (None, None) => panic!("{before}: a host from nowhere: {host:?}"),
    }
    // Settled once, settled for good.
    let settled = (parts.uri.clone(), parts.headers.clone());
    authority(&mut parts).unwrap_or_else(|e| panic!("{before}: settled again: {}", e.detail));
    assert_eq!((parts.uri, parts.headers), settled, "{before}");
}

#[test]
fn authority_is_settled_once() {
    check!()
        .with_iterations(cases(50_000))
        .with_max_len(128)
        .for_each(|bytes: &[u8]| {
            if let Some(parts) = made_request(&mut Choices::new(bytes)) {
                check_authority(parts);
            }
        });
}
