//! The request, response and context of a hook when a filter runs natively (its
//! crate's `cargo test`): plain values with the same methods as the WIT resources a
//! filter gets in the proxy, answered the way the proxy answers them, plus what a test
//! needs to build them and to look at what the filter did.
//!
//! In a wasm build these types do not exist: `weft_sdk::Request` and the others are
//! the resources, and a filter's code compiles the same against both.

use std::cell::RefCell;
use std::rc::Rc;

use crate::__weft_bindings::weft::filter::types as raw;
use crate::header_rules::{is_proxy_owned, is_token};
use crate::{Header, HeaderError, Interest, LocalResponse, RequestHead, ResponseHead};

mod context;

pub use context::Context;
pub(crate) use context::Phase;

/// A change a filter made to a request or response, in the order it made them; what
/// [`Request::edits`] and [`Response::edits`] return. Refused calls are not edits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// `set-header`: every value of `name` replaced by `value`.
    SetHeader {
        /// Header name, lower-case.
        name: String,
        /// The value.
        value: String,
    },
    /// `add-header`: `value` added to `name`.
    AddHeader {
        /// Header name, lower-case.
        name: String,
        /// The value.
        value: String,
    },
    /// `remove-header` of a header that was there.
    RemoveHeader(String),
    /// `set-path`.
    SetPath(String),
    /// `set-authority`.
    SetAuthority(String),
    /// `set-body`.
    SetBody(Vec<u8>),
    /// `set-status`.
    SetStatus(u16),
}

/// Visible ASCII, space and tab: what the proxy takes as a header value from a string.
fn visible(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Bytes a header value may hold on the wire: no control character but tab.
pub(crate) fn wire_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A header name and value a filter may set, lower-cased as the proxy keeps names.
fn checked(name: &str, value: &str) -> Result<String, HeaderError> {
    if !is_token(name) {
        return Err(HeaderError::InvalidName);
    }
    let name = name.to_ascii_lowercase();
    if is_proxy_owned(&name) {
        return Err(HeaderError::Forbidden);
    }
    if !visible(value.as_bytes()) {
        return Err(HeaderError::InvalidValue);
    }
    Ok(name)
}

/// The header fields of a message, in order, names lower-case.
#[derive(Clone, Debug, Default)]
struct Fields(Vec<(String, Vec<u8>)>);

impl Fields {
    fn from_iter<'a>(it: impl Iterator<Item = (&'a str, &'a [u8])>) -> Self {
        Fields(
            it.map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
                .collect(),
        )
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        (self.0.iter())
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn first_str(&self, name: &str) -> Option<String> {
        let value = self.all(name).next()?;
        // As the proxy's `to_str`: visible ASCII only.
        visible(value).then(|| String::from_utf8_lossy(value).into_owned())
    }

    fn list(&self) -> Vec<Header> {
        (self.0.iter())
            .map(|(name, value)| Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    fn set(&mut self, name: String, value: &str) {
        match self.0.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                self.0[i].1 = value.as_bytes().to_vec();
                let mut seen = 0;
                self.0.retain(|(n, _)| {
                    seen += usize::from(*n == name);
                    *n != name || seen == 1
                });
            }
            None => self.0.push((name, value.as_bytes().to_vec())),
        }
    }

    fn add(&mut self, name: String, value: &str) {
        self.0.push((name, value.as_bytes().to_vec()));
    }

    fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.0.len() != before
    }

    /// The fields a head shows: those named (in the order of the names, then of the
    /// message), or every one when no names were given.
    fn named<'a>(&'a self, names: Option<&'a [String]>) -> Vec<(&'a str, &'a [u8])> {
        let pair = |(n, v): &'a (String, Vec<u8>)| (n.as_str(), v.as_slice());
        match names {
            None => self.0.iter().map(pair).collect(),
            Some(names) => (names.iter())
                .flat_map(|name| self.0.iter().filter(move |(n, _)| n == name).map(pair))
                .collect(),
        }
    }
}

/// What the filter may see of a message: the headers its interest names (`None`: a
/// test built the message alone, so every header), and whether the body is lent.
#[derive(Clone, Debug)]
struct Lens {
    names: Option<Vec<String>>,
    body: bool,
}

/// What a request and a response share: their headers, their body, what the filter
/// may see of them and the changes it made; the header and body rules live here once.
#[derive(Debug)]
struct Message {
    fields: Fields,
    body: Option<Vec<u8>>,
    lens: Lens,
    edits: Vec<Edit>,
}

