//! The [`Filter`] trait and the glue that runs one filter value per instance.

use std::cell::RefCell;
use std::thread::LocalKey;

use serde::de::DeserializeOwned;

use crate::{
    Action, Context, Interest, LocalResponse, Request, Response, ResponseAction, Summary, config,
};

/// A Weft filter. The type is its own configuration: the filter's `config` from the
/// proxy's YAML is deserialized into it (a missing `config` counts as `{}` when that
/// deserializes), then [`Filter::init`] runs once per instance. A key the type does
/// not know is an error naming it, unless [`Filter::STRICT_CONFIG`] says otherwise.
///
/// Only [`Filter::on_request`] is required. By default the proxy calls it for every
/// request, without the body, and never calls [`Filter::on_response`]: override
/// [`Filter::interest`] to change that.
///
/// # The order of hooks
///
/// For one request, in a listener's chain of filters:
///
/// 1. `on_request` of each filter, first to last. `Continue`, `Route` and `Delay` go on
///    to the next filter. A local response (`Action::Respond`) ends the request phase:
///    no later filter's `on_request` runs and nothing goes upstream; then the
///    `on_response` of the filters *before* this one (last first) see the local
///    response, with attempt 0. The answering filter's own `on_response`, and those of
///    the filters after it, are not called for it.
/// 2. The upstream answers (or the proxy answers for a failed exchange, with
///    [`ResponseHead::error`](crate::ResponseHead) set); `on_response` of every filter,
///    last to first. A `ResponseAction::Respond` replaces the response, and the
///    filters before it see the replacement. A `ResponseAction::retry` drops the
///    response and runs every `on_response` again on the next attempt's.
/// 3. `on_done` of every filter that asks for it, last to first, whatever happened
///    before (a local response, a failure, a client gone).
///
/// In a native test, `weft_sdk::testing::Exchange` runs a filter through these
/// steps, as the only filter of its chain.
pub trait Filter: DeserializeOwned + 'static {
    /// Whether a key in the configuration that this type does not know is an error
    /// (the default) or ignored. Strict is what operators need: a misspelled
    /// `exempt_pathz` would otherwise leave the setting off without a word. Set it to
    /// `false` only for a filter that must accept keys it does not use (a config
    /// shared with other tools, or written for a newer version of the filter):
    ///
    /// ```no_run
    /// # use weft_sdk::prelude::*;
    /// # #[derive(Deserialize)] #[serde(crate = "weft_sdk::serde")] struct Tolerant {}
    /// impl Filter for Tolerant {
    ///     const STRICT_CONFIG: bool = false;
    ///     fn on_request(&mut self, _: &Request, _: &Context) -> Action { Action::Continue }
    /// }
    /// ```
    ///
    /// `#[serde(deny_unknown_fields)]` on a nested type still refuses its unknown keys.
    const STRICT_CONFIG: bool = true;

    /// Check and prepare the configuration after it was deserialized (compile
    /// patterns, define [`metrics`](crate::metrics)). An error is shown to the
    /// operator as the reason the proxy refused the configuration: name the key at
    /// fault first, and the proxy points at it in the operator's file.
    ///
    /// ```
    /// use weft_sdk::prelude::*;
    /// use weft_sdk::metrics::Counter;
    ///
    /// #[derive(Deserialize)]
    /// #[serde(crate = "weft_sdk::serde")]
    /// struct Limit { per_minute: u32, #[serde(skip)] refused: Option<Counter> }
    ///
    /// impl Filter for Limit {
    ///     fn init(&mut self) -> Result<(), String> {
    ///         if self.per_minute == 0 {
    ///             return Err("per_minute: must be at least 1".into());
    ///         }
    ///         let refused = Counter::define("refused", "Requests refused.", &[])
    ///             .map_err(|e| format!("cannot define a metric: {e}"))?;
    ///         self.refused = Some(refused);
    ///         Ok(())
    ///     }
    ///     fn on_request(&mut self, _: &Request, _: &Context) -> Action { Action::Continue }
    /// }
    ///
    /// let err = weft_sdk::from_config::<Limit>(r#"{"per_minute":0}"#).err();
    /// assert_eq!(err.as_deref(), Some("per_minute: must be at least 1"));
    /// assert!(weft_sdk::from_config::<Limit>(r#"{"per_minute":60}"#).is_ok());
    /// ```
    fn init(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// The hooks and bodies this filter wants, asked once after a successful
    /// [`Filter::init`]. The proxy calls only the hooks asked for, so a filter pays
    /// nothing for the rest.
    ///
    /// The default is [`Interest::REQUEST`]: `on_request` without the body. Override
    /// it to get `on_response` or buffered bodies, for example
    /// `Interest::REQUEST.with_response()` or
    /// `Interest::REQUEST.with_response_body()`. It may depend on the configuration.
    ///
    /// ```
    /// use weft_sdk::prelude::*;
    ///
    /// #[derive(Deserialize)]
    /// #[serde(crate = "weft_sdk::serde")]
    /// struct Audit { #[serde(default)] bodies: bool }
    ///
    /// impl Filter for Audit {
    ///     fn interest(&self) -> Interest {
    ///         // Only the headers named here are in `head()`: a head costs one call.
    ///         let i = Interest::REQUEST.with_done().with_request_headers(["x-user"]);
    ///         if self.bodies { i.with_request_body() } else { i }
    ///     }
    ///     fn on_request(&mut self, _: &Request, _: &Context) -> Action { Action::Continue }
    /// }
    ///
    /// let audit = weft_sdk::testing::Exchange::<Audit>::init(r#"{"bodies":true}"#)?;
    /// assert!(audit.interest().done);
    /// assert_eq!(audit.interest().request_body, BodyMode::Buffered);
    /// # Ok::<(), String>(())
    /// ```
    fn interest(&self) -> Interest {
        Interest::REQUEST
    }

    /// The clusters this filter's configuration names and may route to, each with
    /// the key that names it, asked once after a successful [`Filter::init`]. The
    /// proxy checks every one against the mesh when it loads the filter (and the
    /// config server before it accepts a change), pointing at the key of a cluster
    /// that does not exist, so a typo is refused at load rather than answered 502 at
    /// request time. Once a filter names any, an [`Action::route`] to another cluster
    /// is refused.
    ///
    /// The default names none: the filter may route to any cluster, and a route to
    /// one that does not exist fails when a request takes it.
    ///
    /// ```
    /// use weft_sdk::prelude::*;
    /// use weft_sdk::testing;
    ///
    /// #[derive(Deserialize)]
    /// #[serde(crate = "weft_sdk::serde")]
    /// struct Canary { stable: String, canary: String }
    ///
    /// impl Filter for Canary {
    ///     fn clusters(&self) -> Vec<ClusterRef> {
    ///         vec![
    ///             ClusterRef::new(&self.stable, "stable"),
    ///             ClusterRef::new(&self.canary, "canary"),
    ///         ]
    ///     }
    ///     fn on_request(&mut self, _: &Request, _: &Context) -> Action {
    ///         Action::route(&self.canary)
    ///     }
    /// }
    ///
    /// testing::Exchange::<Canary>::init(r#"{"stable":"shop","canary":"shop-next"}"#)?;
    /// assert_eq!(testing::declared_clusters()[1], ClusterRef::new("shop-next", "canary"));
    /// # Ok::<(), String>(())
    /// ```
    fn clusters(&self) -> Vec<ClusterRef> {
        Vec::new()
    }

    /// Called for every request. Return [`Action::Continue`] to pass it on. The
    /// [`Context`] is the request's own: its facts, its exchange settings, and the
    /// properties filters leave for later hooks.
    ///
    /// A local response ([`Action::respond`]) answers the client at once: later
    /// filters and the upstream never see the request, and this filter's own
    /// [`Filter::on_response`] is not called for it (see [the order of
    /// hooks](Filter#the-order-of-hooks)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft_sdk::prelude::*;
    /// use weft_sdk::{RequestHead, testing::Edit};
    ///
    /// #[derive(Deserialize)]
    /// #[serde(crate = "weft_sdk::serde")]
    /// struct Api { key: String }
    ///
    /// impl Filter for Api {
    ///     fn interest(&self) -> Interest { Interest::REQUEST.with_request_headers(["x-api-key"]) }
    ///     fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
    ///         if req.head().header("x-api-key") != Some(self.key.as_str()) {
    ///             return Action::respond(401, "missing or wrong x-api-key\n");
    ///         }
    ///         let _ = req.remove_header("x-api-key"); // not for the upstream
    ///         let _ = ctx.set_timeout(Duration::from_secs(5));
    ///         Action::Continue
    ///     }
    /// }
    ///
    /// let mut api: Api = weft_sdk::from_config(r#"{"key":"s3cret"}"#)?;
    /// let req = Request::new(RequestHead::new("GET", "/v1").with_header("x-api-key", "s3cret"));
    /// let ctx = Context::for_request(&req);
    /// assert_eq!(api.on_request(&req, &ctx), Action::Continue);
    /// assert_eq!(req.edits(), [Edit::RemoveHeader("x-api-key".into())]);
    /// assert_eq!(ctx.timeout(), Some(Duration::from_secs(5)));
    ///
    /// let anonymous = Request::new(RequestHead::new("GET", "/v1"));
    /// let action = api.on_request(&anonymous, &Context::for_request(&anonymous));
    /// assert_eq!(action.local_response().map(|r| r.status), Some(401));
    /// # Ok::<(), String>(())
    /// ```
    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action;

    /// Called for every response when [`Filter::interest`] asks for it: the
    /// upstream's, one the proxy made because the exchange failed
    /// ([`ResponseHead::error`](crate::ResponseHead) says why), or the local response
    /// of a filter *later* in the chain. Responses see the filters in the reverse
    /// order of requests. Return [`ResponseAction::retry`] to send the request again.
    ///
    /// It is not called for this filter's own local response from
    /// [`Filter::on_request`], nor for one from a filter earlier in the chain: a
    /// local response goes back only through the filters before the one that made it
    /// (see [the order of hooks](Filter#the-order-of-hooks)).
    ///
    /// ```
    /// use weft_sdk::prelude::*;
    /// use weft_sdk::testing::Exchange;
    /// use weft_sdk::{RequestHead, ResponseHead};
    ///
    /// #[derive(Deserialize)]
    /// #[serde(crate = "weft_sdk::serde")]
    /// struct Stamp {}
    ///
    /// impl Filter for Stamp {
    ///     fn interest(&self) -> Interest { Interest::REQUEST.with_response() }
    ///     fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
    ///         if req.head().path() == "/teapot" { return Action::respond(418, ""); }
    ///         let _ = ctx.set("seen-at", b"request");
    ///         Action::Continue
    ///     }
    ///     fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
    ///         if resp.head().status >= 500 {
    ///             return ResponseAction::respond(503, "try again later\n");
    ///         }
    ///         if ctx.get("seen-at").is_some() { let _ = resp.set_header("x-stamped", "1"); }
    ///         ResponseAction::Continue
    ///     }
    /// }
    ///
    /// let mut stamp = Exchange::<Stamp>::init("null")?;
    /// let get = |path| Request::new(RequestHead::new("GET", path));
    /// let out = stamp.run(get("/"), Response::new(ResponseHead::new(200)));
    /// assert_eq!(out.response.header("x-stamped").as_deref(), Some("1"));
    /// let out = stamp.run(get("/"), Response::new(ResponseHead::new(500)));
    /// assert_eq!(out.status(), 503);
    /// let out = stamp.run(get("/teapot"), Response::new(ResponseHead::new(200)));
    /// assert_eq!((out.status(), out.response_actions.len()), (418, 0));
    /// # Ok::<(), String>(())
    /// ```
    fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
        let _ = (resp, ctx);
        ResponseAction::Continue
    }

    /// Called once when the request is over, when [`Filter::interest`] asks for it
    /// (`with_done`): the place to record what happened. It runs whatever happened
    /// before, a local response of this or another filter included, and can change
    /// nothing.
    ///
    /// ```
    /// use weft_sdk::prelude::*;
    /// use weft_sdk::metrics::Counter;
    /// use weft_sdk::testing::{self, Exchange};
    /// use weft_sdk::{RequestHead, Responder, ResponseHead};
    ///
    /// #[derive(Deserialize)]
    /// #[serde(crate = "weft_sdk::serde")]
    /// struct Outcomes { #[serde(skip)] by_status: Option<Counter> }
    ///
    /// impl Filter for Outcomes {
    ///     fn init(&mut self) -> Result<(), String> {
    ///         let c = Counter::define("responses", "Responses by status.", &["status"]);
    ///         self.by_status = Some(c.map_err(|e| e.to_string())?);
    ///         Ok(())
    ///     }
    ///     fn interest(&self) -> Interest { Interest::NONE.with_done() }
    ///     fn on_request(&mut self, _: &Request, _: &Context) -> Action { Action::Continue }
    ///     fn on_done(&mut self, _: &Context, summary: &Summary) {
    ///         if let Some(c) = &self.by_status {
    ///             let _ = c.inc(&[&summary.status.to_string()]);
    ///         }
    ///         if summary.responder != Responder::Upstream {
    ///             weft_sdk::log::info(&format!("answered by {:?}", summary.responder));
    ///         }
    ///     }
    /// }
    ///
    /// let mut outcomes = Exchange::<Outcomes>::init("null")?;
    /// let req = Request::new(RequestHead::new("GET", "/"));
    /// outcomes.run(req, Response::new(ResponseHead::new(404)));
    /// // A counter `responses` is `weft_filter_responses_total{filter="...",status="404"}`.
    /// assert_eq!(testing::metric_value("responses", &["404"]), Some(1.0));
    /// assert!(testing::logs().is_empty());
    /// # Ok::<(), String>(())
    /// ```
    fn on_done(&mut self, ctx: &Context, summary: &Summary) {
        let _ = (ctx, summary);
    }
}

