//! A loaded filter: its compiled component, a pool of warm instances, and the failure
//! policy that decides what a broken hook does to the request.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use wasmtime::component::Resource;
use wasmtime::{Store, Trap};

use crate::bindings::{FilterWorld, types};
use crate::deadline::{self, first_ticks, ticks};
use crate::error::LoadError;
use crate::exchange::{Exchange, Phase};
use crate::host::HostState;
use crate::metrics::Live;
use crate::runtime::{Compiled, Runtime};
use crate::shared::{FilterShared, HeaderViews};
use crate::state::SharedState;
use weft_config::FailurePolicy;

/// Everything needed to load one filter.
#[derive(Clone, Debug)]
pub struct FilterSpec<'a> {
    /// Name in its chain; shown in logs, errors and metrics.
    pub name: &'a str,
    /// Where the module came from (a path, `builtin:router`), for errors.
    pub source: &'a str,
    /// The component's bytes.
    pub bytes: &'a [u8],
    /// Expected sha256 (hex); loading fails when it differs.
    pub expected_sha256: Option<String>,
    /// The filter's configuration as JSON; `null` when none.
    pub config_json: String,
    /// What a failing hook does to its request.
    pub policy: FailurePolicy,
    /// CPU time one hook call may use. A call the machine starves of CPU is stopped
    /// anyway once ten times this has passed in wall time.
    pub timeout: Duration,
    /// Memory limit of one instance, in bytes.
    pub memory: usize,
    /// Most idle instances kept warm.
    pub max_idle: usize,
    /// How the filter's own metrics are named and bounded.
    pub metrics: crate::MetricsSpec,
    /// The state to go on with, e.g. [`Filter::state`] of the filter this one
    /// replaces; `None` starts empty.
    pub state: Option<SharedState>,
}

impl<'a> FilterSpec<'a> {
    /// A spec with default limits, no config, and the fail-closed policy.
    pub fn new(name: &'a str, source: &'a str, bytes: &'a [u8]) -> Self {
        Self {
            name,
            source,
            bytes,
            expected_sha256: None,
            config_json: "null".to_owned(),
            policy: FailurePolicy::FailClosed,
            timeout: Duration::from_millis(20),
            memory: 16 << 20,
            max_idle: std::thread::available_parallelism().map_or(4, |n| n.get() * 2),
            metrics: crate::MetricsSpec::default(),
            state: None,
        }
    }
}

/// Why a hook failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("filter {filter:?} failed: {reason}")]
pub struct FilterFailure {
    /// The filter's name.
    pub filter: Arc<str>,
    /// What happened: the panic message, the trap, the deadline or the memory limit.
    pub reason: String,
}

/// The result of a hook call after the failure policy has been applied.
#[derive(Debug)]
pub enum Outcome<T> {
    /// The hook ran and decided.
    Done(T),
    /// The hook failed and the policy is fail-open: go on as if it continued.
    Skipped(FilterFailure),
    /// The hook failed and the request must fail (fail-closed, or reload that failed
    /// again).
    Failed(FilterFailure),
}

/// The least time an instance gets to start (instantiate and `init`).
const INIT_DEADLINE: Duration = Duration::from_secs(2);

struct Instance {
    store: Store<HostState>,
    world: FilterWorld,
    /// Counts this instance in `weft_engine_instances` while it lives.
    _live: Live,
}

impl Drop for Instance {
    fn drop(&mut self) {
        (self.store.data().shared.stats.instances).fetch_sub(1, Ordering::Relaxed);
    }
}

struct Inner {
    name: Arc<str>,
    source: Arc<str>,
    digest: String,
    interest: types::Interest,
    /// The clusters the filter declared at `init`; when any, the only ones it may
    /// route to.
    clusters: Box<[crate::ClusterRef]>,
    compiled: Arc<Compiled>,
    runtime: Arc<Runtime>,
    shared: Arc<FilterShared>,
    config_json: String,
    policy: FailurePolicy,
    timeout: Duration,
    deadline_ticks: u64,
    memory: usize,
    idle: ArrayQueue<Instance>,
}

/// A loaded filter, cheap to clone and share across connections.
#[derive(Clone)]
pub struct Filter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("name", &self.inner.name)
            .field("sha256", &self.inner.digest)
            .finish_non_exhaustive()
    }
}

