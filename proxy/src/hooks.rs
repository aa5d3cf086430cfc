//! Running a listener's filter chain over one request: the request phase (first
//! filter first) and the response phase (last first). Each phase hands the request's
//! exchange to one hook after another and returns a verdict for the request path to
//! act on; bodies and the upstream are not its business.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Response, StatusCode};
use weft_engine::{
    Action, Exchange, Filter, LocalResponse, Outcome, Responder, ResponseAction, ResponseHead,
};

use crate::chain::FilterChain;
use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::normalize::strip_hop_by_hop;

/// The longest delay a filter may ask for; longer asks are cut to it.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// The request's exchange, lent to each hook and given back after it.
pub(crate) struct Lent(Option<Box<Exchange>>);

impl Lent {
    const BACK: &str = "the exchange comes back from every hook";

    pub(crate) fn new(ex: Box<Exchange>) -> Self {
        Self(Some(ex))
    }

    /// The exchange, for the end phase; none only if a hook never gave it back.
    pub(crate) fn into_inner(self) -> Option<Box<Exchange>> {
        self.0
    }

    pub(crate) fn get(&self) -> &Exchange {
        self.0.as_deref().expect(Self::BACK)
    }

    pub(crate) fn get_mut(&mut self) -> &mut Exchange {
        self.0.as_deref_mut().expect(Self::BACK)
    }

    fn on_request(&mut self, filter: &Filter) -> Outcome<Action> {
        let (ex, outcome) = filter.on_request(self.0.take().expect(Self::BACK));
        self.0 = Some(ex);
        outcome
    }

    fn on_response(&mut self, filter: &Filter) -> Outcome<ResponseAction> {
        let (ex, outcome) = filter.on_response(self.0.take().expect(Self::BACK));
        self.0 = Some(ex);
        outcome
    }

    /// Note what a filter decided, when the request is logged.
    fn decided(&mut self, filter: &Filter, what: &str) {
        if let Some(d) = self.get_mut().ctx.decisions.as_mut() {
            d.push(format!("{}:{what}", filter.name()));
        }
    }
}

/// What the request phase decided.
pub(crate) enum Forward<'s> {
    /// On upstream: to the cluster the last routing filter chose, if any did.
    To(Option<&'s Arc<Cluster>>),
    /// A filter answered: the exchange holds its response, which the response hooks
    /// of the filters before it have seen.
    Answered(Responder),
}

/// Wait out a filter's delay, but not past the request's timeout (a filter's, else
/// the listener's), which counts from the request's arrival across every delay:
/// past it the request ends with 504.
async fn delay(lent: &Lent, delay: Duration, request_timeout: Duration) -> Result<(), ProxyError> {
    let ctx = &lent.get().ctx;
    let timeout = ctx.timeout.unwrap_or(request_timeout);
    let deadline = ctx.received + timeout;
    if std::time::Instant::now() + delay.min(MAX_DELAY) < deadline {
        tokio::time::sleep(delay.min(MAX_DELAY)).await;
        return Ok(());
    }
    tokio::time::sleep_until(deadline.into()).await;
    Err(ProxyError::delayed_past(timeout))
}

/// What the response phase decided.
pub(crate) enum Verdict {
    /// The response goes to the client as it is.
    Continue,
    /// A filter put its own response in place of the upstream's, whose body is
    /// dropped.
    Replaced(Responder),
    /// A filter asked for another attempt after this delay, and it may be made.
    Retry(Duration),
}

