//! The proxy's side of the control plane: subscribe to the config server, apply each
//! snapshot whole or not at all, answer ACK or NACK, and keep the last good snapshot
//! on disk so a restart serves without the server.
//!
//! 1. [`start`] with a running proxy and [`Options`]. A snapshot cached on disk is
//!    applied first, so the proxy serves before the server answers (or if it never
//!    does).
//! 2. The agent keeps one `Subscribe` stream open with the proxy token, reconnecting
//!    with jittered exponential backoff. It draws an instance secret once: the server
//!    binds the node id to it, so no other process can take over this proxy's
//!    stream; each snapshot is applied through
//!    [`weft_proxy::RunningProxy::reload_with`] off the runtime's workers, and
//!    requests in flight finish on the chain they started with.
//! 3. When the server asks for them, the agent reports what the proxy's RED metrics
//!    counted (see `report`) on the same stream, for `weft stat`.
//! 4. [`Agent::applied`] tells which version is live; [`Agent::stop`] ends it.
//!
//! ```no_run
//! # async fn run(proxy: weft_proxy::RunningProxy) -> Result<(), Box<dyn std::error::Error>> {
//! let token = std::fs::read_to_string("proxy-token")?;
//! let options = weft_agent::Options::new("http://127.0.0.1:7070", token.trim(), "web-1", "web");
//! let agent = weft_agent::start(proxy, options).await?;
//! let mut applied = agent.applied();
//! applied.wait_for(|v| v.is_some()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cache;
mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use weft_api::proxy_message::Kind;
use weft_api::{Ack, BoundListener, ControlClient, Hello, Nack, ProxyMessage, Snapshot};
use weft_config::MeshConfig;
use weft_proxy::RunningProxy;

/// Where to subscribe, and who this proxy is.
#[derive(Clone, Debug)]
pub struct Options {
    /// The config server, e.g. `http://127.0.0.1:7070`.
    pub server: String,
    /// The proxy token the config server gave (its `proxy-token` file).
    pub token: String,
    /// Unique id of this proxy; a restarted proxy keeps it.
    pub node: String,
    /// The service this proxy sits beside.
    pub service: String,
    /// Labels the mesh config can select on.
    pub labels: BTreeMap<String, String>,
    /// Where the last good snapshot and its modules are kept; none: not on disk.
    pub state_dir: Option<PathBuf>,
    /// First wait before reconnecting; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait before reconnecting.
    pub max_backoff: Duration,
}

