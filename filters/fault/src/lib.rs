//! The built-in fault filter: abort requests with a status, or delay them, for a
//! percentage of requests and/or only those carrying a header value. When both an
//! abort and a delay apply to a request, the abort wins.

use std::time::Duration;

use weft_sdk::prelude::*;
use weft_sdk::random;

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Fault {
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
    #[serde(with = "duration")]
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

mod duration {
    use std::time::Duration;
    use weft_sdk::serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            D::Error::custom(format!("invalid duration {s:?} ({e}); write e.g. 200ms"))
        })
    }
}

/// When a fault applies: its header condition (if any) holds, and the dice agree.
fn applies(req: &Request, header: &Option<HeaderMatch>, percentage: Option<f64>) -> bool {
    if let Some(h) = header {
        if req.header(&h.name).as_deref() != Some(h.value.as_str()) {
            return false;
        }
    }
    random::chance(percentage.unwrap_or(100.0))
}

fn check_percentage(
    what: &str,
    p: Option<f64>,
    header: &Option<HeaderMatch>,
) -> Result<(), String> {
    match p {
        None if header.is_none() => Err(format!("{what}: give a percentage, a header, or both")),
        Some(p) if !(0.0..=100.0).contains(&p) => {
            Err(format!("{what}.percentage {p} is not within 0 to 100"))
        }
        _ => Ok(()),
    }
}

impl Filter for Fault {
    fn init(&mut self) -> Result<(), String> {
        if self.abort.is_none() && self.delay.is_none() {
            return Err("configure abort, delay, or both".into());
        }
        if let Some(a) = &self.abort {
            if !(200..=599).contains(&a.status) {
                return Err(format!(
                    "abort.status {} is not within 200 to 599",
                    a.status
                ));
            }
            check_percentage("abort", a.percentage, &a.header)?;
        }
        if let Some(d) = &self.delay {
            check_percentage("delay", d.percentage, &d.header)?;
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Action {
        if let Some(a) = &self.abort {
            if applies(req, &a.header, a.percentage) {
                let body = a.body.as_deref().unwrap_or("fault injected: abort\n");
                return Action::Respond(
                    LocalResponse::new(a.status)
                        .text(body)
                        .header("x-weft-fault", "abort"),
                );
            }
        }
        if let Some(d) = &self.delay {
            if applies(req, &d.header, d.percentage) {
                return Action::delay(d.duration);
            }
        }
        Action::Continue
    }
}

weft_sdk::export!(Fault);