impl FilterChain {
    /// The request phase: each filter in order may change the request, route it,
    /// delay it, or answer it.
    pub(crate) async fn request_phase<'s>(
        &self,
        lent: &mut Lent,
        clusters: &'s HashMap<String, Arc<Cluster>>,
        request_timeout: Duration,
    ) -> Result<Forward<'s>, ProxyError> {
        let mut route = None;
        for &i in self.request_filters() {
            let filter = &self.filters()[i];
            match lent.on_request(filter) {
                Outcome::Done(Action::Continue) => {}
                Outcome::Skipped(_) => lent.decided(filter, "failed-open"),
                Outcome::Done(Action::Route(name)) => {
                    route = Some(routed_to(clusters, filter, &name)?);
                    lent.decided(filter, "route");
                }
                Outcome::Done(Action::Delay(ns)) => {
                    lent.decided(filter, "delay");
                    delay(lent, Duration::from_nanos(ns), request_timeout).await?;
                }
                Outcome::Done(Action::Respond(local)) => {
                    lent.decided(filter, "respond");
                    // Filters before this one see the local response like an upstream one.
                    lent.get_mut().response = Some(local_response(filter.name(), local)?);
                    let answered = Responder::Filter(filter.name().to_owned());
                    return Ok(match self.response_phase(lent, i, |_| false)? {
                        Verdict::Replaced(by) => Forward::Answered(by),
                        Verdict::Continue | Verdict::Retry(_) => Forward::Answered(answered),
                    });
                }
                Outcome::Failed(f) => {
                    lent.decided(filter, "failed");
                    return Err(ProxyError::filter_failed(&f));
                }
            }
        }
        Ok(Forward::To(route))
    }

    /// The response phase over the filters before position `upto`, last first. A
    /// retry `may_retry` does not allow goes on as if the hook continued.
    pub(crate) fn response_phase(
        &self,
        lent: &mut Lent,
        upto: usize,
        may_retry: impl Fn(Duration) -> bool,
    ) -> Result<Verdict, ProxyError> {
        let mut verdict = Verdict::Continue;
        for filter in self.filters()[..upto]
            .iter()
            .rev()
            .filter(|f| f.interest().response)
        {
            match lent.on_response(filter) {
                Outcome::Done(ResponseAction::Continue) => {}
                Outcome::Skipped(_) => lent.decided(filter, "failed-open"),
                Outcome::Done(ResponseAction::Respond(local)) => {
                    lent.decided(filter, "respond");
                    lent.get_mut().response = Some(local_response(filter.name(), local)?);
                    verdict = Verdict::Replaced(Responder::Filter(filter.name().to_owned()));
                }
                Outcome::Done(ResponseAction::Retry(ns)) => {
                    let delay = Duration::from_nanos(ns).min(MAX_DELAY);
                    if may_retry(delay) {
                        lent.decided(filter, "retry");
                        return Ok(Verdict::Retry(delay));
                    }
                    lent.decided(filter, "retry-refused");
                    tracing::debug!(
                        request = lent.get().ctx.id,
                        filter = filter.name(),
                        "retry not possible (body not kept, attempts or time used up)"
                    );
                }
                Outcome::Failed(f) => {
                    lent.decided(filter, "failed");
                    return Err(ProxyError::filter_failed(&f));
                }
            }
        }
        Ok(verdict)
    }
}

/// The cluster a filter routed to: one the configuration has and, when the filter
/// declared its clusters, one of those.
fn routed_to<'s>(
    clusters: &'s HashMap<String, Arc<Cluster>>,
    filter: &Filter,
    name: &str,
) -> Result<&'s Arc<Cluster>, ProxyError> {
    let why = match clusters.get(name) {
        Some(c) if filter.may_route(name) => return Ok(c),
        Some(_) => "which it did not declare",
        None => "which does not exist",
    };
    Err(ProxyError::no_such_upstream(filter.name(), name, why))
}

/// A filter's local response as a response head, checked.
fn local_response(filter: &str, local: LocalResponse) -> Result<ResponseHead, ProxyError> {
    let bad = |what: &str| ProxyError::invalid_local_response(filter, what);
    // Only a final status: an interim one (1xx) would leave the client waiting for
    // the answer, or break its HTTP/2 stream; none past 599 means anything.
    let status = StatusCode::from_u16(local.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            bad(&format!(
                "status {} (a final status is 200 to 599)",
                local.status
            ))
        })?;
    let mut builder = Response::builder().status(status);
    for h in local.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| bad(&format!("header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(&h.value)
            .map_err(|_| bad(&format!("value of header {:?}", h.name)))?;
        builder = builder.header(name, value);
    }
    let (mut parts, ()) = builder
        .body(())
        .map_err(|e| bad(&e.to_string()))?
        .into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(ResponseHead {
        parts,
        body: Some(local.body.into()),
        trailers: None,
        error: None,
    })
}