/// A cluster a filter's configuration names (see [`Filter::clusters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRef {
    /// The cluster's name, as the mesh's `clusters` has it.
    pub name: String,
    /// The configuration key that names it, as the SDK's config errors write keys:
    /// `routes[2].cluster`, `routes[0].split[1].cluster`.
    pub key: String,
}

impl ClusterRef {
    /// The cluster `name`, named at `key`.
    pub fn new(name: &str, key: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            key: key.into(),
        }
    }
}

/// Where [`crate::export!`] keeps an instance's filter value.
#[doc(hidden)]
pub type Slot<F> = RefCell<Option<F>>;

/// Make a filter from its configuration as the proxy does: deserialize the JSON
/// (`null` standing for a missing `config`), then run [`Filter::init`].
///
/// This is how the proxy's `init` call builds the filter value, so unit tests of a
/// filter can check its configuration handling on the host, error messages included.
///
/// ```no_run
/// # use weft_sdk::prelude::*;
/// # #[derive(Deserialize)] #[serde(crate = "weft_sdk::serde")] struct Hello { greeting: String }
/// # impl Filter for Hello { fn on_request(&mut self, _: &Request, _: &Context) -> Action { Action::Continue } }
/// let hello: Hello = weft_sdk::from_config(r#"{"greeting":"hi"}"#)?;
/// let err = weft_sdk::from_config::<Hello>("null").err().unwrap_or_default();
/// assert_eq!(err, "no config given: missing field `greeting`");
/// # Ok::<(), String>(())
/// ```
pub fn from_config<F: Filter>(config_json: &str) -> Result<F, String> {
    let mut filter: F = config::parse(config_json, F::STRICT_CONFIG)?;
    filter.init()?;
    Ok(filter)
}

