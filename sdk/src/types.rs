//! Builders and shorthands on the WIT types a hook returns.

use std::time::Duration;

use crate::{Action, BodyMode, Header, Interest, LocalResponse, ResponseAction};

impl Action {
    /// Answer the client with this status and a `text/plain` body.
    pub fn respond(status: u16, body: impl AsRef<[u8]>) -> Self {
        Action::Respond(LocalResponse::new(status).text(body))
    }

    /// Send the request to this upstream cluster, then go on with the next filter.
    pub fn route(cluster: impl Into<String>) -> Self {
        Action::Route(cluster.into())
    }

    /// Hold the request this long, then go on with the next filter.
    pub fn delay(duration: Duration) -> Self {
        // u64 nanoseconds reach 584 years; saturating is as good as exact.
        Action::Delay(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl From<LocalResponse> for Action {
    fn from(response: LocalResponse) -> Self {
        Action::Respond(response)
    }
}

impl ResponseAction {
    /// Replace the response with this status and a `text/plain` body.
    pub fn respond(status: u16, body: impl AsRef<[u8]>) -> Self {
        ResponseAction::Respond(LocalResponse::new(status).text(body))
    }
}

impl From<LocalResponse> for ResponseAction {
    fn from(response: LocalResponse) -> Self {
        ResponseAction::Respond(response)
    }
}

impl LocalResponse {
    /// A response with this status, no headers and an empty body.
    ///
    /// ```no_run
    /// # use weft_sdk::prelude::*;
    /// let r = LocalResponse::new(404).header("content-type", "text/plain").body("gone\n");
    /// let action = Action::Respond(r);
    /// ```
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Add a header (after those already added).
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: value.as_ref().to_vec(),
        });
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// Set a plain-text body and its `content-type`.
    pub fn text(self, body: impl AsRef<[u8]>) -> Self {
        self.header("content-type", "text/plain; charset=utf-8")
            .body(body)
    }
}

impl Interest {
    /// The request hook only, without bodies. This is what [`crate::Filter::interest`]
    /// returns unless a filter overrides it.
    pub const REQUEST: Interest = Interest {
        request: true,
        request_body: BodyMode::None,
        response: false,
        response_body: BodyMode::None,
    };

    /// The response hook only, without bodies; `on_request` is then never called.
    pub const RESPONSE: Interest = Interest {
        request: false,
        request_body: BodyMode::None,
        response: true,
        response_body: BodyMode::None,
    };

    /// Also call `on_response`.
    pub const fn with_response(mut self) -> Self {
        self.response = true;
        self
    }

    /// Call `on_request` with the request body buffered (readable and replaceable).
    pub const fn with_request_body(mut self) -> Self {
        self.request = true;
        self.request_body = BodyMode::Buffered;
        self
    }

    /// Call `on_response` with the response body buffered (readable and replaceable).
    pub const fn with_response_body(mut self) -> Self {
        self.response = true;
        self.response_body = BodyMode::Buffered;
        self
    }
}

impl Default for Interest {
    fn default() -> Self {
        Interest::REQUEST
    }
}
