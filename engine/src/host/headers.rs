//! The header and body rules the request and response resources share: which headers a
//! filter may not touch, and how a buffered body is replaced.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::bindings::types;

/// Headers a filter may not touch through the header calls: the proxy frames messages
/// itself, and the request's target has one home (`set-authority`), so that what
/// filters decided on is what the upstream gets.
pub(super) fn is_forbidden(name: &HeaderName) -> bool {
    crate::header_rules::is_proxy_owned(name.as_str())
}

pub(super) fn header_pair(
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), types::HeaderError> {
    let name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| types::HeaderError::InvalidName)?;
    if is_forbidden(&name) {
        return Err(types::HeaderError::Forbidden);
    }
    let value = HeaderValue::from_str(value).map_err(|_| types::HeaderError::InvalidValue)?;
    Ok((name, value))
}

pub(super) fn get_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(super) fn all_headers(headers: &HeaderMap) -> Vec<types::Header> {
    headers
        .iter()
        .map(|(name, value)| types::Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

pub(super) fn set_header(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
) -> Result<(), types::HeaderError> {
    let (name, value) = header_pair(name, value)?;
    headers.insert(name, value);
    Ok(())
}

pub(super) fn add_header(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
) -> Result<(), types::HeaderError> {
    let (name, value) = header_pair(name, value)?;
    headers.append(name, value);
    Ok(())
}

pub(super) fn remove_header(headers: &mut HeaderMap, name: &str) -> bool {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(name) if !is_forbidden(&name) => headers.remove(name).is_some(),
        _ => false,
    }
}

pub(super) fn set_body(
    headers: &mut HeaderMap,
    slot: &mut Option<Bytes>,
    access: bool,
    body: Vec<u8>,
) -> Result<(), String> {
    if !access || slot.is_none() {
        return Err("this filter did not ask for the body (interest body-mode buffered)".into());
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    *slot = Some(Bytes::from(body));
    Ok(())
}

/// Hooks only ever run with an exchange in place; a guest that kept a borrowed handle
/// past its hook, or changes the request from a response hook, gets refusals rather
/// than a crash of the host.
pub(super) const NOT_NOW: &str = "the request can be changed only by its request hook";
pub(super) const NO_RESPONSE: &str = "no response is lent to this filter now";
