//! The built-in fault filter: abort requests with a status, or delay them, for a
//! percentage of requests and/or only for requests carrying a header value.
//!
//! 1. An `abort` answers the request itself (with `x-weft-fault: abort`), so the
//!    upstream never sees it.
//! 2. A `delay` holds the request, then lets it go on.
//! 3. When both apply to one request, the abort wins: a hook returns one action.
//!
//! ```yaml
//! abort:
//!   status: 503
//!   percentage: 50          # 0 to 100; defaults to 100 when `header` is given
//!   header: { name: x-weft-fault, value: abort }   # optional
//!   body: "fault injected"  # optional
//! delay:
//!   duration: 200ms
//!   percentage: 100
//!   header: { name: x-weft-fault, value: delay }
//! ```
//!
//! ```no_run
//! let fault: weft_filter_fault::Fault =
//!     weft_sdk::from_config(r#"{"abort":{"status":503,"percentage":50}}"#)?;
//! # Ok::<(), String>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::time::Duration;

use weft_sdk::prelude::*;
use weft_sdk::random;

/// The fault filter's configuration.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
pub struct Fault {
    #[serde(default)]
    abort: Option<Abort>,
    #[serde(default)]
    delay: Option<Delay>,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Abort {
    status: u16,
    #[serde(default)]
    percentage: Option<f64>,
    #[serde(default)]
    header: Option<HeaderMatch>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Delay {
    #[serde(deserialize_with = "weft_sdk::units::deserialize_duration")]
    duration: Duration,
    #[serde(default)]
    percentage: Option<f64>,
    #[serde(default)]
    header: Option<HeaderMatch>,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct HeaderMatch {
    name: String,
    value: String,
}

const DEFAULT_ABORT_BODY: &str = "fault injected by the weft fault filter\n";

/// The request's headers as the conditions read them: one host call per header
/// name, however many conditions name it (abort and delay usually share one). Most
/// requests lack it, and then nothing is copied.
struct Seen<'a> {
    req: &'a Request,
    last: Option<(&'a str, Option<String>)>,
}

impl<'a> Seen<'a> {
    fn has(&mut self, h: &'a HeaderMatch) -> bool {
        if self.last.as_ref().is_none_or(|(name, _)| *name != h.name) {
            self.last = Some((&h.name, self.req.header(&h.name)));
        }
        let value = self.last.as_ref().and_then(|(_, v)| v.as_deref());
        value == Some(h.value.as_str())
    }

    /// Whether a fault with this condition hits this request: its header (if any)
    /// has the value, and the dice (if a percentage below 100 was given) agree.
    fn hits(&mut self, header: Option<&'a HeaderMatch>, percentage: Option<f64>) -> bool {
        if let Some(h) = header
            && !self.has(h)
        {
            return false;
        }
        random::chance(percentage.unwrap_or(100.0))
    }
}

/// Check a fault's condition; lower-case its header name as the proxy's are.
fn check_condition(
    what: &str,
    percentage: Option<f64>,
    header: Option<&mut HeaderMatch>,
) -> Result<(), String> {
    match percentage {
        None if header.is_none() => {
            return Err(format!(
                "{what}: give a percentage (0 to 100), a header, or both"
            ));
        }
        Some(p) if !(0.0..=100.0).contains(&p) => {
            return Err(format!("{what}.percentage: {p} is not within 0 to 100"));
        }
        _ => {}
    }
    if let Some(h) = header {
        if h.name.is_empty() {
            return Err(format!("{what}.header.name is empty"));
        }
        h.name.make_ascii_lowercase();
    }
    Ok(())
}

impl Filter for Fault {
    fn init(&mut self) -> Result<(), String> {
        if self.abort.is_none() && self.delay.is_none() {
            return Err("configure abort, delay, or both".into());
        }
        if let Some(a) = &mut self.abort {
            if !(200..=599).contains(&a.status) {
                return Err(format!(
                    "abort.status: {} is not within 200 to 599",
                    a.status
                ));
            }
            check_condition("abort", a.percentage, a.header.as_mut())?;
        }
        if let Some(d) = &mut self.delay {
            check_condition("delay", d.percentage, d.header.as_mut())?;
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request, _: &Context) -> Action {
        let mut seen = Seen { req, last: None };
        if let Some(a) = &self.abort
            && seen.hits(a.header.as_ref(), a.percentage)
        {
            let body = a.body.as_deref().unwrap_or(DEFAULT_ABORT_BODY);
            return Action::Respond(
                LocalResponse::new(a.status)
                    .text(body)
                    .header("x-weft-fault", "abort"),
            );
        }
        if let Some(d) = &self.delay
            && seen.hits(d.header.as_ref(), d.percentage)
        {
            return Action::delay(d.duration);
        }
        Action::Continue
    }
}

weft_sdk::export!(Fault);

#[cfg(test)]
mod tests {
    use super::*;

    fn error(json: &str) -> String {
        match weft_sdk::from_config::<Fault>(json) {
            Ok(_) => panic!("accepted {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn good_configs_load() {
        let f: Fault = weft_sdk::from_config(
            r#"{"abort":{"status":503,"header":{"name":"X-Weft-Fault","value":"abort"}},
                "delay":{"duration":"1s 200ms","percentage":12.5}}"#,
        )
        .unwrap();
        let abort = f.abort.as_ref().unwrap();
        assert_eq!(abort.header.as_ref().unwrap().name, "x-weft-fault");
        assert_eq!(f.delay.unwrap().duration, Duration::from_millis(1200));
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            ("null", "configure abort, delay, or both"),
            ("{}", "configure abort, delay, or both"),
            (
                r#"{"abort":{"status":600,"percentage":1}}"#,
                "abort.status: 600 is not within 200 to 599",
            ),
            (
                r#"{"abort":{"status":503}}"#,
                "abort: give a percentage (0 to 100), a header, or both",
            ),
            (
                r#"{"delay":{"duration":"1s","percentage":101}}"#,
                "delay.percentage: 101 is not within 0 to 100",
            ),
            (
                r#"{"delay":{"duration":"soon","percentage":1}}"#,
                "delay.duration: invalid duration \"soon\"",
            ),
            (
                r#"{"abort":{"status":503,"percentage":1,"stauts":1}}"#,
                "unknown field `stauts`",
            ),
            (r#"{"abrot":{}}"#, "unknown field `abrot`"),
        ];
        for (json, want) in cases {
            let e = error(json);
            assert!(e.contains(want), "{json}\n  gave {e}\n  want {want}");
        }
    }
}
