//! The proxy's side of the control plane: subscribe to the config server, apply each
//! snapshot whole or not at all, answer ACK or NACK, and keep the last good snapshot
//! on disk so a restart serves without the server.
//!
//! 1. [`start`] with a running proxy and [`Options`]. A snapshot cached on disk is
//!    applied first, so the proxy serves before the server answers (or if it never
//!    does).
//! 2. The agent keeps one `Subscribe` stream open with the proxy token (over TLS to an
//!    `https://` server, verified with [`Options::ca`], presenting the proxy's
//!    workload certificate once it has one and connecting again with each new one),
//!    reconnecting
//!    with jittered exponential backoff, and says a failure that repeats once (see
//!    `error`). The server binds the node id to an instance secret the agent keeps
//!    in the state folder (see `instance`): no other process can take over this
//!    proxy's stream, and a restart on the same folder, even after a crash, takes
//!    its node id back at once. Right after its Hello the agent restates its last
//!    ACK, so a server that restarted shows what the proxy serves. Each snapshot is
//!    applied through [`weft_proxy::RunningProxy::reload_with`] off the runtime's
//!    workers, and requests in flight finish on the chain they started with.
//! 3. When the server asks for them, the agent reports what the proxy's RED metrics
//!    counted (see `report`) on the same stream, for `weft stat`.
//! 4. With trusted keys ([`Options::trusted_keys`]), every snapshot's mesh config
//!    and every pushed module it uses must carry a signature by one of them (see
//!    [`signature`]), checked against the bytes before anything is loaded; else the
//!    snapshot is refused (NACK) and the proxy keeps serving its last good one.
//! 5. Once a mesh config with an `identity` section is applied (or
//!    [`Options::identity`] is set), the agent gets the proxy's workload
//!    certificate from the server's CA, keeps it in the state folder and renews it
//!    at about half-life (see `identity`).
//! 6. [`Agent::applied`] tells which version is live. [`Agent::shutdown`] says
//!    goodbye, so the server frees the node id at once; [`Agent::stop`] just ends.
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
mod connect;
mod error;
mod identity;
mod instance;
mod report;
pub mod signature;
mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Streaming;
use weft_api::proxy_message::Kind;
use weft_api::{Ack, BoundListener, ControlClient, Goodbye, Hello, Nack, ProxyMessage, Snapshot};
use weft_config::MeshConfig;
use weft_proxy::RunningProxy;

use error::StreamError;
use signature::TrustedKeys;
use verify::Signatures;

/// A failure said once is said again after this long if it lasts: a reminder, not
/// a line per retry.
const REPEAT_WARNING: Duration = Duration::from_secs(60);

/// How long a goodbye waits for the server to end the stream, which shows it read
/// the goodbye.
const GOODBYE_WAIT: Duration = Duration::from_secs(2);

