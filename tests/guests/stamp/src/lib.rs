//! A filter that leaves marks, so the tests can see hook order, response hooks,
//! buffered bodies, shared state and metrics at work.
//!
//! Config: `{ name: String, count: bool = false, upper: bool = false }`.
//! - Requests get `x-stamp-req: <name>` added (two stamps give two values), and with
//!   `count`, `x-count: <n>` from the shared state key `requests`.
//! - Responses get `x-stamp: <name>` added, and with `upper`, an ASCII upper-cased
//!   body (the only case in which the filter asks for the buffered body).
//! - With `reverse`, the filter asks for the buffered request body and reverses it
//!   (so the backend's echo shows it was seen and replaced).
//! - The counter `stamp_requests_total{path_kind}` counts requests.
//! - The request hook leaves the path in the request's context (property
//!   `stamp.<name>`); the response hook reads it back into `x-stamp-ctx`, and adds
//!   `x-stamp-attempt` (the attempt number) and, for a response the proxy made,
//!   `x-stamp-error` (why the exchange failed).
//! - With `route: NAME`, the request hook routes to that cluster; `declare: [..]` names
//!   the clusters it declares to the proxy (keys `declare[i]`).

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
    #[serde(default)]
    reverse: bool,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    declare: Vec<String>,
    #[serde(skip)]
    requests: Option<Counter>,
}

impl Filter for Stamp {
    fn init(&mut self) -> Result<(), String> {
        match Counter::define(
            "stamp_requests_total",
            "Requests seen by the stamp filter.",
            &["path_kind"],
        ) {
            Ok(c) => self.requests = Some(c),
            // A missing metric must not stop the marks the tests look for.
            Err(e) => log::warn(&format!("stamp: cannot define its metric: {e}")),
        }
        Ok(())
    }

    fn interest(&self) -> Interest {
        let interest = if self.upper {
            Interest::REQUEST.with_response_body()
        } else {
            Interest::REQUEST.with_response()
        };
        if self.reverse {
            interest.with_request_body()
        } else {
            interest
        }
    }

    fn clusters(&self) -> Vec<ClusterRef> {
        (self.declare.iter().enumerate())
            .map(|(i, c)| ClusterRef::new(c, format!("declare[{i}]")))
            .collect()
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        let head = req.head();
        if let Err(e) = ctx.set(&format!("stamp.{}", self.name), head.path().as_bytes()) {
            log::error(&format!("stamp: cannot set a property: {e:?}"));
        }
        if let Err(e) = req.add_header("x-stamp-req", &self.name) {
            log::error(&format!("stamp: cannot add x-stamp-req: {e}"));
        }
        if self.count {
            match state::increment("requests", 1) {
                Ok(n) => {
                    if let Err(e) = req.set_header("x-count", &n.to_string()) {
                        log::error(&format!("stamp: cannot set x-count: {e}"));
                    }
                }
                Err(e) => log::error(&format!("stamp: cannot count: {e}")),
            }
        }
        if self.reverse
            && let Some(mut body) = req.body()
        {
            body.reverse();
            if let Err(e) = req.set_body(&body) {
                log::error(&format!("stamp: cannot replace the request body: {e}"));
            }
        }
        if let Some(c) = &self.requests {
            let kind = if head.path() == "/" { "root" } else { "other" };
            if let Err(e) = c.inc(&[kind]) {
                log::error(&format!("stamp: cannot count in its metric: {e}"));
            }
        }
        match &self.route {
            Some(cluster) => Action::route(cluster),
            None => Action::Continue,
        }
    }

    fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
        if let Err(e) = resp.add_header("x-stamp", &self.name) {
            log::error(&format!("stamp: cannot add x-stamp: {e}"));
        }
        let seen = ctx.get(&format!("stamp.{}", self.name)).unwrap_or_default();
        let attempt = ctx.facts().attempt.to_string();
        let mut marks = vec![
            ("x-stamp-ctx", String::from_utf8_lossy(&seen).into_owned()),
            ("x-stamp-attempt", attempt),
        ];
        if let Some(error) = resp.head().error {
            marks.push(("x-stamp-error", format!("{error:?}")));
        }
        for (name, value) in marks {
            if let Err(e) = resp.set_header(name, &value) {
                log::error(&format!("stamp: cannot set {name}: {e}"));
            }
        }
        if self.upper
            && let Some(body) = resp.body()
            && let Err(e) = resp.set_body(&body.to_ascii_uppercase())
        {
            log::error(&format!("stamp: cannot replace the body: {e}"));
        }
        ResponseAction::Continue
    }
}

weft_sdk::export!(Stamp);
