//! SPIFFE IDs and the patterns that match them: one rule for filters, the proxy
//! that enforces what they require, and the config server's CA.
//!
//! A SPIFFE ID is `spiffe://TRUST-DOMAIN/PATH`: a lower-case trust domain of
//! letters, digits, `-`, `.` and `_`, then one or more non-empty path segments of
//! letters, digits, `-`, `.` and `_` (and no `.` or `..` segment). Weft's
//! workloads are named `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/SERVICE`, as
//! Istio's and Linkerd's are.
//!
//! A pattern is an ID, or an ID prefix ending in `/*` that matches every ID below
//! it segment by segment (`spiffe://bank.example/ns/trading/*` matches
//! `spiffe://bank.example/ns/trading/sa/desk` but not
//! `spiffe://bank.example/ns/trading-eu/sa/desk`), or `*` alone: any identity a
//! peer proved.
//!
//! This file has no dependencies: the host crates include it by path.

/// Longest SPIFFE ID accepted, in bytes (the SPIFFE standard's limit).
pub const MAX_ID_LEN: usize = 2048;

/// Why a string is not a SPIFFE ID or pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpiffeError {
    /// It does not start with `spiffe://`.
    Scheme,
    /// The trust domain is empty or holds a character other than lower-case
    /// letters, digits, `-`, `.` and `_`.
    TrustDomain,
    /// The path is missing, or a segment is empty, `.`, `..`, or holds a character
    /// other than letters, digits, `-`, `.` and `_`.
    Path,
    /// Longer than [`MAX_ID_LEN`].
    TooLong,
}

impl std::fmt::Display for SpiffeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpiffeError::Scheme => "a SPIFFE ID starts with spiffe://",
            SpiffeError::TrustDomain => {
                "the trust domain must be lower-case letters, digits, '-', '.' or '_'"
            }
            SpiffeError::Path => {
                "the path must be non-empty segments of letters, digits, '-', '.' or '_' (no '.' or '..')"
            }
            SpiffeError::TooLong => "longer than 2048 bytes",
        })
    }
}

impl std::error::Error for SpiffeError {}

fn trust_domain_ok(td: &str) -> bool {
    !td.is_empty()
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

fn segment_ok(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Check that `id` is a SPIFFE ID with a path (a workload's, not a trust domain's).
pub fn check_id(id: &str) -> Result<(), SpiffeError> {
    if id.len() > MAX_ID_LEN {
        return Err(SpiffeError::TooLong);
    }
    let rest = id.strip_prefix("spiffe://").ok_or(SpiffeError::Scheme)?;
    let (td, path) = rest.split_once('/').ok_or(SpiffeError::Path)?;
    if !trust_domain_ok(td) {
        return Err(SpiffeError::TrustDomain);
    }
    if path.split('/').all(segment_ok) {
        Ok(())
    } else {
        Err(SpiffeError::Path)
    }
}

/// The trust domain of a valid SPIFFE ID (`bank.example` of
/// `spiffe://bank.example/ns/a/sa/b`).
pub fn trust_domain(id: &str) -> Option<&str> {
    check_id(id).ok()?;
    id["spiffe://".len()..].split('/').next()
}

/// Check a pattern: `*`, an ID, or an ID prefix ending in `/*`
/// (`spiffe://bank.example/*` matches the whole trust domain).
pub fn check_pattern(pattern: &str) -> Result<(), SpiffeError> {
    if pattern == "*" {
        return Ok(());
    }
    if pattern.len() > MAX_ID_LEN {
        return Err(SpiffeError::TooLong);
    }
    let Some(prefix) = pattern.strip_suffix("/*") else {
        return check_id(pattern);
    };
    let rest = prefix
        .strip_prefix("spiffe://")
        .ok_or(SpiffeError::Scheme)?;
    if rest.contains('/') {
        check_id(prefix)
    } else if trust_domain_ok(rest) {
        // `spiffe://td/*`: the whole trust domain.
        Ok(())
    } else {
        Err(SpiffeError::TrustDomain)
    }
}

/// Whether `id` matches `pattern` (see the module's doc). A pattern that is not
/// valid matches nothing.
pub fn matches(pattern: &str, id: &str) -> bool {
    if check_pattern(pattern).is_err() || check_id(id).is_err() {
        return false;
    }
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        // The prefix, then a `/` and at least one more segment.
        Some(prefix) => id
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/')),
        None => pattern == id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert_eq!(check_id("spiffe://bank.example/ns/a/sa/b"), Ok(()));
        assert_eq!(
            check_id("https://bank.example/ns/a"),
            Err(SpiffeError::Scheme)
        );
        assert_eq!(check_id("spiffe://bank.example"), Err(SpiffeError::Path));
        assert_eq!(check_id("spiffe://bank.example/"), Err(SpiffeError::Path));
        assert_eq!(
            check_id("spiffe://Bank/ns/a"),
            Err(SpiffeError::TrustDomain)
        );
        assert_eq!(check_id("spiffe:///ns/a"), Err(SpiffeError::TrustDomain));
        assert_eq!(check_id("spiffe://b/ns//a"), Err(SpiffeError::Path));
        assert_eq!(check_id("spiffe://b/ns/../a"), Err(SpiffeError::Path));
        assert_eq!(check_id("spiffe://b/ns/a?x"), Err(SpiffeError::Path));
        let long = format!("spiffe://b/{}", "a".repeat(MAX_ID_LEN));
        assert_eq!(check_id(&long), Err(SpiffeError::TooLong));
        assert_eq!(
            trust_domain("spiffe://bank.example/ns/a"),
            Some("bank.example")
        );
        assert_eq!(trust_domain("spiffe://bank.example"), None);
    }

    #[test]
    fn patterns_match_by_whole_segments() {
        let desk = "spiffe://bank.example/ns/trading/sa/desk";
        assert!(matches("*", desk));
        assert!(matches(desk, desk));
        assert!(matches("spiffe://bank.example/ns/trading/*", desk));
        assert!(matches("spiffe://bank.example/*", desk));
        assert!(!matches(
            "spiffe://bank.example/ns/trading/*",
            "spiffe://bank.example/ns/trading-eu/sa/desk"
        ));
        assert!(!matches(
            "spiffe://bank.example/ns/trading/*",
            "spiffe://bank.example/ns/trading"
        ));
        assert!(!matches("spiffe://other.example/*", desk));
        assert!(!matches("spiffe://bank.example/ns/trading/sa/des", desk));
        // Invalid patterns and IDs match nothing.
        assert!(!matches("spiffe://bank.example/ns/*/sa/desk", desk));
        assert!(!matches("*", "not-an-id"));
        assert!(!matches("", desk));
        assert_eq!(check_pattern("spiffe://bank.example/*"), Ok(()));
        assert_eq!(
            check_pattern("spiffe://Bank/*"),
            Err(SpiffeError::TrustDomain)
        );
        assert_eq!(check_pattern("spiffe://b/ns/*/x"), Err(SpiffeError::Path));
        assert_eq!(check_pattern("*x"), Err(SpiffeError::Scheme));
    }
}
