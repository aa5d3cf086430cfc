//! Version `two` of the tag filter (see `../../tag.rs`).

const TAG: &str = "two";

include!("../../tag.rs");