impl Filter {
    pub(crate) fn load(
        runtime: &Arc<Runtime>,
        spec: FilterSpec<'_>,
        digest: String,
        compiled: Arc<Compiled>,
    ) -> Result<Self, LoadError> {
        let name: Arc<str> = Arc::from(spec.name);
        let shared = Arc::new(FilterShared {
            name: name.clone(),
            metrics: (runtime.metrics).filter_metrics(spec.name, &digest, &spec.metrics),
            state: spec.state.clone().unwrap_or_default(),
            spans: runtime.spans.clone(),
            stats: Default::default(),
            digest: Arc::from(digest.as_str()),
            views: Default::default(),
        });
        let figures: Arc<dyn crate::metrics::hooks::Figures> = shared.clone();
        runtime.metrics.watch(&figures);
        let deadline_ticks = first_ticks(spec.timeout);
        let mut inner = Inner {
            name,
            source: Arc::from(spec.source),
            digest,
            interest: types::Interest {
                request: false,
                request_body: types::BodyMode::None,
                response: false,
                response_body: types::BodyMode::None,
                done: false,
                request_headers: Vec::new(),
                response_headers: Vec::new(),
                response_trailers: false,
                keep_request_body: 0,
            },
            clusters: Box::default(),
            compiled,
            runtime: runtime.clone(),
            shared,
            config_json: spec.config_json,
            policy: spec.policy,
            timeout: spec.timeout,
            deadline_ticks,
            memory: spec.memory,
            idle: ArrayQueue::new(spec.max_idle.max(1)),
        };
        // The first instance proves the filter starts and accepts its config, and
        // tells which hooks it wants.
        let (instance, interest, declared) = inner.instantiate().map_err(|e| match e {
            StartError::Rejected(message) => LoadError::ConfigRejected {
                filter: spec.name.to_owned(),
                message,
            },
            StartError::Failed(message) => LoadError::Start {
                filter: spec.name.to_owned(),
                message,
            },
        })?;
        let _ = inner.shared.views.set(header_views(spec.name, &interest)?);
        inner.interest = interest;
        // Every instance declares the same (one config); the first one's are kept.
        inner.clusters = declared.into();
        let _ = inner.idle.push(instance);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The filter's name in its chain.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The shared name, for errors that outlive the filter.
    pub fn name_arc(&self) -> Arc<str> {
        self.inner.name.clone()
    }

    /// Hex sha256 of its module.
    pub fn sha256(&self) -> &str {
        &self.inner.digest
    }

    /// Where its module came from (a path, `builtin:router`, a pushed module).
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// What its hooks cost and how often they failed, and its instances alive.
    pub fn stats(&self) -> crate::StatsReport {
        self.inner.shared.stats.report()
    }

    /// The hooks and bodies it asked for.
    pub fn interest(&self) -> &types::Interest {
        &self.inner.interest
    }

    /// The clusters its configuration names, as it declared them at `init`.
    pub fn clusters(&self) -> &[crate::ClusterRef] {
        &self.inner.clusters
    }

    /// Whether it may route to `cluster`: one it declared, or any when it declared
    /// none (a filter that predates `declare-cluster`).
    pub fn may_route(&self, cluster: &str) -> bool {
        let declared = &self.inner.clusters;
        declared.is_empty() || declared.iter().any(|c| c.name == cluster)
    }

    /// Its shared state: pass it in the [`FilterSpec`] of a filter that replaces this
    /// one, and that filter goes on with these keys.
    pub fn state(&self) -> SharedState {
        self.inner.shared.state.clone()
    }

    /// Its failure policy.
    pub fn policy(&self) -> FailurePolicy {
        self.inner.policy
    }

    /// Run `on-request`. The exchange goes in and comes back, changed by the filter.
    pub fn on_request(&self, ex: Box<Exchange>) -> (Box<Exchange>, Outcome<types::Action>) {
        let body_access = self.inner.interest.request_body == types::BodyMode::Buffered;
        let (ex, outcome) = self.run(ex, body_access, Phase::Request, |world, store| {
            world
                .weft_filter_filter()
                .call_on_request(store, Resource::new_borrow(0), Resource::new_borrow(0))
                .map(Decision::Request)
        });
        (
            ex,
            outcome.map(|d| match d {
                Decision::Request(a) => a,
                _ => types::Action::Continue,
            }),
        )
    }

    /// Run `on-response` on the exchange's response. The exchange goes in and comes
    /// back, changed by the filter.
    pub fn on_response(
        &self,
        ex: Box<Exchange>,
    ) -> (Box<Exchange>, Outcome<types::ResponseAction>) {
        let body_access = self.inner.interest.response_body == types::BodyMode::Buffered;
        let (ex, outcome) = self.run(ex, body_access, Phase::Response, |world, store| {
            world
                .weft_filter_filter()
                .call_on_response(store, Resource::new_borrow(0), Resource::new_borrow(0))
                .map(Decision::Response)
        });
        (
            ex,
            outcome.map(|d| match d {
                Decision::Response(a) => a,
                _ => types::ResponseAction::Continue,
            }),
        )
    }

    /// Run `on-done`. Nothing can change any more, so a failure is only logged.
    pub fn on_done(&self, ex: Box<Exchange>, summary: &types::Summary) -> Box<Exchange> {
        self.on_done_outcome(ex, summary).0
    }

    /// Run `on-done`, like [`Filter::on_done`], and say whether it failed: for tools
    /// that report what a filter did, such as the filter test harness.
    pub fn on_done_outcome(
        &self,
        ex: Box<Exchange>,
        summary: &types::Summary,
    ) -> (Box<Exchange>, Outcome<()>) {
        let (ex, outcome) = self.run(ex, false, Phase::Done, |world, store| {
            world
                .weft_filter_filter()
                .call_on_done(store, Resource::new_borrow(0), summary)
                .map(|()| Decision::Done)
        });
        (ex, outcome.map(|_| ()))
    }

    fn run(
        &self,
        ex: Box<Exchange>,
        body_access: bool,
        phase: Phase,
        call: impl Fn(&FilterWorld, &mut Store<HostState>) -> wasmtime::Result<Decision>,
    ) -> (Box<Exchange>, Outcome<Decision>) {
        let mut slot = Some(ex);
        let outcome = self.run_in(&mut slot, body_access, phase, call);
        (slot.expect("the exchange always comes back"), outcome)
    }

    fn run_in(
        &self,
        slot: &mut Option<Box<Exchange>>,
        body_access: bool,
        phase: Phase,
        call: impl Fn(&FilterWorld, &mut Store<HostState>) -> wasmtime::Result<Decision>,
    ) -> Outcome<Decision> {
        let inner = &*self.inner;
        let mut attempts = if inner.policy == FailurePolicy::Reload {
            2
        } else {
            1
        };
        loop {
            attempts -= 1;
            let started = Instant::now();
            let result = match inner.checkout() {
                Ok(instance) => inner.call(instance, slot, (body_access, phase, started), &call),
                Err(e) => Err(e),
            };
            let hook = match phase {
                Phase::Request => 0,
                Phase::Response => 1,
                Phase::Done => 2,
            };
            (inner.shared.stats).record(hook, started.elapsed(), result.is_err());
            match result {
                Ok(decision) => return Outcome::Done(decision),
                Err(reason) => {
                    let failure = FilterFailure {
                        filter: inner.name.clone(),
                        reason,
                    };
                    tracing::warn!(
                        filter = &*inner.name,
                        hook = crate::stats::HOOKS[hook],
                        policy = ?inner.policy,
                        "filter failed: {}",
                        failure.reason
                    );
                    if attempts > 0 {
                        continue;
                    }
                    return match inner.policy {
                        FailurePolicy::FailOpen => Outcome::Skipped(failure),
                        FailurePolicy::FailClosed | FailurePolicy::Reload => {
                            Outcome::Failed(failure)
                        }
                    };
                }
            }
        }
    }
}

impl<T> Outcome<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        match self {
            Outcome::Done(t) => Outcome::Done(f(t)),
            Outcome::Skipped(e) => Outcome::Skipped(e),
            Outcome::Failed(e) => Outcome::Failed(e),
        }
    }
}

