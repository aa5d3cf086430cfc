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
    /// operator as the reason the proxy refused the configuration.
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
    /// ```no_run
    /// # use weft_sdk::prelude::*;
    /// # #[derive(Deserialize)] #[serde(crate = "weft_sdk::serde")] struct Canary { stable: String, canary: String }
    /// # impl Filter for Canary { fn on_request(&mut self, _: &Request, _: &Context) -> Action { Action::Continue }
    /// fn clusters(&self) -> Vec<ClusterRef> {
    ///     vec![
    ///         ClusterRef::new(&self.stable, "stable"),
    ///         ClusterRef::new(&self.canary, "canary"),
    ///     ]
    /// }
    /// # }
    /// ```
    fn clusters(&self) -> Vec<ClusterRef> {
        Vec::new()
    }

    /// Called for every request. Return [`Action::Continue`] to pass it on. The
    /// [`Context`] is the request's own: its facts, its exchange settings, and the
    /// properties filters leave for later hooks.
    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action;

    /// Called for every response when [`Filter::interest`] asks for it: the
    /// upstream's, a filter's local one, or one the proxy made because the exchange
    /// failed ([`ResponseHead::error`](crate::ResponseHead) says why). Responses see
    /// the filters in the reverse order of requests. Return
    /// [`ResponseAction::retry`] to send the request again.
    fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
        let _ = (resp, ctx);
        ResponseAction::Continue
    }

    /// Called once when the request is over, when [`Filter::interest`] asks for it
    /// (`with_done`): the place to record what happened.
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
