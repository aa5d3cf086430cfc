//! What a proxy may say about itself on its stream: every field of a Hello or an ACK
//! is checked before the registry keeps it, because it is kept for as long as the
//! proxy is registered and printed on operators' terminals.

use std::collections::{BTreeMap, HashSet};

use weft_api::{Ack, Hello};

use crate::error::short;

/// Longest node id and service name: a DNS name's length.
const MAX_NAME_LEN: usize = 253;
/// Most labels a proxy may carry.
const MAX_LABELS: usize = 32;
/// Longest label key, and longest label value.
const MAX_LABEL_LEN: usize = 253;
/// Longest agent (Weft version) string.
const MAX_AGENT_LEN: usize = 64;
/// Shortest and longest instance secret.
const INSTANCE_LEN: std::ops::RangeInclusive<usize> = 16..=128;
/// Most listeners an ACK may report.
const MAX_LISTENERS: usize = 64;
/// Most filters a Hello or an ACK may report.
const MAX_FILTERS: usize = 64;
/// A NACK's reason is kept up to this many bytes.
const MAX_ERROR_LEN: usize = 2048;

/// Why a Hello is refused, if it is: what a proxy says about itself is kept for
/// as long as it is registered, and shown to operators.
pub(crate) fn check_hello(hello: &Hello) -> Result<(), String> {
    check_name("Hello.node", &hello.node)?;
    check_name("Hello.service", &hello.service)?;
    if !INSTANCE_LEN.contains(&hello.instance.len()) {
        return Err(format!(
            "Hello.instance must be a random secret of {} to {} bytes, drawn once per proxy process",
            INSTANCE_LEN.start(),
            INSTANCE_LEN.end()
        ));
    }
    if hello.labels.len() > MAX_LABELS {
        return Err(format!(
            "Hello.labels: {} labels; at most {MAX_LABELS}",
            hello.labels.len()
        ));
    }
    for (k, v) in &hello.labels {
        check_text("Hello.labels key", k, MAX_LABEL_LEN)?;
        if k.is_empty() {
            return Err("Hello.labels: a key is empty".into());
        }
        check_text(&format!("Hello.labels[{}]", short(k)), v, MAX_LABEL_LEN)?;
    }
    check_text("Hello.agent", &hello.agent, MAX_AGENT_LEN)?;
    check_filters("Hello.filters", &hello.filters)
}

/// Why an ACK is refused, if it is.
pub(crate) fn check_ack(ack: &Ack) -> Result<(), String> {
    if ack.listeners.len() > MAX_LISTENERS {
        return Err(format!(
            "Ack.listeners: {} listeners; at most {MAX_LISTENERS}",
            ack.listeners.len()
        ));
    }
    for l in &ack.listeners {
        check_text("Ack.listeners name", &l.name, MAX_NAME_LEN)?;
        check_text("Ack.listeners address", &l.address, MAX_NAME_LEN)?;
    }
    check_filters("Ack.filters", &ack.filters)
}

fn check_filters(what: &str, filters: &BTreeMap<String, String>) -> Result<(), String> {
    if filters.len() > MAX_FILTERS {
        return Err(format!(
            "{what}: {} filters; at most {MAX_FILTERS}",
            filters.len()
        ));
    }
    for (name, shas) in filters {
        crate::validate::check_name(name).map_err(|e| format!("{what}: {e}"))?;
        let ok = shas
            .split(',')
            .all(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok || shas.len() > 65 * MAX_FILTERS {
            return Err(format!(
                "{what}[{name}]: not a sha256 (64 hex digits), nor a list of them"
            ));
        }
    }
    Ok(())
}

fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    check_text(what, value, MAX_NAME_LEN)
}

/// At most `max` bytes, and no control characters: these are printed on operators'
/// terminals.
fn check_text(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{what}: {} bytes; at most {max}", value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "{what} {:?} holds control characters",
            short(value)
        ));
    }
    Ok(())
}

/// The start of a NACK's reason, at most [`MAX_ERROR_LEN`] bytes.
pub(crate) fn truncate_error(mut error: String) -> String {
    if error.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
        error.push_str(" [...]");
    }
    error
}

/// The modules a proxy says it keeps, as sha256 (lower-case hex); anything else is
/// not a module name and is ignored.
pub(crate) fn module_set(modules: &[String]) -> HashSet<String> {
    modules
        .iter()
        .filter(|m| m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|m| m.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A proxy's first message, from `node`.
    pub(crate) fn hello(node: &str) -> Hello {
        Hello {
            node: node.into(),
            service: "web".into(),
            instance: "i".repeat(32),
            ..Default::default()
        }
    }

    #[test]
    fn hellos_are_bounded() {
        assert_eq!(check_hello(&hello("web-1")), Ok(()));
        let mut h = hello("web-1");
        h.labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(
            check_hello(&h),
            Err("Hello.labels: 33 labels; at most 32".into())
        );
        let mut h = hello("web-1");
        h.labels
            .insert("zone".into(), "a".repeat(MAX_LABEL_LEN + 1));
        assert_eq!(
            check_hello(&h),
            Err("Hello.labels[zone]: 254 bytes; at most 253".into())
        );
        let mut h = hello("web-1");
        h.labels.insert("k".repeat(300), "a".into());
        assert_eq!(
            check_hello(&h),
            Err("Hello.labels key: 300 bytes; at most 253".into())
        );
        assert!(
            check_hello(&hello(""))
                .unwrap_err()
                .contains("must not be empty")
        );
        assert!(check_hello(&hello(&"n".repeat(254))).is_err());
        assert!(
            check_hello(&hello("web\x1b[2J"))
                .unwrap_err()
                .contains("control characters")
        );
        let mut h = hello("web-1");
        h.instance = "short".into();
        assert!(check_hello(&h).unwrap_err().starts_with("Hello.instance"));
        let mut h = hello("web-1");
        h.filters.insert("hello".into(), "not a sha".into());
        assert!(check_hello(&h).unwrap_err().contains("not a sha256"));
        h.filters.insert(
            "hello".into(),
            format!("{},{}", "a".repeat(64), "b".repeat(64)),
        );
        assert_eq!(check_hello(&h), Ok(()));
    }

    #[test]
    fn long_nack_reasons_are_cut_at_a_character() {
        let cut = truncate_error("é".repeat(MAX_ERROR_LEN));
        assert!(cut.len() <= MAX_ERROR_LEN + 6, "{}", cut.len());
        assert!(cut.ends_with(" [...]"));
        assert_eq!(truncate_error("short".into()), "short");
    }
}
