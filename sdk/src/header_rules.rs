//! Which header names a filter may set, in one file: a filter checks the header names
//! its configuration gives it with [`settable`] at `init`, the SDK's native host
//! refuses what the proxy refuses, and the engine includes this same file to enforce
//! it.
//!
//! It is compiled into both crates, so it names nothing from either (and shows no
//! doctest, which would name one).

/// Headers a filter may not touch through the header calls: the proxy frames
/// messages itself, and the request's target has one home (`set-authority`), so that
/// what filters decided on is what the upstream gets. Lower-case.
pub const PROXY_OWNED: [&str; 8] = [
    "host",
    "connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "content-length",
    "keep-alive",
    "proxy-connection",
];

/// Whether `s` is an HTTP token (RFC 9110 §5.6.2), as header names and methods are.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether the proxy keeps `name` (in any case) to itself: one of [`PROXY_OWNED`].
pub fn is_proxy_owned(name: &str) -> bool {
    PROXY_OWNED.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a filter may set, add or remove the header `name` (in any case): a token
/// the proxy does not keep to itself.
pub fn settable(name: &str) -> bool {
    is_token(name) && !is_proxy_owned(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_may_set_tokens_the_proxy_does_not_keep() {
        assert!(settable("x-user"));
        assert!(settable("authorization"));
        assert!(!settable("Content-Length"));
        assert!(!settable("HOST"));
        assert!(!settable("x user"));
        assert!(!settable(""));
        assert!(is_token("GET") && !is_token("GET /"));
    }
}
