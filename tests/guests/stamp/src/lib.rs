//! A filter that leaves marks, so the tests can see hook order, response hooks,
//! buffered bodies, shared state and metrics at work.

use weft_sdk::metrics::Counter;
use weft_sdk::prelude::*;
use weft_sdk::{log, state};

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Stamp {
    name: String,
    #[serde(default)]
    count: bool,
    #[serde(default)]
    upper: bool,
    #[serde(skip)]
    requests: Option<Counter>,
}

impl Filter for Stamp {
    fn interest() -> Interest {
        // Only the config knows whether bodies are wanted, and interest is per type:
        // ask for the response body always; the filter leaves it alone unless `upper`.
        Interest::REQUEST.with_response_body()
    }

    fn init(&mut self) -> Result<(), String> {
        match Counter::define(
            "stamp_requests_total",
            "Requests seen by the stamp filter.",
            &["path_kind"],
        ) {
            Ok(c) => self.requests = Some(c),
            Err(e) => log::warn(&format!("no metric: {e:?}")),
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Action {
        let _ = req.add_header("x-stamp-req", &self.name);
        if self.count {
            match state::increment("requests", 1) {
                Ok(n) => {
                    let _ = req.set_header("x-count", &n.to_string());
                }
                Err(e) => log::error(&format!("state: {e:?}")),
            }
        }
        if let Some(c) = &self.requests {
            let kind = if req.path() == "/" { "root" } else { "other" };
            if let Err(e) = c.add(&[kind], 1) {
                log::error(&format!("metric: {e:?}"));
            }
        }
        Action::Continue
    }

    fn on_response(&mut self, resp: &Response) -> ResponseAction {
        let _ = resp.add_header("x-stamp", &self.name);
        if self.upper {
            if let Some(body) = resp.body() {
                let _ = resp.set_body(&body.to_ascii_uppercase());
            }
        }
        ResponseAction::Continue
    }
}

weft_sdk::export!(Stamp);
