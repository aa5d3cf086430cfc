//! The rules a filter meets when it defines metrics and keeps state, in one file: the
//! SDK's native host (what a filter's `cargo test` calls) applies them, and the engine
//! includes this same file to enforce them, so a filter's tests are refused what the
//! proxy refuses. It lives in the SDK because the SDK is packaged on its own.
//!
//! It is compiled into both crates, so it names nothing from either.

/// Largest state key, in bytes.
pub const MAX_STATE_KEY: usize = 256;
/// Largest state value, in bytes.
pub const MAX_STATE_VALUE: usize = 64 * 1024;
/// Most state keys one filter may hold.
pub const MAX_STATE_KEYS: usize = 10_000;
/// Most keys one page of a state listing holds.
pub const MAX_STATE_PAGE: usize = 1_000;
/// Most buckets a histogram may have.
pub const MAX_BUCKETS: usize = 64;

/// Whether `s` is a metric or label name a filter may use: `[a-z_][a-z0-9_]*`, at most
/// 100 bytes.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_lowercase() || (i > 0 && b.is_ascii_digit()))
}

/// Whether `l` is a label name a filter may use: a valid name other than `filter`,
/// which the proxy puts on every series itself.
pub fn valid_label(l: &str) -> bool {
    valid_name(l) && l != "filter"
}

/// Whether a metric may be defined with this name and these labels: a valid name, and
/// valid labels that are all different.
pub fn valid_metric(name: &str, labels: &[String]) -> bool {
    let unique = (labels.iter().enumerate()).all(|(i, l)| !labels[..i].contains(l));
    valid_name(name) && unique && labels.iter().all(|l| valid_label(l))
}

/// Whether `bounds` may be a histogram's bucket bounds: one to [`MAX_BUCKETS`] finite
/// numbers, increasing.
pub fn valid_bounds(bounds: &[f64]) -> bool {
    !bounds.is_empty()
        && bounds.len() <= MAX_BUCKETS
        && bounds.windows(2).all(|w| w[0] < w[1])
        && bounds.iter().all(|b| b.is_finite())
}

/// Longest key of a request's property, in bytes.
pub const MAX_PROPERTY_KEY: usize = 64;
/// Longest value of a request's property, in bytes.
pub const MAX_PROPERTY_VALUE: usize = 1024;
/// Most properties a request may hold.
pub const MAX_PROPERTIES: usize = 32;
/// Most bytes of keys and values a request's properties may hold.
pub const MAX_PROPERTY_BYTES: usize = 4096;
/// Longest route name a filter may set, in bytes; a longer one is cut.
pub const MAX_ROUTE_NAME: usize = 128;
/// The longest timeout a filter may set.
pub const MAX_SETTING: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
