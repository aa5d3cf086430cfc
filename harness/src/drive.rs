//! One request through the filter, phase by phase, as the proxy's request path runs
//! a chain of this one filter (`proxy/src/service.rs`, `hooks.rs`, `done.rs`):
//!
//! 1. **request body**: buffered when the filter asked to see it, kept (up to
//!    `keep-request-body`) when its response hook may retry, else streamed past it;
//! 2. **request phase**: `on-request` continues, routes (only to a declared cluster,
//!    when it declared any), delays (at most 60 s, and not past the request's
//!    timeout: 504) or answers; a local answer skips the filter's own `on-response`,
//!    and a failure fails the request (503) unless the policy is fail-open;
//! 3. **attempts**: each attempt's response (or the proxy's answer to a failed
//!    attempt) goes through `on-response`, which may replace it or ask for a retry
//!    that the proxy makes only with a replayable body, under 10 attempts and within
//!    the request's timeout;
//! 4. **done**: `on-done` with the summary of what the client got.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use weft_engine::{
    Action as Decided, BodyMode, ConnectionInfo, Exchange, ExchangeError, FilterFailure,
    LocalResponse, Outcome, RequestContext, RequestHead, Responder as Answered, ResponseAction,
    ResponseHead, Summary,
};

use crate::run::{
    Action, Failure, Hook, Local, LogLine, RequestView, Responder, ResponseView, Run, Settings,
    Step,
};
use crate::{Harness, HarnessError, RequestSpec, ResponseSpec, logs};

/// The longest delay a filter may ask for; longer asks are cut to it.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// The most attempts one request makes.
const MAX_ATTEMPTS: u32 = 10;

/// Run one request; see the module docs.
pub(crate) fn drive(h: &Harness, id: u64, spec: RequestSpec) -> Result<Run, HarnessError> {
    let parts = spec.head()?;
    let fallback = [ResponseSpec::default()];
    let given = match spec.responses.is_empty() {
        true => &fallback[..],
        false => &spec.responses[..],
    };
    let answers = (given.iter())
        .map(|r| r.head().map(|(parts, trailers)| (parts, trailers, r)))
        .collect::<Result<Vec<_>, _>>()?;
    let conn = Arc::new(ConnectionInfo {
        peer: spec.peer,
        local: SocketAddr::from(([127, 0, 0, 1], 8080)),
        tls: spec.tls.clone(),
    });
    let mut ctx = RequestContext::new(id, conn);
    for (key, value) in &spec.properties {
        ctx.set_property(key, value)
            .map_err(|e| HarnessError::Spec {
                what: format!("property {key:?}"),
                message: format!("{e:?}"),
            })?;
    }
    let ex = Box::new(Exchange {
        request: RequestHead { parts, body: None },
        response: None,
        ctx,
    });
    let body = Bytes::from(spec.body);
    let mut d = Drive {
        h,
        ex: Some(ex),
        steps: Vec::new(),
        failure: None,
        action: Action::Continue,
        waited: Duration::ZERO,
        started: Instant::now(),
        attempts: 0,
        cluster: None,
        head_only: spec.method.eq_ignore_ascii_case("HEAD"),
    };
    let (answer, logs) = logs::capture(|| {
        let answer = d.request_path(&body, &answers);
        d.done(&answer);
        answer
    });
    Ok(d.into_run(answer, &body, logs))
}

/// An upstream answer as the spec gives it: head, trailers, and the spec.
type Upstream<'s> = (http::response::Parts, Option<HeaderMap>, &'s ResponseSpec);

/// The request's body as the attempts can use it.
struct Body {
    /// It can be sent again: in memory, or empty.
    replayable: bool,
    /// When it had arrived (after the harness's waits); none while it streams.
    arrived: Option<Duration>,
}

/// What the client gets.
struct Answer {
    parts: http::response::Parts,
    body: Bytes,
    trailers: Option<HeaderMap>,
    responder: Responder,
}

/// One request on its way through the filter.
struct Drive<'h> {
    h: &'h Harness,
    /// The exchange, lent to each hook and given back after it.
    ex: Option<Box<Exchange>>,
    steps: Vec<Step>,
    failure: Option<Failure>,
    action: Action,
    /// Time the proxy would have waited (delays), counted but not spent.
    waited: Duration,
    started: Instant,
    attempts: u32,
    cluster: Option<String>,
    head_only: bool,
}