impl Options {
    /// Options with no labels, no disk cache and backoff from 100 ms to 5 s.
    pub fn new(server: &str, token: &str, node: &str, service: &str) -> Self {
        Self {
            server: server.to_owned(),
            token: token.to_owned(),
            node: node.to_owned(),
            service: service.to_owned(),
            labels: BTreeMap::new(),
            state_dir: None,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server address is not a URL tonic can use.
    #[error("config server {url:?}: {message}")]
    Server {
        /// The address given.
        url: String,
        /// Why it cannot be used.
        message: String,
    },
    /// The proxy token cannot be sent as metadata.
    #[error("the proxy token holds characters that cannot be sent: {0}")]
    Token(String),
    /// No random instance secret could be drawn.
    #[error("cannot draw a random instance secret from /dev/urandom: {0}")]
    Random(std::io::Error),
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    applied: watch::Receiver<Option<u64>>,
    task: JoinHandle<()>,
}

impl Agent {
    /// The snapshot version the proxy serves (none before the first).
    pub fn applied(&self) -> watch::Receiver<Option<u64>> {
        self.applied.clone()
    }

    /// Stop subscribing; the proxy keeps serving what it has.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// What the proxy serves now, to tell an unchanged snapshot from a changed one.
#[derive(Default)]
struct Applied {
    version: Option<u64>,
    /// The mesh text, the selected group and the sha256 of every pushed filter the
    /// group uses: equal means nothing to reload.
    fingerprint: Option<(String, usize, BTreeSet<String>)>,
    /// Modules the live configuration uses, by sha256.
    modules: HashMap<String, Bytes>,
    /// Pushed filter name to the sha256 that runs for it (see
    /// [`weft_config::Config::pushed_filters`]).
    filters: BTreeMap<String, String>,
}

struct Subscriber {
    proxy: RunningProxy,
    options: Options,
    /// `authorization` metadata for every stream.
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    /// This process's secret, which the server binds the node id to.
    instance: String,
    applied: Applied,
    version_tx: watch::Sender<Option<u64>>,
    cache: Option<Arc<cache::DiskCache>>,
    reporter: report::Reporter,
}

/// Apply the snapshot cached on disk (if any), then subscribe in the background.
pub async fn start(proxy: RunningProxy, options: Options) -> Result<Agent, AgentError> {
    tonic::transport::Endpoint::from_shared(options.server.clone()).map_err(|e| {
        AgentError::Server {
            url: options.server.clone(),
            message: e.to_string(),
        }
    })?;
    let authorization =
        weft_api::bearer(&options.token).map_err(|e| AgentError::Token(e.to_string()))?;
    let instance = instance_secret().map_err(AgentError::Random)?;
    let (version_tx, applied) = watch::channel(None);
    let cache = options
        .state_dir
        .clone()
        .map(|dir| Arc::new(cache::DiskCache::new(dir)));
    let mut subscriber = Subscriber {
        proxy,
        options,
        authorization,
        instance,
        applied: Applied::default(),
        version_tx,
        cache,
        reporter: report::Reporter::default(),
    };
    subscriber.apply_cached().await;
    let task = tokio::spawn(subscriber.run());
    Ok(Agent { applied, task })
}

impl Subscriber {
    /// Serve the last good snapshot before the server is reached.
    async fn apply_cached(&mut self) {
        let Some(cache) = &self.cache else { return };
        let cached = match cache.load() {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("ignoring the cached snapshot: {e}");
                return;
            }
        };
        let version = cached.snapshot.version;
        match self.apply(cached.snapshot, cached.modules).await {
            Ok(()) => tracing::info!(
                version,
                "serving the cached snapshot until the config server answers"
            ),
            Err(e) => tracing::error!(version, "cannot apply the cached snapshot: {e}"),
        }
    }

    /// Subscribe forever, reconnecting with backoff.
    async fn run(mut self) {
        let mut backoff = self.options.min_backoff;
        loop {
            match self.session().await {
                Ok(true) => backoff = self.options.min_backoff,
                Ok(false) => {}
                Err(e) => tracing::warn!(server = %self.options.server, "config server: {e}"),
            }
            // Full jitter keeps a fleet that lost the server from reconnecting at once.
            let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    /// One stream; true when it delivered at least one snapshot.
    async fn session(&mut self) -> Result<bool, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(self.options.server.clone())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
        let mut client = ControlClient::new(channel)
            .max_decoding_message_size(weft_api::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(weft_api::MAX_MESSAGE_SIZE);
        let (tx, rx) = mpsc::channel(4);
        let hello = Hello {
            node: self.options.node.clone(),
            service: self.options.service.clone(),
            labels: self.options.labels.clone(),
            version: self.applied.version.unwrap_or(0),
            modules: self.applied.modules.keys().cloned().collect(),
            agent: env!("CARGO_PKG_VERSION").to_owned(),
            instance: self.instance.clone(),
            filters: self.applied.filters.clone(),
        };
        let _ = tx
            .send(ProxyMessage {
                kind: Some(Kind::Hello(hello)),
            })
            .await;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let response = client.subscribe(request).await?;
        let interval = report_interval(response.metadata());
        let mut snapshots = response.into_inner();
        tracing::info!(server = %self.options.server, node = %self.options.node, "subscribed to the config server");
        // Reports count from now: what was served while no server listened is not
        // told to this one as if it had just happened.
        let hub = self.proxy.engine().metrics();
        let _ = self.reporter.collect(&hub);
        let mut reports = interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut delivered = false;
        loop {
            let next = tokio::select! {
                next = snapshots.message() => next?,
                _ = tick(&mut reports) => {
                    for report in self.reporter.collect(&hub) {
                        let report = ProxyMessage { kind: Some(Kind::Report(report)) };
                        if tx.send(report).await.is_err() {
                            return Ok(delivered);
                        }
                    }
                    continue;
                }
            };
            let Some(mut snapshot) = next else { break };
            delivered = true;
            let version = snapshot.version;
            let modules = std::mem::take(&mut snapshot.modules)
                .into_iter()
                .map(|m| (m.sha256, Bytes::from(m.wasm)))
                .collect();
            let reply = match self.apply(snapshot, modules).await {
                Ok(()) => Kind::Ack(Ack {
                    version,
                    listeners: self
                        .proxy
                        .listeners()
                        .into_iter()
                        .map(|(name, addr)| BoundListener {
                            name,
                            address: addr.to_string(),
                        })
                        .collect(),
                    modules: self.applied.modules.keys().cloned().collect(),
                    filters: self.applied.filters.clone(),
                }),
                Err(error) => {
                    tracing::error!(
                        version,
                        "refused snapshot, keeping the last good one: {error}"
                    );
                    Kind::Nack(Nack {
                        version,
                        error,
                        modules: self.applied.modules.keys().cloned().collect(),
                    })
                }
            };
            if tx.send(ProxyMessage { kind: Some(reply) }).await.is_err() {
                break;
            }
        }
        Ok(delivered)
    }

    /// Apply one snapshot, all or nothing; the error says why it was refused.
    async fn apply(
        &mut self,
        snapshot: Snapshot,
        mut received: HashMap<String, Bytes>,
    ) -> Result<(), String> {
        let version = snapshot.version;
        // Received modules are not hashed here: the engine checks every module it
        // loads against the sha256 the configuration names, and refuses a mismatch.
        let filters = snapshot.filters;
        let mesh = MeshConfig::parse(&snapshot.mesh, &format!("mesh v{version}"))
            .map_err(|e| e.to_string())?;
        let group = mesh
            .select(&self.options.service, &self.options.labels)
            .ok_or_else(|| {
                format!(
                    "no group of mesh v{version} selects service {:?} with labels {:?}",
                    self.options.service, self.options.labels
                )
            })?;
        let config = mesh
            .proxy_config(group, &filters)
            .map_err(|e| e.to_string())?;
        let needed = config.pushed_modules();
        let running = config.pushed_filters();
        let fingerprint = (snapshot.mesh.clone(), group, needed.clone());
        if self.applied.fingerprint.as_ref() == Some(&fingerprint) {
            // Another group or filter changed; this proxy's configuration did not.
            self.mark_applied(version, snapshot.mesh, filters).await;
            return Ok(());
        }
        let mut modules = HashMap::with_capacity(needed.len());
        for sha in &needed {
            let bytes = received
                .remove(sha)
                .or_else(|| self.applied.modules.get(sha).cloned())
                .ok_or_else(|| format!("module {sha} is needed but was not sent"))?;
            modules.insert(sha.clone(), bytes);
        }
        // Loading filters compiles and instantiates: keep it off the runtime's
        // workers, which are serving requests.
        let proxy = self.proxy.clone();
        let modules = tokio::task::spawn_blocking(move || {
            proxy
                .reload_with(&config, &modules)
                .map(|()| modules)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("applying snapshot: {e}"))??;
        self.applied.modules = modules;
        self.applied.filters = running;
        self.applied.fingerprint = Some(fingerprint);
        self.proxy.set_ready(true);
        self.mark_applied(version, snapshot.mesh, filters).await;
        tracing::info!(version, "snapshot applied");
        Ok(())
    }

    async fn mark_applied(
        &mut self,
        version: u64,
        mesh: String,
        filters: BTreeMap<String, String>,
    ) {
        self.applied.version = Some(version);
        self.proxy.set_config_version(version);
        self.version_tx.send_replace(Some(version));
        let Some(cache) = self.cache.clone() else {
            return;
        };
        // Writing and syncing files blocks: keep it off the workers serving requests.
        let modules = self.applied.modules.clone();
        let stored =
            tokio::task::spawn_blocking(move || cache.store(version, &mesh, &filters, &modules))
                .await;
        let stored = stored
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = stored {
            // Serving goes on; only a restart without the server would miss it.
            tracing::warn!(version, "cannot cache the snapshot on disk: {e}");
        }
    }
}

/// The report interval the server asked for, if it did.
fn report_interval(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let ms: u64 = metadata
        .get(weft_api::REPORT_INTERVAL_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    // Faster than every 10 ms would be a server's mistake, not a wish.
    (ms > 0).then(|| Duration::from_millis(ms.max(10)))
}

/// The next report's time; never, without reports.
async fn tick(reports: &mut Option<tokio::time::Interval>) {
    match reports {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// 16 random bytes, hex: drawn once per process, never written anywhere.
fn instance_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut random = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    Ok(hex::encode(random))
}
