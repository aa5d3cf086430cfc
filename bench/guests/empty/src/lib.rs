//! Hooks that return at once, reading nothing: the benchmark's floor, what the call
//! into a warm instance costs before a filter does any work.

use weft_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde")]
struct Empty {}

impl Filter for Empty {
    fn interest(&self) -> Interest {
        Interest::REQUEST.with_response()
    }

    fn on_request(&mut self, _: &Request, _: &Context) -> Action {
        Action::Continue
    }

    fn on_response(&mut self, _: &Response, _: &Context) -> ResponseAction {
        ResponseAction::Continue
    }
}

weft_sdk::export!(Empty);