impl Drive<'_> {
    const BACK: &'static str = "the exchange comes back from every hook";

    fn ex(&mut self) -> &mut Exchange {
        self.ex.as_deref_mut().expect(Self::BACK)
    }

    fn step(&mut self, hook: Hook, decision: String) {
        let attempt = self.attempts;
        self.steps.push(Step {
            hook,
            attempt,
            decision,
        });
    }

    fn failed(&mut self, hook: Hook, f: &FilterFailure, failed_open: bool) {
        let what = if failed_open { "failed open" } else { "failed" };
        self.step(hook, format!("{what}: {}", f.reason));
        self.failure.get_or_insert(Failure {
            hook,
            reason: f.reason.clone(),
            failed_open,
        });
    }

    /// The request's timeout: the filter's, else the listener's.
    fn timeout(&mut self) -> Duration {
        let listener = self.h.options.request_timeout;
        self.ex().ctx.timeout.unwrap_or(listener)
    }

    fn request_path(&mut self, body: &Bytes, answers: &[Upstream<'_>]) -> Answer {
        let body = self.request_body(body);
        let route = match self.request_phase() {
            Ok(route) => route,
            Err(answer) => return *answer,
        };
        // The last route a filter chose, or the listener's default.
        let Some(cluster) = route.or_else(|| self.h.options.default_cluster.clone()) else {
            let detail = "no filter routed the request and the listener has no default_cluster";
            self.step(Hook::Request, detail.to_owned());
            return proxy_error(StatusCode::NOT_FOUND, "internal", "no route", None);
        };
        self.attempt_loop(cluster, &body, answers)
    }

    /// Buffer, keep or stream the request body, as the filter's interest says.
    fn request_body(&mut self, body: &Bytes) -> Body {
        let interest = self.h.interest();
        let buffered = interest.request && interest.request_body == BodyMode::Buffered;
        // Only a response hook can retry, so only then is a body worth keeping.
        let keep = if interest.response {
            interest.keep_request_body
        } else {
            0
        };
        let kept = !body.is_empty() && (buffered || (body.len() as u64) <= keep);
        if kept {
            self.ex().request.body = Some(body.clone());
        }
        let replayable = kept || body.is_empty();
        Body {
            replayable,
            arrived: replayable.then_some(Duration::ZERO),
        }
    }

    /// `on-request`, if the filter asked for it: the cluster it routed to, or the
    /// client's answer when the request ends here.
    fn request_phase(&mut self) -> Result<Option<String>, Box<Answer>> {
        if !self.h.interest().request {
            return Ok(None);
        }
        let (ex, outcome) = self.h.filter.on_request(self.ex.take().expect(Self::BACK));
        self.ex = Some(ex);
        let decided = match outcome {
            Outcome::Done(decided) => decided,
            Outcome::Skipped(f) => {
                self.failed(Hook::Request, &f, true);
                return Ok(None);
            }
            Outcome::Failed(f) => {
                self.failed(Hook::Request, &f, false);
                return Err(Box::new(filter_failed()));
            }
        };
        match decided {
            Decided::Continue => {
                self.step(Hook::Request, "continue".to_owned());
                Ok(None)
            }
            Decided::Route(name) => self.routed(name).map(Some),
            Decided::Delay(ns) => self.delayed(Duration::from_nanos(ns)).map(|()| None),
            Decided::Respond(local) => {
                self.action = Action::Respond(local_view(&local));
                self.step(Hook::Request, format!("respond {}", local.status));
                Err(Box::new(self.local_answer(Hook::Request, local)))
            }
        }
    }

    fn routed(&mut self, name: String) -> Result<String, Box<Answer>> {
        self.action = Action::Route(name.clone());
        // The harness stands in a mesh with every cluster; the filter's own
        // declarations still bind it, as in the proxy.
        if self.h.filter.may_route(&name) {
            self.step(Hook::Request, format!("route {name}"));
            return Ok(name);
        }
        self.step(
            Hook::Request,
            format!("route {name}: refused (502), a cluster it did not declare"),
        );
        Err(Box::new(proxy_error(
            StatusCode::BAD_GATEWAY,
            "filter",
            "no such upstream",
            None,
        )))
    }

    /// A delay, counted against the request's timeout rather than waited out.
    fn delayed(&mut self, asked: Duration) -> Result<(), Box<Answer>> {
        self.action = Action::Delay(asked);
        let delay = asked.min(MAX_DELAY);
        let timeout = self.timeout();
        if self.waited + delay < timeout {
            self.waited += delay;
            self.step(Hook::Request, format!("delay {delay:?}"));
            return Ok(());
        }
        self.waited = timeout;
        let why = format!("delay {delay:?}: past the request's timeout of {timeout:?} (504)");
        self.step(Hook::Request, why);
        Err(Box::new(proxy_error(
            StatusCode::GATEWAY_TIMEOUT,
            "filter",
            "request timed out",
            Some(ExchangeError::Timeout),
        )))
    }

    /// A filter's answer, or the proxy's 500 when it is not HTTP.
    fn local_answer(&mut self, hook: Hook, local: LocalResponse) -> Answer {
        match local_response(local) {
            Ok((parts, body)) => Answer {
                parts,
                body,
                trailers: None,
                responder: Responder::Filter,
            },
            Err(what) => {
                self.step(hook, format!("invalid local response (500): {what}"));
                proxy_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "filter",
                    "filter sent an invalid response",
                    None,
                )
            }
        }
    }

    /// The upstream attempts, each answer through `on-response`, which may ask for
    /// another.
    fn attempt_loop(&mut self, cluster: String, body: &Body, answers: &[Upstream<'_>]) -> Answer {
        let timeout = self.timeout();
        let deadline = body.arrived.map(|at| at + timeout);
        self.cluster = Some(cluster.clone());
        loop {
            self.attempts += 1;
            let n = self.attempts;
            let ctx = &mut self.ex().ctx;
            ctx.attempt = n;
            ctx.cluster = Some(Arc::from(cluster.as_str()));
            // Answers past the last given repeat it; `drive` gives at least one.
            let Some((parts, trailers, spec)) = answers.get(n as usize - 1).or(answers.last())
            else {
                return proxy_error(StatusCode::BAD_GATEWAY, "internal", "no answer", None);
            };
            let delay = match self.attempt(parts.clone(), trailers.clone(), spec) {
                Ok(answer) => return answer,
                Err(delay) => delay,
            };
            let refused = if !body.replayable {
                Some("the request body was not kept")
            } else if n >= MAX_ATTEMPTS {
                Some("the request had 10 attempts")
            } else if deadline.is_none_or(|d| self.waited + delay >= d) {
                Some("the request's timeout leaves no time for the delay")
            } else {
                None
            };
            if let Some(why) = refused {
                self.step(Hook::Response, format!("retry refused: {why}"));
                let head = self.ex().response.take();
                return self.upstream_answer(head, spec, trailers.clone());
            }
            self.step(Hook::Response, format!("retry in {delay:?}"));
            // This response is dropped; the next attempt goes after the delay.
            self.ex().response = None;
            self.waited += delay;
        }
    }

    /// One attempt's answer through `on-response`: the client's answer, or the delay
    /// of the retry the filter asked for (its response left in the exchange).
    fn attempt(
        &mut self,
        parts: http::response::Parts,
        trailers: Option<HeaderMap>,
        spec: &ResponseSpec,
    ) -> Result<Answer, Duration> {
        let interest = self.h.interest();
        let failed = spec.error;
        self.ex().ctx.first_byte_time = failed.is_none().then_some(Duration::ZERO);
        let mut head = ResponseHead {
            parts,
            // The proxy's answer to a failed attempt is whole; an upstream's streams,
            // unless the filter asked to see it.
            body: (failed.is_some() || interest.response_body == BodyMode::Buffered)
                .then(|| Bytes::from(spec.body.clone())),
            trailers: None,
            error: failed,
        };
        if !interest.response {
            return Ok(self.upstream_answer(Some(head), spec, trailers));
        }
        if interest.response_trailers && failed.is_none() {
            head.trailers.clone_from(&trailers);
        }
        self.ex().response = Some(head);
        let (ex, outcome) = (self.h.filter).on_response(self.ex.take().expect(Self::BACK));
        self.ex = Some(ex);
        let decided = match outcome {
            Outcome::Done(decided) => decided,
            Outcome::Skipped(f) => {
                self.failed(Hook::Response, &f, true);
                ResponseAction::Continue
            }
            Outcome::Failed(f) => {
                self.failed(Hook::Response, &f, false);
                return Ok(filter_failed());
            }
        };
        match decided {
            ResponseAction::Continue => {
                if self
                    .failure
                    .as_ref()
                    .is_none_or(|f| f.hook != Hook::Response)
                {
                    self.step(Hook::Response, "continue".to_owned());
                }
                let head = self.ex().response.take();
                Ok(self.upstream_answer(head, spec, trailers))
            }
            ResponseAction::Respond(local) => {
                self.step(Hook::Response, format!("respond {}", local.status));
                self.ex().response = None;
                Ok(self.local_answer(Hook::Response, local))
            }
            ResponseAction::Retry(ns) => Err(Duration::from_nanos(ns).min(MAX_DELAY)),
        }
    }

    /// The client's answer from an attempt's response head as the hook left it, with
    /// the body the upstream streams when no hook holds one, and its trailers.
    fn upstream_answer(
        &mut self,
        head: Option<ResponseHead>,
        spec: &ResponseSpec,
        trailers: Option<HeaderMap>,
    ) -> Answer {
        let Some(head) = head else {
            // Every path sets a response before it finishes.
            return proxy_error(StatusCode::BAD_GATEWAY, "internal", "no response", None);
        };
        let upstream = spec.error.is_none();
        Answer {
            parts: head.parts,
            body: (head.body).unwrap_or_else(|| Bytes::from(spec.body.clone())),
            trailers: trailers.filter(|_| upstream),
            responder: match spec.error {
                Some(kind) => Responder::Proxy(Some(kind)),
                None => Responder::Upstream,
            },
        }
    }

    /// `on-done`, once the client has its answer.
    fn done(&mut self, answer: &Answer) {
        if !self.h.interest().done {
            return;
        }
        let grpc = |map: &HeaderMap| {
            map.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
        };
        let status = grpc(&answer.parts.headers).or(answer.trailers.as_ref().and_then(grpc));
        self.ex().ctx.grpc_status = status;
        let name = self.h.name().to_owned();
        let summary = Summary {
            status: answer.parts.status.as_u16(),
            responder: match &answer.responder {
                Responder::Upstream => Answered::Upstream,
                Responder::Filter => Answered::Filter(name),
                Responder::Proxy(kind) => Answered::Proxy(*kind),
            },
            response_bytes: if self.head_only {
                0
            } else {
                answer.body.len() as u64
            },
            duration: nanos(self.waited + self.started.elapsed()),
            complete: true,
        };
        let ex = self.ex.take().expect(Self::BACK);
        let (ex, outcome) = self.h.filter.on_done_outcome(ex, &summary);
        self.ex = Some(ex);
        match outcome {
            Outcome::Done(()) => self.step(Hook::Done, "done".to_owned()),
            Outcome::Skipped(f) => self.failed(Hook::Done, &f, true),
            Outcome::Failed(f) => self.failed(Hook::Done, &f, false),
        }
    }

    fn into_run(mut self, answer: Answer, body: &Bytes, logs: Vec<LogLine>) -> Run {
        let head_only = self.head_only;
        let ex = self.ex.take().expect(Self::BACK);
        let parts = &ex.request.parts;
        let authority = (parts.uri.authority().map(|a| a.as_str().to_owned()))
            .or_else(|| text(parts.headers.get(http::header::HOST)));
        let request = RequestView {
            method: parts.method.to_string(),
            path: (parts.uri.path_and_query()).map_or("/".to_owned(), |p| p.to_string()),
            authority,
            headers: pairs(&parts.headers),
            body: ex.request.body.as_ref().unwrap_or(body).to_vec(),
        };
        let response = ResponseView {
            status: answer.parts.status.as_u16(),
            headers: pairs(&answer.parts.headers),
            // A HEAD answer has no body, whoever made it.
            body: if head_only {
                Vec::new()
            } else {
                answer.body.to_vec()
            },
            responder: answer.responder,
        };
        let ctx = &ex.ctx;
        Run {
            action: self.action,
            steps: self.steps,
            failure: self.failure,
            request,
            response,
            attempts: self.attempts,
            cluster: self.cluster,
            properties: (ctx.properties())
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect(),
            settings: Settings {
                timeout: ctx.timeout,
                per_try_timeout: ctx.per_try_timeout,
                route: ctx.route.clone(),
                upstream_identity: ctx.upstream_identity_required.as_deref().map(str::to_owned),
                trace_set: ctx.trace_set,
            },
            logs,
        }
    }
}