enum Decision {
    Request(types::Action),
    Response(types::ResponseAction),
    Done,
}

enum StartError {
    Rejected(String),
    Failed(String),
}

impl Inner {
    /// A fresh instance, initialised with the filter's config.
    fn instantiate(
        &self,
    ) -> Result<(Instance, types::Interest, Vec<crate::ClusterRef>), StartError> {
        let state = HostState::new(self.shared.clone(), self.memory, self.runtime.epoch_start);
        let mut store = Store::new(&self.runtime.wasmtime, state);
        store.limiter(|s| &mut s.limits);
        deadline::install(&mut store, |s: &HostState| &s.deadline);
        // Starting an instance (its `init`: parsing config, building tables) is not
        // a hook on the request path: no hook budget is running, so its deadline
        // counts wall time, and a generous one, so a busy machine does not refuse
        // filters that are merely descheduled. It still has a bound, so an `init`
        // that never returns is stopped.
        store.set_epoch_deadline(self.init_deadline_ticks());
        let _ticking = deadline::Busy::new();
        let world = self
            .compiled
            .pre
            .instantiate(&mut store)
            .map_err(|e| StartError::Failed(self.describe(&e, &store)))?;
        store.set_epoch_deadline(self.init_deadline_ticks());
        let interest = match world
            .weft_filter_filter()
            .call_init(&mut store, &self.config_json)
        {
            Ok(Ok(interest)) => interest,
            Ok(Err(message)) => return Err(StartError::Rejected(message)),
            Err(e) => return Err(StartError::Failed(self.describe(&e, &store))),
        };
        // Declarations count only during `init`.
        let declared = store.data_mut().declared.take().unwrap_or_default();
        let live = Live::new(&self.runtime.metrics.instances);
        (self.shared.stats.instances).fetch_add(1, Ordering::Relaxed);
        Ok((
            Instance {
                store,
                world,
                _live: live,
            },
            interest,
            declared,
        ))
    }

