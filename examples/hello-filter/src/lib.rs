use weft_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde")]
struct Hello {
    greeting: String,
}

impl Filter for Hello {
    fn on_request(&mut self, req: &Request, _: &Context) -> Action {
        if req.head().path() == "/hello" {
            Action::respond(200, &self.greeting)
        } else {
            Action::Continue
        }
    }
}
weft_sdk::export!(Hello);