/// The proxy's answer when a filter failed closed.
fn filter_failed() -> Answer {
    proxy_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "filter",
        "filter failed",
        None,
    )
}

/// An answer the proxy makes itself: its status, whose fault (`x-weft-error`), and
/// the short reason as its body.
fn proxy_error(
    status: StatusCode,
    side: &'static str,
    reason: &str,
    kind: Option<ExchangeError>,
) -> Answer {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    parts
        .headers
        .insert("x-weft-error", HeaderValue::from_static(side));
    Answer {
        parts,
        body: Bytes::from(format!("{reason}\n")),
        trailers: None,
        responder: Responder::Proxy(kind),
    }
}

/// A filter's local response as the proxy checks it: a final status, valid headers,
/// without those the proxy owns.
fn local_response(local: LocalResponse) -> Result<(http::response::Parts, Bytes), String> {
    let status = StatusCode::from_u16(local.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| format!("status {} (a final status is 200 to 599)", local.status))?;
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    for h in local.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("header name {:?}", h.name))?;
        let value = HeaderValue::from_bytes(&h.value)
            .map_err(|_| format!("value of header {:?}", h.name))?;
        parts.headers.append(name, value);
    }
    for owned in [
        "connection",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "content-length",
    ] {
        parts.headers.remove(owned);
    }
    Ok((parts, Bytes::from(local.body)))
}

fn local_view(local: &LocalResponse) -> Local {
    Local {
        status: local.status,
        headers: (local.headers.iter())
            .map(|h| {
                (
                    h.name.clone(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect(),
        body: local.body.clone(),
    }
}

fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    (headers.iter())
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), value)
        })
        .collect()
}

fn text(value: Option<&HeaderValue>) -> Option<String> {
    value.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
