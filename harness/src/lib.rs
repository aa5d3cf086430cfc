//! Run a built Weft filter (a `.wasm` component) in the proxy's own engine, outside a
//! proxy, and see what it did: a filter's own tests and `weft filter test` use it.
//!
//! 1. [`Harness::load`] a `.wasm` file (or [`Harness::from_bytes`]) with the filter's
//!    configuration as JSON. The engine checks, compiles and starts it and calls its
//!    `init`, as a proxy loading it does; a rejected configuration is an error here.
//! 2. Describe a request with [`RequestSpec`], and the upstream's answer to each
//!    attempt with [`ResponseSpec`] (200 with no body when none is given).
//! 3. [`Harness::request`] runs the hooks the filter asked for, as a proxy with this
//!    filter alone in its chain runs them: `on-request`; then, unless it answered or
//!    failed, an upstream attempt and `on-response` (again for each retry it asks for
//!    and the proxy would allow); then `on-done`.
//! 4. Assert on the [`Run`]: what the request hook decided, the request and the
//!    response as the filter left them, who answered the client, the request's
//!    properties and exchange settings, and the filter's log lines. The metrics the
//!    filter records add up across requests, as in a proxy: [`Harness::metric`],
//!    [`Harness::metrics`], [`Harness::metrics_text`].
//!
//! ```no_run
//! use weft_harness::{Action, Harness, RequestSpec};
//!
//! let harness = Harness::load("hello.wasm", r#"{"greeting":"hi"}"#)?;
//! let run = harness.request(RequestSpec::get("/hello"))?;
//! assert!(matches!(run.action, Action::Respond(ref r) if r.status == 200));
//! assert_eq!(run.response.body, b"hi");
//! # Ok::<(), weft_harness::HarnessError>(())
//! ```
//!
//! The request is taken as the filter would see it once the proxy's own checks ran
//! (one `host` header, no hop-by-hop headers, a normal path): give it in that form.
//! The upstream is not called; the harness does not wait out delays but counts them
//! against the request's timeout, as the proxy does.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod drive;
mod logs;
mod metrics;
mod run;
mod spec;

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use weft_engine::{Engine, Filter, FilterSpec, LoadError};

pub use metrics::{Series, Value};
pub use run::{Action, Failure, Hook, Local, LogLine, RequestView, Responder, ResponseView, Run};
pub use run::{Settings, Step};
pub use spec::{RequestSpec, ResponseSpec};
/// The level of a [`LogLine`].
pub use tracing::Level;
pub use weft_engine::{
    BodyMode, ClusterRef, ExchangeError, FailurePolicy, Interest, MetricsSpec, TlsInfo,
};

/// Why a filter could not be loaded or a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The `.wasm` file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The engine refused the module, or the filter refused its configuration or
    /// failed to start: the same error a proxy loading it gives.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The request or response described is not one a proxy could receive.
    #[error("invalid {what}: {message}")]
    Spec {
        /// `request`, `response`, a header, a property.
        what: String,
        /// What is wrong with it.
        message: String,
    },
}

/// How the filter is loaded and the listener it stands in: the settings of a filter
/// entry and of its listener in a proxy's configuration, with the same defaults.
#[derive(Clone, Debug)]
pub struct Options {
    /// The filter's name in its chain (`filter` unless said; [`Harness::load`] takes
    /// the file's stem).
    pub name: String,
    /// What a failing hook does to the request (`failure:`): fail-closed by default.
    pub policy: FailurePolicy,
    /// CPU time one hook call may use (`timeout:`): 20 ms by default.
    pub timeout: Duration,
    /// Memory limit of one instance (`memory:`): 16 MiB by default.
    pub memory: usize,
    /// How the filter's metrics are named and bounded (`metrics:`).
    pub metrics: MetricsSpec,
    /// The listener's `limits.request_timeout`: 30 s by default.
    pub request_timeout: Duration,
    /// The listener's `default_cluster`, where a request no filter routed goes:
    /// `default` unless said; none answers such a request 404 `no route`.
    pub default_cluster: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        let spec = FilterSpec::new("filter", "", &[]);
        Self {
            name: "filter".to_owned(),
            policy: spec.policy,
            timeout: spec.timeout,
            memory: spec.memory,
            metrics: spec.metrics,
            request_timeout: Duration::from_secs(30),
            default_cluster: Some("default".to_owned()),
        }
    }
}

/// One loaded filter, in an engine of its own, ready to run requests.
pub struct Harness {
    /// Keeps the filter's metrics; no other filter shares it.
    engine: Engine,
    filter: Filter,
    options: Options,
    init_logs: Vec<LogLine>,
    next_id: Cell<u64>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Load the filter in a `.wasm` file with its configuration (JSON; `null` for
    /// none), named after the file's stem.
    pub fn load(path: impl AsRef<Path>, config_json: &str) -> Result<Self, HarnessError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| HarnessError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("filter")
            .to_owned();
        let options = Options {
            name,
            ..Options::default()
        };
        Self::with_options(&bytes, config_json, &path.display().to_string(), options)
    }

    /// Load a filter from its component's bytes with its configuration (JSON).
    pub fn from_bytes(bytes: &[u8], config_json: &str) -> Result<Self, HarnessError> {
        Self::with_options(bytes, config_json, "bytes", Options::default())
    }

    /// Load a filter with settings of its own; `source` names the module in errors.
    pub fn with_options(
        bytes: &[u8],
        config_json: &str,
        source: &str,
        options: Options,
    ) -> Result<Self, HarnessError> {
        // An engine per harness: the filter's metrics are its own, and the on-disk
        // cache of compiled code (as the proxy's) makes a second load quick.
        let engine = Engine::new()?;
        let mut spec = FilterSpec::new(&options.name, source, bytes);
        spec.config_json = config_json.to_owned();
        spec.policy = options.policy;
        spec.timeout = options.timeout;
        spec.memory = options.memory;
        spec.metrics = options.metrics.clone();
        // Requests run one at a time: one warm instance is what a quiet proxy keeps.
        spec.max_idle = 1;
        let (filter, init_logs) = logs::capture(|| engine.load(spec));
        Ok(Self {
            filter: filter?,
            engine,
            options,
            init_logs,
            next_id: Cell::new(1),
        })
    }

    /// The filter's name in its (one-filter) chain.
    pub fn name(&self) -> &str {
        self.filter.name()
    }

    /// The hex sha256 of its module.
    pub fn sha256(&self) -> &str {
        self.filter.sha256()
    }

    /// What its `init` asked for: which hooks run, bodies, named headers.
    pub fn interest(&self) -> &Interest {
        self.filter.interest()
    }

    /// The clusters it declared at `init`; when any, the only ones it may route to.
    pub fn clusters(&self) -> &[ClusterRef] {
        self.filter.clusters()
    }

    /// What it logged while it started (its first `init`).
    pub fn init_logs(&self) -> &[LogLine] {
        &self.init_logs
    }

    /// The settings it was loaded with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Run one request through the filter's hooks and say what happened. A filter
    /// that fails is not an error: the [`Run`] says how it failed and what the client
    /// got. Fails only when the spec is not a request a proxy could receive.
    pub fn request(&self, spec: RequestSpec) -> Result<Run, HarnessError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        drive::drive(self, id, spec)
    }
}
