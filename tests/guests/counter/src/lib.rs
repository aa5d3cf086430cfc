//! A filter that counts requests in its shared state, so the tests can see that the
//! state outlives reloads, and that keys with a time to live and listing work from a
//! real guest.
//!
//! Config: `{ key: String = "requests", mark: String = "" }`.
//! - Each request adds one to the state key `key` and carries the count in
//!   `x-count` (the stamp guest with `count` counts in `requests` the same way, so
//!   one can replace the other).
//! - Each request writes `seen<path>` with an hour to live and `flash` with none
//!   (a time to live of zero), and carries `x-seen`: the `seen` keys, listed two
//!   to a page and joined by `,`; and `x-flash`: whether `flash` can be read.
//! - `x-mark` carries `mark`, to tell one configuration from another.

use std::time::Duration;

use weft_sdk::prelude::*;
use weft_sdk::{log, state};

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Counter {
    #[serde(default = "requests")]
    key: String,
    #[serde(default)]
    mark: String,
}

fn requests() -> String {
    "requests".to_owned()
}

/// Every `seen` key, read page by page.
fn seen() -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let page = state::keys("seen", all.last().map(String::as_str), 2);
        let last = page.len() < 2;
        all.extend(page);
        if last {
            return all;
        }
    }
}

impl Filter for Counter {
    fn on_request(&mut self, req: &Request, _: &Context) -> Action {
        let count = match state::increment(&self.key, 1) {
            Ok(n) => n.to_string(),
            Err(e) => format!("error: {e}"),
        };
        let path = req.head().path().to_owned();
        let hour = Duration::from_secs(3600);
        if let Err(e) = state::set_with_ttl(&format!("seen{path}"), b"", hour) {
            log::error(&format!("counter: cannot write seen{path}: {e}"));
        }
        if let Err(e) = state::set_with_ttl("flash", b"", Duration::ZERO) {
            log::error(&format!("counter: cannot write flash: {e}"));
        }
        let flash = state::get("flash").is_some().to_string();
        let marks = [
            ("x-count", count),
            ("x-seen", seen().join(",")),
            ("x-flash", flash),
            ("x-mark", self.mark.clone()),
        ];
        for (name, value) in marks {
            if let Err(e) = req.set_header(name, &value) {
                log::error(&format!("counter: cannot set {name}: {e}"));
            }
        }
        Action::Continue
    }
}

weft_sdk::export!(Counter);