/// How long [`Agent::shutdown`] waits for the agent, say while a snapshot is being
/// applied, before it stops it anyway.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Where to subscribe, and who this proxy is.
#[derive(Clone, Debug)]
pub struct Options {
    /// The config server, e.g. `http://127.0.0.1:7070`.
    pub server: String,
    /// The proxy token the config server gave (its `proxy-token` file).
    pub token: String,
    /// Unique id of this proxy; a restarted proxy keeps it (and, with the same
    /// `state_dir`, gets it back at once).
    pub node: String,
    /// The service this proxy sits beside.
    pub service: String,
    /// Labels the mesh config can select on.
    pub labels: BTreeMap<String, String>,
    /// Where the last good snapshot, its modules and the instance secret are kept;
    /// none: not on disk (a restart then waits for the server to release the node
    /// id).
    pub state_dir: Option<PathBuf>,
    /// Ask the config server for a workload certificate (see `identity`) even
    /// before a mesh config with an `identity` section asks for one.
    pub identity: bool,
    /// First wait before reconnecting; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait before reconnecting.
    pub max_backoff: Duration,
    /// The CA certificate(s), PEM, that the config server's certificate chains to,
    /// for an `https://` server (the server keeps its CA's as `ca.pem` in its data
    /// folder).
    pub ca: Option<PathBuf>,
    /// A file of public keys (see [`signature::TrustedKeys`]); when set, a snapshot
    /// whose mesh config or pushed modules no key of it signed is refused.
    pub trusted_keys: Option<PathBuf>,
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
            identity: false,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            trusted_keys: None,
            ca: None,
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server address is not a URL.
    #[error("config server {url:?} is not a URL: {reason}")]
    Server {
        /// The address given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The server address has no scheme, as `127.0.0.1:7070`.
    #[error("config server {url:?} needs a scheme: http://{url}")]
    NoScheme {
        /// The address given.
        url: String,
    },
    /// The server address has a scheme other than `http` and `https`.
    #[error(
        "config server {url:?}: the proxy speaks HTTP/2 (gRPC) to its config server, \
         in plain text or over TLS; give it as http://{rest} or https://{rest}"
    )]
    Scheme {
        /// The address given.
        url: String,
        /// The address without its scheme.
        rest: String,
    },
    /// An `https://` server, and no CA to verify its certificate with.
    #[error(
        "config server {url:?}: over https the proxy needs the CA certificate that signed \
         the server's, to know it is talking to the server: give it with --ca (the server \
         keeps its CA's as ca.pem in its data folder)"
    )]
    NoCa {
        /// The address given.
        url: String,
    },
    /// The CA file cannot be read.
    #[error("{}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The proxy token cannot be sent as metadata.
    #[error("the proxy token holds characters that cannot be sent: {0}")]
    Token(String),
    /// No random instance secret could be drawn.
    #[error("cannot draw a random instance secret from /dev/urandom: {0}")]
    Random(std::io::Error),
    /// The trusted keys cannot be read.
    #[error("trusted keys: {0}")]
    TrustedKeys(#[from] signature::KeysError),
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    applied: watch::Receiver<Option<u64>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Agent {
    /// The snapshot version the proxy serves (none before the first).
    pub fn applied(&self) -> watch::Receiver<Option<u64>> {
        self.applied.clone()
    }

    /// Stop subscribing at once; the proxy keeps serving what it has. The server
    /// keeps the node id for this instance for a while (a restart on the same state
    /// folder takes it back anyway); [`Agent::shutdown`] frees it.
    pub fn stop(self) {
        self.task.abort();
    }

    /// Say goodbye to the server, which frees the node id at once, and stop
    /// subscribing; the proxy keeps serving what it has. Waits a few seconds at
    /// most.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_WAIT, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// How a stream ended without an error.
enum Ended {
    /// The server closed it; `delivered` when it sent at least one snapshot.
    Closed { delivered: bool },
    /// The agent was told to stop, and said goodbye if it was connected.
    Stopped,
    /// A new workload certificate was installed: connect again, presenting it.
    Renewed,
}

/// A subscribed stream: where to send, what arrives, and how often to report.
struct Opened {
    tx: mpsc::Sender<ProxyMessage>,
    snapshots: Streaming<Snapshot>,
    reports: Option<Duration>,
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
    /// The server, with the connection's settings.
    server: connect::Server,
    /// Its host and port, for messages.
    addr: String,
    /// `authorization` metadata for every stream.
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    /// The secret the server binds the node id to.
    instance: instance::Instance,
    /// Whose signatures a snapshot needs; none: signatures are not checked.
    trusted: Option<Arc<TrustedKeys>>,
    /// Gets and renews the workload certificate.
    identity: identity::Renewal,
    /// The workload certificate installed last, presented over TLS.
    certificate: watch::Receiver<Option<Arc<identity::Certificate>>>,
    applied: Applied,
    version_tx: watch::Sender<Option<u64>>,
    cache: Option<Arc<cache::DiskCache>>,
    reporter: report::Reporter,
    stop: watch::Receiver<bool>,
    /// The failure last said, and when: the same one again is not said at every
    /// retry.
    warned: Option<(String, Instant)>,
}

/// Apply the snapshot cached on disk (if any), then subscribe in the background.
pub async fn start(proxy: RunningProxy, options: Options) -> Result<Agent, AgentError> {
    let server = connect::Server::new(&options.server, options.ca.as_deref()).await?;
    let addr = (server.endpoint())
        .uri()
        .authority()
        .map_or_else(|| options.server.clone(), ToString::to_string);
    let authorization =
        weft_api::bearer(&options.token).map_err(|e| AgentError::Token(e.to_string()))?;
    // Reads, and may write and sync, a file: off the workers serving requests.
    let dir = options.state_dir.clone();
    let instance = tokio::task::spawn_blocking(move || instance::load(dir.as_deref()))
        .await
        .map_err(|e| AgentError::Random(std::io::Error::other(e)))?
        .map_err(AgentError::Random)?;
    let trusted = match &options.trusted_keys {
        Some(path) => Some(Arc::new(TrustedKeys::load(path)?)),
        None => None,
    };
    let (version_tx, applied) = watch::channel(None);
    let (stop, stop_rx) = watch::channel(false);
    let cache = options
        .state_dir
        .clone()
        .map(|dir| Arc::new(cache::DiskCache::new(dir)));
    let renewal = identity::start(
        proxy.identity(),
        identity::Settings {
            endpoint: server.endpoint(),
            server: &options.server,
            authorization: authorization.clone(),
            node: &options.node,
            instance: &instance.secret,
            state_dir: options.state_dir.as_deref(),
            wanted: options.identity,
            min_backoff: options.min_backoff,
            max_backoff: options.max_backoff,
        },
    )
    .await;
    let mut subscriber = Subscriber {
        proxy,
        options,
        server,
        certificate: renewal.certificate(),
        addr,
        authorization,
        instance,
        trusted,
        identity: renewal,
        applied: Applied::default(),
        version_tx,
        cache,
        reporter: report::Reporter::default(),
        stop: stop_rx,
        warned: None,
    };
    subscriber.apply_cached().await;
    let task = tokio::spawn(subscriber.run());
    Ok(Agent {
        applied,
        stop,
        task,
    })
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

    /// Subscribe until told to stop, reconnecting with backoff.
    async fn run(mut self) {
        let mut backoff = self.options.min_backoff;
        let mut stop = self.stop.clone();
        loop {
            match self.session().await {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Renewed) => {
                    backoff = self.options.min_backoff;
                    continue;
                }
                Ok(Ended::Closed { delivered: true }) => backoff = self.options.min_backoff,
                Ok(Ended::Closed { delivered: false }) => {}
                Err(e) => self.warn(&e),
            }
            // Full jitter keeps a fleet that lost the server from reconnecting at once.
            let wait = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopped(&mut stop) => return,
            }
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    /// Say why a stream failed, once for as long as the same failure repeats (and
    /// again every [`REPEAT_WARNING`]): a refused node id or a server that is down
    /// fails every retry alike.
    fn warn(&mut self, e: &StreamError) {
        let key = e.key();
        let now = Instant::now();
        let again = self
            .warned
            .as_ref()
            .is_some_and(|(k, at)| *k == key && now.duration_since(*at) < REPEAT_WARNING);
        if again {
            tracing::debug!(server = %self.options.server, "{e}");
        } else {
            tracing::warn!(server = %self.options.server, "{e}");
            self.warned = Some((key, now));
        }
    }

    /// Connect, say hello and subscribe.
    async fn open(
        &self,
        certificate: Option<&identity::Certificate>,
    ) -> Result<Opened, StreamError> {
        let server = &self.options.server;
        let endpoint =
            (self.server.presenting(certificate)).map_err(|reason| StreamError::Refused {
                code: tonic::Code::InvalidArgument,
                message: reason,
            })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| StreamError::connect(server, e))?;
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
            instance: self.instance.secret.clone(),
            filters: self.applied.filters.clone(),
        };
        let _ = tx.send(message(Kind::Hello(hello))).await;
        // A server that restarted knows nothing of this proxy but its Hello: the
        // last ACK tells it the listeners too, so its status shows what it did
        // before.
        if let Some(version) = self.applied.version {
            let _ = tx.send(message(Kind::Ack(self.ack(version)))).await;
        }
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        let response = match client.subscribe(request).await {
            Ok(response) => response,
            Err(status) => {
                if status.code() == tonic::Code::PermissionDenied {
                    // The server wants the proxy to prove who it is: get a
                    // certificate, which the server grants while it holds the node.
                    self.identity.want(true);
                    self.identity.subscribed();
                }
                return Err(StreamError::subscribe(server, &self.addr, status).await);
            }
        };
        let reports = report_interval(response.metadata());
        Ok(Opened {
            tx,
            snapshots: response.into_inner(),
            reports,
        })
    }

    /// One stream, until it ends or the agent is told to stop.
    async fn session(&mut self) -> Result<Ended, StreamError> {
        let mut stop = self.stop.clone();
        // Each certificate installed from now on is one to connect again with.
        let mut renewed = self.certificate.clone();
        let presented = renewed.borrow_and_update().clone();
        let opened = tokio::select! {
            opened = self.open(presented.as_deref()) => opened?,
            () = stopped(&mut stop) => return Ok(Ended::Stopped),
        };
        let Opened {
            tx,
            mut snapshots,
            reports,
        } = opened;
        let server = self.options.server.clone();
        self.warned = None;
        tracing::info!(server, node = %self.options.node, "subscribed to the config server");
        self.identity.subscribed();
        // Reports count from now: what was served while no server listened is not
        // told to this one as if it had just happened.
        let hub = self.proxy.engine().metrics();
        let _ = self.reporter.collect(&hub);
        let mut reports = reports.map(|every| {
            let mut t = tokio::time::interval_at(Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut delivered = false;
        loop {
            let next = tokio::select! {
                next = snapshots.message() => next.map_err(|s| StreamError::stream(&server, s))?,
                _ = tick(&mut reports) => {
                    for report in self.reporter.collect(&hub) {
                        if tx.send(message(Kind::Report(report))).await.is_err() {
                            return Ok(Ended::Closed { delivered });
                        }
                    }
                    continue;
                }
                () = stopped(&mut stop) => {
                    goodbye(tx, snapshots).await;
                    return Ok(Ended::Stopped);
                }
                Ok(()) = renewed.changed(), if self.server.is_tls() => {
                    tracing::info!("connecting again with the new workload certificate");
                    return Ok(Ended::Renewed);
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
                Ok(()) => Kind::Ack(self.ack(version)),
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
            if tx.send(message(reply)).await.is_err() {
                break;
            }
        }
        Ok(Ended::Closed { delivered })
    }

    /// What the proxy serves, as version `version`.
    fn ack(&self, version: u64) -> Ack {
        Ack {
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
        }
    }

    /// Apply one snapshot, all or nothing; the error says why it was refused.
    async fn apply(
        &mut self,
        mut snapshot: Snapshot,
        mut received: HashMap<String, Bytes>,
    ) -> Result<(), String> {
        let version = snapshot.version;
        let signatures = Signatures::take(&mut snapshot);
        // Nothing of a snapshot is used before its signatures are checked.
        if let Some(keys) = &self.trusted {
            verify::mesh(keys, &snapshot.mesh, &signatures)?;
        }
        // Received modules are not hashed here: the engine checks every module it
        // loads against the sha256 the configuration names, and refuses a mismatch.
        let filters = snapshot.filters;
        let mesh = MeshConfig::parse(&snapshot.mesh, &format!("mesh v{version}"))
            .map_err(|e| e.to_string())?;
        self.identity.want(mesh.identity.is_some());
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
            if let Some(keys) = &self.trusted {
                verify::held(keys, &needed, &signatures, &running)?;
            }
            // Another group or filter changed; this proxy's configuration did not.
            self.mark_applied(version, snapshot.mesh, filters, signatures)
                .await;
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
        let check = (self.trusted.clone()).map(|keys| (keys, signatures.clone(), running.clone()));
        let modules = tokio::task::spawn_blocking(move || {
            if let Some((keys, signatures, running)) = &check {
                verify::modules(keys, &modules, signatures, running)?;
            }
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
        self.mark_applied(version, snapshot.mesh, filters, signatures)
            .await;
        tracing::info!(version, "snapshot applied");
        Ok(())
    }

    async fn mark_applied(
        &mut self,
        version: u64,
        mesh: String,
        filters: BTreeMap<String, String>,
        signatures: Signatures,
    ) {
        self.applied.version = Some(version);
        self.proxy.set_config_version(version);
        self.version_tx.send_replace(Some(version));
        let Some(cache) = self.cache.clone() else {
            return;
        };
        // Writing and syncing files blocks: keep it off the workers serving requests.
        let modules = self.applied.modules.clone();
        let stored = tokio::task::spawn_blocking(move || {
            cache.store(version, &mesh, &filters, &signatures, &modules)
        })
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

/// Resolves when the agent is told to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // The Agent was dropped without being stopped: the task goes on, detached.
        std::future::pending::<()>().await;
    }
}

fn message(kind: Kind) -> ProxyMessage {
    ProxyMessage { kind: Some(kind) }
}

/// Tell the server this proxy is stopping, so it frees the node id at once, and
/// wait a little for it to end the stream: once it has, it read the goodbye.
async fn goodbye(tx: mpsc::Sender<ProxyMessage>, mut snapshots: Streaming<Snapshot>) {
    if tx.send(message(Kind::Goodbye(Goodbye {}))).await.is_err() {
        return;
    }
    drop(tx);
    let ended = async { while let Ok(Some(_)) = snapshots.message().await {} };
    if tokio::time::timeout(GOODBYE_WAIT, ended).await.is_err() {
        tracing::debug!("the config server did not end the stream after the goodbye");
    }
}
