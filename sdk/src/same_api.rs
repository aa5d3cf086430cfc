//! The request, response and context a filter gets have the same methods in a wasm
//! build (the WIT resources) and in a native one (the test doubles): this function
//! calls every one of them with the types the resources take and return, and is
//! compiled for both targets, so a difference fails the build of one.

use crate::__weft_bindings::weft::filter::types as raw;
use crate::{
    Context, ExchangeSetting, Facts, Header, HeaderError, PropertyError, Request, Response,
    SettingError,
};

#[allow(dead_code, clippy::type_complexity)]
fn same_api(req: &Request, resp: &Response, ctx: &Context) {
    let _: raw::RequestHead = req.read_head();
    let _: Result<(), String> = req.set_path("/");
    let _: Result<(), String> = req.set_authority("a");
    let _: Option<String> = req.header("a");
    let _: Vec<Vec<u8>> = req.header_all("a");
    let _: Vec<Header> = req.headers();
    let _: Result<(), HeaderError> = req.set_header("a", "b");
    let _: Result<(), HeaderError> = req.add_header("a", "b");
    let _: bool = req.remove_header("a");
    let _: Option<Vec<u8>> = req.body();
    let _: Result<(), String> = req.set_body(b"");

    let _: raw::ResponseHead = resp.read_head();
    let _: Result<(), String> = resp.set_status(200);
    let _: Option<String> = resp.header("a");
    let _: Vec<Header> = resp.headers();
    let _: Result<(), HeaderError> = resp.set_header("a", "b");
    let _: Result<(), HeaderError> = resp.add_header("a", "b");
    let _: bool = resp.remove_header("a");
    let _: Option<Vec<u8>> = resp.body();
    let _: Result<(), String> = resp.set_body(b"");

    let _: Facts = ctx.facts();
    let _: raw::RequestHead = ctx.read_request_head();
    let _: Option<Vec<u8>> = ctx.get("a");
    let _: Result<(), PropertyError> = ctx.set("a", b"");
    let _: bool = ctx.remove("a");
    ctx.set_route("a");
    let _: Result<(), SettingError> = ctx.configure(ExchangeSetting::Timeout(1));
    let _: Option<u32> = ctx.grpc_status();
    let _: Result<(), SettingError> = ctx.require_upstream_identity("*");
    let _: Option<String> = ctx.upstream_identity();
    let _: Option<String> = ctx.local_identity();
}