    fn init_deadline_ticks(&self) -> u64 {
        self.deadline_ticks.max(ticks(INIT_DEADLINE))
    }

    fn checkout(&self) -> Result<Instance, String> {
        if let Some(instance) = self.idle.pop() {
            return Ok(instance);
        }
        match self.instantiate() {
            Ok((instance, ..)) => Ok(instance),
            Err(StartError::Rejected(m)) => Err(format!("rejected its config: {m}")),
            Err(StartError::Failed(m)) => Err(m),
        }
    }

    fn call(
        &self,
        mut instance: Instance,
        slot: &mut Option<Box<Exchange>>,
        (body_access, phase, started): (bool, Phase, Instant),
        call: &impl Fn(&FilterWorld, &mut Store<HostState>) -> wasmtime::Result<Decision>,
    ) -> Result<Decision, String> {
        let data = instance.store.data_mut();
        data.body_access = body_access;
        data.phase = phase;
        // The exchange moves into the store for the call and back out after it, also
        // after a trap: the request is never lost with a broken instance. Boxed, it is
        // a pointer that moves for free.
        data.exchange = slot.take();
        data.deadline.start(self.timeout, started);
        instance.store.set_epoch_deadline(self.deadline_ticks);
        let result = call(&instance.world, &mut instance.store);
        let data = instance.store.data_mut();
        data.deadline.stop();
        *slot = data.exchange.take();
        match result {
            Ok(decision) => {
                // A full pool means enough warm instances; drop the extra one.
                let _ = self.idle.push(instance);
                Ok(decision)
            }
            // A trap poisons the store: this instance is dropped, never reused.
            Err(e) => Err(self.describe(&e, &instance.store)),
        }
    }

    /// Say why a call failed in words an operator can act on.
    fn describe(&self, e: &wasmtime::Error, store: &Store<HostState>) -> String {
        let stderr = store.data().stderr.take();
        if let Some(i) = stderr.find("panicked at") {
            let panic = stderr[i..].trim().replace('\n', " ");
            return panic;
        }
        if let Some(trap) = e.downcast_ref::<Trap>() {
            return match trap {
                Trap::Interrupt => format!(
                    "ran past its deadline of {:?} and was stopped",
                    self.timeout
                ),
                Trap::StackOverflow => "overflowed its stack".to_owned(),
                other => format!("trapped: {other}"),
            };
        }
        let text = format!("{e:#}");
        if text.contains("growing memory") || text.contains("memory") && text.contains("limit") {
            return format!(
                "exceeded its memory limit of {} bytes: {}",
                self.memory,
                first_line(&text)
            );
        }
        // The top of the chain is wasmtime's "error while executing at wasm backtrace";
        // the root cause says what happened.
        first_line(&e.root_cause().to_string()).to_owned()
    }
}

/// The headers a filter reads through its one-call heads, parsed once at load.
fn header_views(filter: &str, interest: &types::Interest) -> Result<HeaderViews, LoadError> {
    let names = |list: &[String], which: &str| {
        list.iter()
            .map(|n| {
                http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| LoadError::ConfigRejected {
                    filter: filter.to_owned(),
                    message: format!("its interest names an invalid {which} header {n:?}"),
                })
            })
            .collect::<Result<Box<[_]>, _>>()
    };
    Ok(HeaderViews {
        request: names(&interest.request_headers, "request")?,
        response: names(&interest.response_headers, "response")?,
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