#[doc(hidden)]
pub fn init<F: Filter>(slot: &'static LocalKey<Slot<F>>, config: &str) -> Result<Interest, String> {
    // A failed second init must not leave the first configuration running.
    slot.with(|s| s.replace(None));
    let filter: F = from_config(config)?;
    let interest = filter.interest();
    for cluster in filter.clusters() {
        crate::host::declare_cluster(&cluster);
    }
    slot.with(|s| s.replace(Some(filter)));
    Ok(interest)
}

fn with_filter<F: Filter, R>(
    slot: &'static LocalKey<Slot<F>>,
    hook: impl FnOnce(&mut F) -> R,
) -> Result<R, LocalResponse> {
    slot.with(|s| {
        // Hooks are never re-entered, but a failed borrow must not become a panic.
        let Ok(mut guard) = s.try_borrow_mut() else {
            return Err(failure("filter hook re-entered while running"));
        };
        match guard.as_mut() {
            Some(filter) => Ok(hook(filter)),
            None => Err(failure("filter hook called before init succeeded")),
        }
    })
}

fn failure(why: &str) -> LocalResponse {
    LocalResponse::new(500).text(format!("{why}\n"))
}

#[doc(hidden)]
pub fn on_request<F: Filter>(
    slot: &'static LocalKey<Slot<F>>,
    req: &Request,
    ctx: &Context,
) -> Action {
    with_filter(slot, |f: &mut F| f.on_request(req, ctx)).unwrap_or_else(Action::Respond)
}

#[doc(hidden)]
pub fn on_response<F: Filter>(
    slot: &'static LocalKey<Slot<F>>,
    resp: &Response,
    ctx: &Context,
) -> ResponseAction {
    with_filter(slot, |f: &mut F| f.on_response(resp, ctx)).unwrap_or_else(ResponseAction::Respond)
}

#[doc(hidden)]
pub fn on_done<F: Filter>(slot: &'static LocalKey<Slot<F>>, ctx: &Context, summary: &Summary) {
    // Nothing can change any more: a filter without its value has nothing to record.
    let _ = with_filter(slot, |f: &mut F| f.on_done(ctx, summary));
}
