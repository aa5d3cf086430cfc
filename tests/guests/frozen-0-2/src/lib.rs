//! A filter built against `weft:filter@0.2.0` as it first shipped (`wit/filter.wit`
//! here is a frozen copy), before `context` gained the identity functions. The proxy
//! must keep loading and running it: functions added to 0.2.0 never change what an
//! older component imports.
//!
//! - Requests get `x-frozen-path` (the path, read through `read-head`) and
//!   `x-frozen-configure` (`ok` when `context.configure` accepted a timeout).
//! - The request hook leaves the path in the property `frozen.path` and names the
//!   route `frozen`; the response hook reads both back into `x-frozen-ctx` and
//!   `x-frozen-route`, and stamps `x-frozen: 0.2.0`.
//! - `on-done` counts the request in `frozen_requests_total`.

wit_bindgen::generate!({ path: "wit", world: "filter-world" });

use exports::weft::filter::filter::Guest;
use weft::filter::host;
use weft::filter::types::{
    Action, BodyMode, Context, ExchangeSetting, Interest, Request, Response, ResponseAction,
    Summary,
};

const PROPERTY: &str = "frozen.path";

// Exported on wasm only; on the host (`cargo test --workspace`) it is unused.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Frozen;

/// The metric `on-done` counts in, defined by `init` (each instance defines it; the
/// proxy hands every instance the same one).
static REQUESTS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn text(bytes: &[u8], start: u32, len: u32) -> String {
    let (start, len) = (start as usize, len as usize);
    let slice = bytes
        .get(start..start.saturating_add(len))
        .unwrap_or_default();
    String::from_utf8_lossy(slice).into_owned()
}

impl Guest for Frozen {
    fn init(_config: String) -> Result<Interest, String> {
        let id = host::define_metric(
            host::MetricKind::Counter,
            "frozen_requests_total",
            "Requests the frozen 0.2.0 filter saw end.",
            &[],
        )
        .map_err(|e| format!("cannot define a metric: {e:?}"))?;
        let _ = REQUESTS.set(id);
        Ok(Interest {
            request: true,
            request_body: BodyMode::None,
            response: true,
            response_body: BodyMode::None,
            done: true,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            response_trailers: false,
            keep_request_body: 0,
        })
    }

    fn on_request(request: &Request, context: &Context) -> Action {
        let head = request.read_head();
        let path = text(&head.text, head.path.start, head.path.len);
        let _ = request.set_header("x-frozen-path", &path);
        let configured = context.configure(ExchangeSetting::Timeout(5_000_000_000));
        let said = if configured.is_ok() { "ok" } else { "refused" };
        let _ = request.set_header("x-frozen-configure", said);
        let _ = context.set(PROPERTY, path.as_bytes());
        context.set_route("frozen");
        Action::Continue
    }

    fn on_response(response: &Response, context: &Context) -> ResponseAction {
        let _ = response.set_header("x-frozen", "0.2.0");
        if let Some(path) = context.get(PROPERTY) {
            let _ = response.set_header("x-frozen-ctx", &String::from_utf8_lossy(&path));
        }
        if let Some(route) = context.facts().route {
            let _ = response.set_header("x-frozen-route", &route);
        }
        ResponseAction::Continue
    }

    fn on_done(_context: &Context, _summary: Summary) {
        if let Some(id) = REQUESTS.get() {
            let _ = host::metric_add(*id, &[], 1);
        }
    }
}

#[cfg(target_arch = "wasm32")]
export!(Frozen);