impl Message {
    /// A message a test built alone: every header and the body visible.
    fn new(fields: Fields) -> Self {
        Message {
            fields,
            body: None,
            lens: Lens {
                names: None,
                body: true,
            },
            edits: Vec::new(),
        }
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        let name = checked(name, value)?;
        self.fields.set(name.clone(), value);
        let value = value.to_owned();
        self.edits.push(Edit::SetHeader { name, value });
        Ok(())
    }

    fn add_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        let name = checked(name, value)?;
        self.fields.add(name.clone(), value);
        let value = value.to_owned();
        self.edits.push(Edit::AddHeader { name, value });
        Ok(())
    }

    fn remove_header(&mut self, name: &str) -> bool {
        if is_proxy_owned(name) {
            return false;
        }
        let removed = self.fields.remove(name);
        if removed {
            self.edits
                .push(Edit::RemoveHeader(name.to_ascii_lowercase()));
        }
        removed
    }

    fn body(&self) -> Option<Vec<u8>> {
        self.body.clone().filter(|_| self.lens.body)
    }

    fn set_body(&mut self, body: &[u8]) -> Result<(), String> {
        if !self.lens.body || self.body.is_none() {
            return Err(
                "this filter did not ask for the body (interest body-mode buffered)".into(),
            );
        }
        self.fields
            .set("content-length".to_owned(), &body.len().to_string());
        self.body = Some(body.to_vec());
        self.edits.push(Edit::SetBody(body.to_vec()));
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct RequestState {
    method: String,
    path: String,
    authority: Option<String>,
    msg: Message,
}

impl RequestState {
    /// The head a filter reads: method, path, authority, and the named headers.
    pub(crate) fn head(&self) -> raw::RequestHead {
        let mut head = RequestHead::new(&self.method, &self.path);
        if let Some(a) = &self.authority {
            head = head.with_authority(a);
        }
        for (name, value) in self.msg.fields.named(self.msg.lens.names.as_deref()) {
            head = head.with_header(name, value);
        }
        head.into_raw()
    }
}

/// The request a hook works on (natively: a test double, see the [module
/// docs](crate::testing)).
///
/// A test builds it from a head and looks afterwards at what the filter changed:
///
/// ```
/// use weft_sdk::{Request, RequestHead, testing::Edit};
/// let req = Request::new(RequestHead::new("GET", "/api").with_header("x-user", "ann"));
/// req.set_header("x-tenant", "acme").unwrap();
/// assert_eq!(req.header("x-tenant").as_deref(), Some("acme"));
/// assert_eq!(req.edits(), [Edit::SetHeader { name: "x-tenant".into(), value: "acme".into() }]);
/// ```
// Not `Clone`: the resource a filter gets in the proxy is not either.
#[derive(Debug)]
pub struct Request {
    state: Rc<RefCell<RequestState>>,
}

impl Request {
    /// A request with this head and no body. The filter's `head()` shows every header
    /// of it, unless [`testing::Exchange`](crate::testing::Exchange) lends it to the
    /// filter, which shows only the headers the filter's interest names, as the proxy.
    pub fn new(head: RequestHead) -> Self {
        let state = RequestState {
            method: head.method().to_owned(),
            path: head.path().to_owned(),
            authority: head.authority().map(str::to_owned),
            msg: Message::new(Fields::from_iter(head.headers())),
        };
        Self {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// This request with a body, buffered for the filter as when its interest asks
    /// for the request body.
    pub fn with_body(self, body: impl AsRef<[u8]>) -> Self {
        self.state.borrow_mut().msg.body = Some(body.as_ref().to_vec());
        self
    }

    /// The method (native only, for tests).
    pub fn method(&self) -> String {
        self.state.borrow().method.clone()
    }

    /// Path and query as they are now (native only, for tests).
    pub fn path(&self) -> String {
        self.state.borrow().path.clone()
    }

    /// The target authority as it is now (native only, for tests).
    pub fn authority(&self) -> Option<String> {
        self.state.borrow().authority.clone()
    }

    /// Every change the filter made, in order (native only, for tests).
    pub fn edits(&self) -> Vec<Edit> {
        self.state.borrow().msg.edits.clone()
    }

    /// Lend this request to a filter with this interest, as the proxy does.
    pub(crate) fn lend(&self, interest: &Interest) {
        self.state.borrow_mut().msg.lens = Lens {
            names: Some(interest.request_headers.clone()),
            body: interest.request_body == crate::BodyMode::Buffered,
        };
    }

    pub(crate) fn shared(&self) -> Rc<RefCell<RequestState>> {
        self.state.clone()
    }

    /// The body as it is now, whether or not it was lent to the filter (native only,
    /// for tests).
    pub fn body_now(&self) -> Option<Vec<u8>> {
        self.state.borrow().msg.body.clone()
    }

    /// The body's length, which decides whether a retry can send it again.
    pub(crate) fn body_len(&self) -> usize {
        self.state.borrow().msg.body.as_ref().map_or(0, Vec::len)
    }

    fn edit(&self, edit: Edit) {
        self.state.borrow_mut().msg.edits.push(edit);
    }

    /// Method, path, authority and the headers named in the filter's interest, in
    /// one call.
    pub fn read_head(&self) -> raw::RequestHead {
        self.state.borrow().head()
    }

    /// Replace path and query. It must start with `/`.
    pub fn set_path(&self, path: &str) -> Result<(), String> {
        if !path.starts_with('/') {
            return Err(format!("path must start with '/': {path:?}"));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
            return Err(format!("invalid path {path:?}"));
        }
        self.state.borrow_mut().path = path.to_owned();
        self.edit(Edit::SetPath(path.to_owned()));
        Ok(())
    }

    /// Replace the target authority (the `host` header sent upstream).
    pub fn set_authority(&self, authority: &str) -> Result<(), String> {
        let bad = |b: u8| !(0x21..0x7f).contains(&b) || b"/?#\"<>\\^`{|}".contains(&b);
        if authority.is_empty() || authority.bytes().any(bad) {
            return Err(format!("invalid authority {authority:?}"));
        }
        let mut s = self.state.borrow_mut();
        s.authority = Some(authority.to_owned());
        s.msg.fields.set("host".to_owned(), authority);
        s.msg.edits.push(Edit::SetAuthority(authority.to_owned()));
        Ok(())
    }

    /// First value of a header, if present and valid UTF-8 (for a header the filter
    /// did not name in its interest).
    pub fn header(&self, name: &str) -> Option<String> {
        self.state.borrow().msg.fields.first_str(name)
    }

    /// Every value of a header, in order, as bytes.
    pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.state
            .borrow()
            .msg
            .fields
            .all(name)
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Every header, in order.
    pub fn headers(&self) -> Vec<Header> {
        self.state.borrow().msg.fields.list()
    }

    /// Replace every value of a header with this one.
    pub fn set_header(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.state.borrow_mut().msg.set_header(name, value)
    }

    /// Add a value to a header, keeping the existing ones.
    pub fn add_header(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.state.borrow_mut().msg.add_header(name, value)
    }

    /// Remove every value of a header. Returns true if there was one.
    pub fn remove_header(&self, name: &str) -> bool {
        self.state.borrow_mut().msg.remove_header(name)
    }

    /// The buffered request body; none unless the filter's `request-body` is
    /// `buffered` (natively: unless the test gave one).
    pub fn body(&self) -> Option<Vec<u8>> {
        self.state.borrow().msg.body()
    }

    /// Replace the buffered request body (and its `content-length`). Fails unless the
    /// filter's `request-body` is `buffered` (natively: unless the test gave a body).
    pub fn set_body(&self, body: &[u8]) -> Result<(), String> {
        self.state.borrow_mut().msg.set_body(body)
    }
}

#[derive(Debug)]
struct ResponseState {
    status: u16,
    attempt: u32,
    error: Option<crate::ExchangeError>,
    msg: Message,
    trailers: Option<Fields>,
}

/// The response a hook works on (natively: a test double, see the [module
/// docs](crate::testing)): the upstream's, a filter's local one, or one the proxy made
/// when the exchange failed.
///
/// ```
/// use weft_sdk::{Response, ResponseHead};
/// let resp = Response::new(ResponseHead::new(200).with_header("server", "app")).with_body("hi");
/// resp.set_status(203).unwrap();
/// assert_eq!(resp.status(), 203);
/// assert_eq!(resp.body().as_deref(), Some(&b"hi"[..]));
/// ```
// Not `Clone`: the resource a filter gets in the proxy is not either.
#[derive(Debug)]
pub struct Response {
    state: Rc<RefCell<ResponseState>>,
}

impl Response {
    /// A response with this head (status, attempt, error, headers, trailers) and no
    /// body.
    pub fn new(head: ResponseHead) -> Self {
        let trailers = head
            .trailers_known()
            .then(|| Fields::from_iter(head.trailers()));
        let state = ResponseState {
            status: head.status,
            attempt: head.attempt,
            error: head.error,
            msg: Message::new(Fields::from_iter(head.headers())),
            trailers,
        };
        Self {
            state: Rc::new(RefCell::new(state)),
        }
    }

    /// This response with a body, buffered for the filter as when its interest asks
    /// for the response body.
    pub fn with_body(self, body: impl AsRef<[u8]>) -> Self {
        self.state.borrow_mut().msg.body = Some(body.as_ref().to_vec());
        self
    }

    /// Another handle on the same response, for what the test keeps.
    pub(crate) fn share(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }

    /// A filter's local response as the proxy shows it to response hooks: attempt 0.
    pub(crate) fn local(local: &LocalResponse) -> Self {
        let mut head = ResponseHead::new(local.status).with_attempt(0);
        for h in &local.headers {
            head = head.with_header(&h.name, &h.value);
        }
        Self::new(head).with_body(&local.body)
    }

    /// The status as it is now (native only, for tests).
    pub fn status(&self) -> u16 {
        self.state.borrow().status
    }

    /// The body as it is now, whether or not it was lent to the filter (native only,
    /// for tests).
    pub fn body_now(&self) -> Option<Vec<u8>> {
        self.state.borrow().msg.body.clone()
    }

    /// Every change the filter made, in order (native only, for tests).
    pub fn edits(&self) -> Vec<Edit> {
        self.state.borrow().msg.edits.clone()
    }

    /// Its `grpc-status`, from the trailers or else the head, whatever the filter named.
    pub(crate) fn grpc_status_now(&self) -> Option<u32> {
        let s = self.state.borrow();
        let from_trailers = s.trailers.as_ref().and_then(|t| t.first_str("grpc-status"));
        let status = from_trailers.or_else(|| s.msg.fields.first_str("grpc-status"))?;
        status.trim().parse().ok()
    }

    /// The exchange error this response stands for, if the proxy made it.
    pub(crate) fn error(&self) -> Option<crate::ExchangeError> {
        self.state.borrow().error
    }

    /// Lend this response to a filter with this interest, for this attempt.
    pub(crate) fn lend(&self, interest: &Interest, attempt: u32) {
        let mut s = self.state.borrow_mut();
        s.attempt = attempt;
        s.msg.lens = Lens {
            names: Some(interest.response_headers.clone()),
            body: interest.response_body == crate::BodyMode::Buffered,
        };
        if !interest.response_trailers {
            s.trailers = None;
        }
    }

    fn edit(&self, edit: Edit) {
        self.state.borrow_mut().msg.edits.push(edit);
    }

    /// Status, the headers named in the filter's interest, the trailers when known,
    /// and the exchange error, in one call.
    pub fn read_head(&self) -> raw::ResponseHead {
        let s = self.state.borrow();
        let names = s.msg.lens.names.as_deref();
        let mut head = ResponseHead::new(s.status).with_attempt(s.attempt);
        head.error = s.error;
        for (name, value) in s.msg.fields.named(names) {
            head = head.with_header(name, value);
        }
        let mut raw = head.clone().into_raw();
        if let Some(trailers) = &s.trailers {
            // Known trailers are a list, even an empty one: none says not known.
            let mut with = head;
            for (name, value) in trailers.named(names) {
                with = with.with_trailer(name, value);
            }
            raw = with.into_raw();
            raw.trailers.get_or_insert_with(Vec::new);
        }
        raw
    }

    /// Replace the status code with a final one, 200 to 599.
    pub fn set_status(&self, status: u16) -> Result<(), String> {
        if !(200..=599).contains(&status) {
            return Err(format!(
                "invalid status {status}: a final status is 200 to 599"
            ));
        }
        self.state.borrow_mut().status = status;
        self.edit(Edit::SetStatus(status));
        Ok(())
    }

    /// First value of a header, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.state.borrow().msg.fields.first_str(name)
    }

    /// Every header, in order.
    pub fn headers(&self) -> Vec<Header> {
        self.state.borrow().msg.fields.list()
    }

    /// Replace every value of a header with this one.
    pub fn set_header(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.state.borrow_mut().msg.set_header(name, value)
    }

    /// Add a value to a header, keeping the existing ones.
    pub fn add_header(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.state.borrow_mut().msg.add_header(name, value)
    }

    /// Remove every value of a header. Returns true if there was one.
    pub fn remove_header(&self, name: &str) -> bool {
        self.state.borrow_mut().msg.remove_header(name)
    }

    /// The buffered response body; none unless the filter's `response-body` is
    /// `buffered` (natively: unless the test gave one).
    pub fn body(&self) -> Option<Vec<u8>> {
        self.state.borrow().msg.body()
    }

    /// Replace the buffered response body (and its `content-length`).
    pub fn set_body(&self, body: &[u8]) -> Result<(), String> {
        self.state.borrow_mut().msg.set_body(body)
    }
}
