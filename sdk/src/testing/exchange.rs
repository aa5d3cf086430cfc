//! Drive one filter over one request the way the proxy's filter chain does
//! (`proxy/src/hooks.rs`, `proxy/src/service.rs`, `proxy/src/done.rs`), as if it were
//! the only filter of its listener.

use std::time::Duration;

use crate::double::{Phase, wire_value};
use crate::header_rules::is_token;
use crate::{
    Action, BodyMode, ClusterRef, Context, Filter, Interest, LocalResponse, Request, Responder,
    Response, ResponseAction, ResponseHead, Summary,
};

/// The proxy's bound on the attempts of one request.
const MAX_ATTEMPTS: u32 = 10;
/// The longest delay (`Action::delay`, `ResponseAction::retry`) the proxy honours.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// A filter loaded as the proxy loads it, ready to run requests through.
///
/// ```
/// # use weft_sdk::prelude::*;
/// # use weft_sdk::{RequestHead, Responder, ResponseHead, testing::Exchange};
/// # #[derive(Deserialize)] #[serde(crate = "weft_sdk::serde")] struct Deny { path: String }
/// # impl Filter for Deny { fn on_request(&mut self, r: &Request, _: &Context) -> Action {
/// #     if r.head().path() == self.path { Action::respond(403, "") } else { Action::Continue } } }
/// let mut deny = Exchange::<Deny>::init(r#"{"path":"/admin"}"#)?;
/// let out = deny.run(Request::new(RequestHead::new("GET", "/admin")), Response::new(ResponseHead::new(200)));
/// assert_eq!(out.status(), 403);
/// assert_eq!(out.responder(), &Responder::Filter("filter".into()));
/// # Ok::<(), String>(())
/// ```
pub struct Exchange<F: Filter> {
    filter: F,
    interest: Interest,
    clusters: Vec<ClusterRef>,
    name: String,
}

/// What happened to one request, for a test to look at.
#[derive(Debug)]
pub struct Outcome {
    /// The request as the filter left it (see [`Request::edits`]).
    pub request: Request,
    /// The request's context: route, properties, settings.
    pub context: Context,
    /// What `on_request` returned; none when the interest has no request hook.
    pub action: Option<Action>,
    /// What each `on_response` call returned, one per attempt it saw; empty when it
    /// was not called.
    pub response_actions: Vec<ResponseAction>,
    /// The response the client got.
    pub response: Response,
    /// What `on_done` was given (also when the interest has no `on_done`).
    pub summary: Summary,
    /// How many attempts went upstream: 0 when the request never did.
    pub attempts: u32,
}

impl Outcome {
    /// The status the client got.
    pub fn status(&self) -> u16 {
        self.summary.status
    }

    /// Who made the response the client got.
    pub fn responder(&self) -> &Responder {
        &self.summary.responder
    }

    /// The cluster the filter routed the request to, if it did.
    pub fn routed_to(&self) -> Option<&str> {
        match &self.action {
            Some(Action::Route(cluster)) => Some(cluster),
            _ => None,
        }
    }
}

impl<F: Filter> Exchange<F> {
    /// Load the filter from its configuration as JSON (`null` for none), as the
    /// proxy's `init` does: deserialize, [`Filter::init`], then ask its interest and
    /// its clusters. The error is what the proxy would refuse the configuration with.
    pub fn init(config_json: &str) -> Result<Self, String> {
        let filter: F = crate::from_config(config_json)?;
        let interest = filter.interest();
        let clusters = filter.clusters();
        for c in &clusters {
            crate::native::declare_cluster(&c.name, &c.key);
        }
        Ok(Self {
            filter,
            interest,
            clusters,
            name: "filter".to_owned(),
        })
    }

