// The tag filter, shared by the `tag-one` and `tag-two` guests: two versions of one
// filter that differ only in the tag they put on requests (`x-tag: TAG`), so a test
// can tell which version served each request while it swaps them under load.
//
// Config: `{ prefix: String }` (optional), put before the tag.

use weft_sdk::prelude::*;

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Tag {
    #[serde(default)]
    prefix: String,
}

impl Filter for Tag {
    fn on_request(&mut self, req: &Request, _: &Context) -> Action {
        match req.add_header("x-tag", &format!("{}{TAG}", self.prefix)) {
            Ok(()) => Action::Continue,
            Err(e) => Action::respond(500, format!("tag: {e}")),
        }
    }
}

weft_sdk::export!(Tag);
