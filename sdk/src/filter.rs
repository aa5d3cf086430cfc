//! The [`Filter`] trait and the glue that runs one filter value per instance.

use std::any::Any;
use std::cell::RefCell;

use serde::de::DeserializeOwned;

use crate::{Action, Interest, LocalResponse, Request, Response, ResponseAction};

/// A Weft filter. The type is its own configuration: the proxy's `config` for the
/// filter is deserialized into it, then [`Filter::init`] runs.
pub trait Filter: DeserializeOwned + 'static {
    /// The hooks and bodies this filter wants. Only what is asked for is called, so
    /// a filter pays nothing for the rest. Default: [`Interest::REQUEST`].
    fn interest() -> Interest
    where
        Self: Sized,
    {
        Interest::REQUEST
    }

    /// Check and prepare the configuration after deserializing it. An error is
    /// shown to the operator as the reason the configuration was rejected.
    fn init(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Called for every request. Return [`Action::Continue`] to pass it on.
    fn on_request(&mut self, req: &Request) -> Action;

    /// Called for every response when [`Filter::interest`] asks for it.
    fn on_response(&mut self, _resp: &Response) -> ResponseAction {
        ResponseAction::Continue
    }
}

thread_local! {
    // Wasm instances are single-threaded: one filter value per instance.
    static FILTER: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

#[doc(hidden)]
pub fn init<F: Filter>(config: &str) -> Result<Interest, String> {
    let mut filter: F = match serde_json::from_str(config) {
        Ok(f) => f,
        // A filter whose fields all have defaults accepts a missing config as {}.
        Err(e) if config.trim() == "null" => {
            serde_json::from_str("{}").map_err(|_| format!("invalid config: {e}"))?
        }
        Err(e) => return Err(format!("invalid config: {e}")),
    };
    filter.init()?;
    FILTER.with(|slot| *slot.borrow_mut() = Some(Box::new(filter)));
    Ok(F::interest())
}

fn with_filter<F: Filter, R>(f: impl FnOnce(&mut F) -> R) -> Option<R> {
    FILTER.with(|slot| {
        let mut slot = slot.borrow_mut();
        slot.as_mut().and_then(|b| b.downcast_mut::<F>()).map(f)
    })
}

fn not_initialised() -> LocalResponse {
    LocalResponse::new(500).text("filter hook called before init succeeded\n")
}

#[doc(hidden)]
pub fn on_request<F: Filter>(req: &Request) -> Action {
    with_filter::<F, _>(|f| f.on_request(req)).unwrap_or_else(|| Action::Respond(not_initialised()))
}

#[doc(hidden)]
pub fn on_response<F: Filter>(resp: &Response) -> ResponseAction {
    with_filter::<F, _>(|f| f.on_response(resp))
        .unwrap_or_else(|| ResponseAction::Respond(not_initialised()))
}
