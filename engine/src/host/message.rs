//! The `request` and `response` resources: a filter reads and changes the heads (and,
//! when it asked, the bodies) lent to it for one hook.

use http::Uri;
use http::header::HeaderValue;
use wasmtime::component::Resource;

use super::headers::{
    NO_RESPONSE, NOT_NOW, add_header, all_headers, get_header, remove_header, set_body, set_header,
};
use super::{HeadText, HostState};
use crate::bindings::types;
use crate::exchange::Phase;
use crate::resources::{RequestRef, ResponseRef};

impl types::Host for HostState {}

impl types::HostRequest for HostState {
    fn read_head(&mut self, _: Resource<RequestRef>) -> types::RequestHead {
        self.own_request_head()
    }

    fn set_path(&mut self, _: Resource<RequestRef>, path: String) -> Result<(), String> {
        let req = self.req_mut().ok_or(NOT_NOW)?;
        if !path.starts_with('/') {
            return Err(format!("path must start with '/': {path:?}"));
        }
        let mut uri = std::mem::take(&mut req.parts.uri).into_parts();
        let restore = uri.path_and_query.clone();
        match path.parse() {
            Ok(pq) => {
                uri.path_and_query = Some(pq);
                req.parts.uri = Uri::from_parts(uri).unwrap_or_default();
                Ok(())
            }
            Err(e) => {
                uri.path_and_query = restore;
                req.parts.uri = Uri::from_parts(uri).unwrap_or_default();
                Err(format!("invalid path {path:?}: {e}"))
            }
        }
    }

    fn set_authority(&mut self, _: Resource<RequestRef>, authority: String) -> Result<(), String> {
        let req = self.req_mut().ok_or(NOT_NOW)?;
        let parsed: http::uri::Authority = authority
            .parse()
            .map_err(|e| format!("invalid authority {authority:?}: {e}"))?;
        let value = HeaderValue::from_str(parsed.as_str()).map_err(|e| e.to_string())?;
        if req.parts.uri.authority().is_some() {
            let mut uri = std::mem::take(&mut req.parts.uri).into_parts();
            uri.authority = Some(parsed);
            req.parts.uri = Uri::from_parts(uri).map_err(|e| e.to_string())?;
        }
        req.parts.headers.insert(http::header::HOST, value);
        Ok(())
    }

    fn header(&mut self, _: Resource<RequestRef>, name: String) -> Option<String> {
        self.req().and_then(|r| get_header(&r.parts.headers, &name))
    }

    fn header_all(&mut self, _: Resource<RequestRef>, name: String) -> Vec<Vec<u8>> {
        self.req()
            .map(|r| {
                r.parts
                    .headers
                    .get_all(name.as_str())
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn headers(&mut self, _: Resource<RequestRef>) -> Vec<types::Header> {
        self.req()
            .map(|r| all_headers(&r.parts.headers))
            .unwrap_or_default()
    }

    fn set_header(
        &mut self,
        _: Resource<RequestRef>,
        name: String,
        value: String,
    ) -> Result<(), types::HeaderError> {
        self.note_trace(&name);
        match self.req_mut() {
            Some(r) => set_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn add_header(
        &mut self,
        _: Resource<RequestRef>,
        name: String,
        value: String,
    ) -> Result<(), types::HeaderError> {
        self.note_trace(&name);
        match self.req_mut() {
            Some(r) => add_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn remove_header(&mut self, _: Resource<RequestRef>, name: String) -> bool {
        self.req_mut()
            .is_some_and(|r| remove_header(&mut r.parts.headers, &name))
    }

    fn body(&mut self, _: Resource<RequestRef>) -> Option<Vec<u8>> {
        if !self.body_access || self.phase != Phase::Request {
            return None;
        }
        self.req().and_then(|r| r.body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<RequestRef>, body: Vec<u8>) -> Result<(), String> {
        let access = self.body_access;
        let req = self.req_mut().ok_or(NOT_NOW)?;
        set_body(&mut req.parts.headers, &mut req.body, access, body)
    }

    fn drop(&mut self, _: Resource<RequestRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostResponse for HostState {
    fn read_head(&mut self, _: Resource<ResponseRef>) -> types::ResponseHead {
        let names = self.shared.views.get().map(|v| &v.response);
        let attempt = self.exchange.as_deref().map_or(0, |e| e.ctx.attempt);
        let Some(resp) = self.exchange.as_deref().and_then(|e| e.response.as_ref()) else {
            return types::ResponseHead {
                status: 0,
                attempt,
                text: None,
                headers: None,
                trailers: None,
                error: None,
            };
        };
        let names = names.map_or(&[][..], |n| &n[..]);
        let mut text = HeadText::default();
        let headers = text.selected(&resp.parts.headers, names);
        // Known trailers are a list, even an empty one: "none" says they are not known.
        let trailers = resp
            .trailers
            .as_ref()
            .map(|t| text.selected(t, names).unwrap_or_default());
        types::ResponseHead {
            status: resp.parts.status.as_u16(),
            attempt,
            text: (!text.0.is_empty()).then_some(text.0),
            headers,
            trailers,
            error: resp.error,
        }
    }

    fn set_status(&mut self, _: Resource<ResponseRef>, status: u16) -> Result<(), String> {
        let resp = self.resp().ok_or(NO_RESPONSE)?;
        if !(200..=599).contains(&status) {
            return Err(format!(
                "invalid status {status}: a final status is 200 to 599"
            ));
        }
        resp.parts.status =
            http::StatusCode::from_u16(status).map_err(|_| format!("invalid status {status}"))?;
        Ok(())
    }

    fn header(&mut self, _: Resource<ResponseRef>, name: String) -> Option<String> {
        self.resp()
            .and_then(|r| get_header(&r.parts.headers, &name))
    }

    fn headers(&mut self, _: Resource<ResponseRef>) -> Vec<types::Header> {
        self.resp()
            .map(|r| all_headers(&r.parts.headers))
            .unwrap_or_default()
    }

    fn set_header(
        &mut self,
        _: Resource<ResponseRef>,
        name: String,
        value: String,
    ) -> Result<(), types::HeaderError> {
        match self.resp() {
            Some(r) => set_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn add_header(
        &mut self,
        _: Resource<ResponseRef>,
        name: String,
        value: String,
    ) -> Result<(), types::HeaderError> {
        match self.resp() {
            Some(r) => add_header(&mut r.parts.headers, &name, &value),
            None => Err(types::HeaderError::Forbidden),
        }
    }

    fn remove_header(&mut self, _: Resource<ResponseRef>, name: String) -> bool {
        self.resp()
            .is_some_and(|r| remove_header(&mut r.parts.headers, &name))
    }

    fn body(&mut self, _: Resource<ResponseRef>) -> Option<Vec<u8>> {
        if !self.body_access {
            return None;
        }
        self.resp()
            .and_then(|r| r.body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<ResponseRef>, body: Vec<u8>) -> Result<(), String> {
        let access = self.body_access;
        let resp = self.resp().ok_or(NO_RESPONSE)?;
        set_body(&mut resp.parts.headers, &mut resp.body, access, body)
    }

    fn drop(&mut self, _: Resource<ResponseRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}