    /// Give the filter the name a listener's chain gives it (`filter` by default), as
    /// a local response's [`Responder::Filter`] names it.
    pub fn named(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// The filter's interest, asked once after `init`.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// The clusters the filter declared.
    pub fn clusters(&self) -> &[ClusterRef] {
        &self.clusters
    }

    /// The filter value, as `init` left it and the hooks changed it.
    pub fn filter(&mut self) -> &mut F {
        &mut self.filter
    }

    /// Run `request` through the filter in a fresh [`Context`], the upstream
    /// answering `upstream` (see [`Exchange::run_in`]).
    pub fn run(&mut self, request: Request, upstream: Response) -> Outcome {
        let context = Context::for_request(&request);
        self.run_in(request, context, [upstream])
    }

    /// Run `request` through the filter in `context`, as the proxy would:
    ///
    /// - `on_request`, when the interest asks for it. A local response ends the
    ///   request phase: the filter's own `on_response` is not called for it (in the
    ///   proxy, only the filters before it see it). A route to a cluster the filter did
    ///   not declare, when it declared any, is answered 502 by the proxy, without
    ///   response hooks. A delay moves the [test clock](super::clock) when a test set it.
    /// - Otherwise the upstream answers each attempt with the next of `upstream` (the
    ///   last one again once they run out; `200` with no body when none is given), and
    ///   `on_response` sees it when the interest asks. A retry is made when the proxy
    ///   would make it: the request has no body or the interest keeps it, fewer than 10
    ///   attempts were made, and the request's timeout, if set, leaves time for the
    ///   delay; else the response goes on as if the hook continued.
    /// - `on_done` with the summary, when the interest asks for it.
    pub fn run_in(
        &mut self,
        request: Request,
        context: Context,
        upstream: impl IntoIterator<Item = Response>,
    ) -> Outcome {
        request.lend(&self.interest);
        context.set_phase(Phase::Request);
        let action = (self.interest.request).then(|| self.filter.on_request(&request, &context));
        let mut out = Outcome {
            summary: summary(200, Responder::Upstream),
            request,
            context,
            action,
            response_actions: Vec::new(),
            response: Response::new(ResponseHead::new(200)),
            attempts: 0,
        };
        let responder = match out.action.clone() {
            Some(Action::Respond(local)) => self.answered(&mut out, &local),
            Some(Action::Route(cluster)) if !self.may_route(&cluster) => {
                out.response = proxy_answer(502, "no such upstream\n");
                Responder::Proxy(None)
            }
            Some(Action::Delay(ns)) => {
                wait(Duration::from_nanos(ns));
                self.upstream(&mut out, None, upstream.into_iter().collect())
            }
            Some(Action::Route(cluster)) => {
                self.upstream(&mut out, Some(cluster), upstream.into_iter().collect())
            }
            Some(Action::Continue) | None => {
                self.upstream(&mut out, None, upstream.into_iter().collect())
            }
        };
        self.done(&mut out, responder);
        out
    }

    fn may_route(&self, cluster: &str) -> bool {
        self.clusters.is_empty() || self.clusters.iter().any(|c| c.name == cluster)
    }

    /// The filter answered from its request hook.
    fn answered(&self, out: &mut Outcome, local: &LocalResponse) -> Responder {
        // As the proxy checks a local response: a final status, valid header fields.
        let valid = (200..=599).contains(&local.status)
            && (local.headers.iter()).all(|h| is_token(&h.name) && wire_value(&h.value));
        if !valid {
            out.response = proxy_answer(500, "filter sent an invalid response\n");
            return Responder::Proxy(None);
        }
        out.response = Response::local(local);
        Responder::Filter(self.name.clone())
    }

    /// The attempts upstream, each answered by the next response, with the response
    /// hook when the interest asks.
    fn upstream(
        &mut self,
        out: &mut Outcome,
        cluster: Option<String>,
        mut answers: Vec<Response>,
    ) -> Responder {
        answers.reverse();
        let mut last = None;
        loop {
            out.attempts += 1;
            let n = out.attempts;
            let cluster = cluster.clone();
            out.context.update_facts(|f| {
                f.attempt = n;
                f.cluster = cluster;
            });
            let resp = answers
                .pop()
                .or_else(|| last.as_ref().map(Response::share))
                .unwrap_or_else(|| Response::new(ResponseHead::new(200)));
            last = Some(resp.share());
            out.context.set_grpc_status(grpc_status(&resp));
            out.response = resp.share();
            if !self.interest.response {
                return upstream_responder(&resp);
            }
            resp.lend(&self.interest, n);
            out.context.set_phase(Phase::Response);
            let action = self.filter.on_response(&resp, &out.context);
            out.response_actions.push(action.clone());
            match action {
                ResponseAction::Continue => return upstream_responder(&resp),
                ResponseAction::Respond(local) => return self.answered(out, &local),
                ResponseAction::Retry(ns) => {
                    let delay = Duration::from_nanos(ns).min(MAX_DELAY);
                    if !self.may_retry(out, delay) {
                        return upstream_responder(&resp);
                    }
                    wait(delay);
                }
            }
        }
    }

    fn may_retry(&self, out: &Outcome, delay: Duration) -> bool {
        let body = out.request.body_len();
        let kept = body == 0
            || self.interest.request_body == BodyMode::Buffered
            || u64::try_from(body).is_ok_and(|b| b <= self.interest.keep_request_body);
        let elapsed = Duration::from_nanos(out.context.facts().elapsed);
        let in_time = (out.context.timeout()).is_none_or(|t| elapsed + delay < t);
        kept && out.attempts < MAX_ATTEMPTS && in_time
    }

    /// The end: `on_done` with how the request ended.
    fn done(&mut self, out: &mut Outcome, responder: Responder) {
        let body = out.response.body_now().map_or(0, |b| b.len());
        out.context.set_grpc_status(grpc_status(&out.response));
        out.summary = Summary {
            status: out.response.status(),
            responder,
            response_bytes: body as u64,
            duration: out.context.facts().elapsed,
            complete: true,
        };
        if self.interest.done {
            out.context.set_phase(Phase::Done);
            self.filter.on_done(&out.context, &out.summary);
        }
    }
}

fn summary(status: u16, responder: Responder) -> Summary {
    Summary {
        status,
        responder,
        response_bytes: 0,
        duration: 0,
        complete: true,
    }
}

/// A response the proxy makes itself.
fn proxy_answer(status: u16, body: &str) -> Response {
    let head = ResponseHead::new(status).with_attempt(0);
    Response::new(head.with_header("content-type", "text/plain; charset=utf-8")).with_body(body)
}

/// The upstream made the response, unless the proxy made it for a failed exchange.
fn upstream_responder(resp: &Response) -> Responder {
    match resp.error() {
        Some(e) => Responder::Proxy(Some(e)),
        None => Responder::Upstream,
    }
}

/// The `grpc-status` of a response, from its trailers or its head.
fn grpc_status(resp: &Response) -> Option<u32> {
    resp.grpc_status_now()
}

/// What the proxy's waiting looks like in a test: time passes on a clock the test set.
fn wait(delay: Duration) {
    if super::clock::is_set() {
        super::clock::advance(delay.min(MAX_DELAY));
    }
}
