//! Version `one` of the tag filter (see `../../tag.rs`).

const TAG: &str = "one";

include!("../../tag.rs");
