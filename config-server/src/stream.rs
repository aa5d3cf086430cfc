//! The gRPC `Control` service: one stream per proxy, snapshots out, ACKs and NACKs
//! in, and the registry of proxies that `GET /v1/proxies` shows.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_api::proxy_message::Kind;
use weft_api::{Control, ControlServer, Hello, MAX_MESSAGE_SIZE, Module, ProxyMessage, Snapshot};

use crate::store::now;
use crate::{Current, Shared};

/// A stream that says nothing is not a proxy; do not keep it.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The `Control` service as routes to merge with the HTTP API on one port.
pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    let server = ControlServer::new(ControlService { shared })
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    tonic::service::Routes::new(server).into_axum_router()
}

/// Every proxy that ever connected since the server started, by node id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    proxies: BTreeMap<String, Entry>,
    next_stream: u64,
}

#[derive(Debug)]
struct Entry {
    view: ProxyView,
    /// Which stream owns the entry: a stale stream must not update its successor.
    stream: u64,
    /// Dropped when a newer stream of the same node replaces this one, which ends it.
    _ends_stream: oneshot::Sender<()>,
}

/// One proxy as `GET /v1/proxies` shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProxyView {
    node: String,
    service: String,
    labels: BTreeMap<String, String>,
    agent: String,
    connected: bool,
    peer: Option<String>,
    /// When its current (or last) stream opened.
    since: String,
    /// The group of the live mesh config that selects it.
    group: Option<usize>,
    /// The version it serves: last acknowledged, or reported in its Hello.
    applied: Option<u64>,
    /// Listener name to bound address, from its last ACK.
    listeners: BTreeMap<String, String>,
    last: Option<Outcome>,
}

/// The proxy's answer to the last snapshot it was sent.
#[derive(Clone, Debug, Serialize)]
struct Outcome {
    version: u64,
    result: &'static str,
    error: Option<String>,
}

impl Registry {
    /// Record a new stream for `hello.node`, replacing (and ending) an older one.
    fn connect(&self, hello: &Hello, peer: Option<SocketAddr>) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.next_stream += 1;
        let stream = inner.next_stream;
        let view = ProxyView {
            node: hello.node.clone(),
            service: hello.service.clone(),
            labels: hello.labels.clone(),
            agent: hello.agent.clone(),
            connected: true,
            peer: peer.map(|p| p.to_string()),
            since: now(),
            group: None,
            applied: (hello.version != 0).then_some(hello.version),
            listeners: BTreeMap::new(),
            last: None,
        };
        inner.proxies.insert(
            hello.node.clone(),
            Entry {
                view,
                stream,
                _ends_stream: tx,
            },
        );
        (stream, rx)
    }

    /// Change a proxy's entry, if `stream` still owns it.
    fn update(&self, node: &str, stream: u64, f: impl FnOnce(&mut ProxyView)) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = inner.proxies.get_mut(node)
            && entry.stream == stream
        {
            f(&mut entry.view);
        }
    }

    /// Every proxy, by node id.
    pub fn list(&self) -> Vec<ProxyView> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.proxies.values().map(|e| e.view.clone()).collect()
    }
}

struct ControlService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Control for ControlService {
    type SubscribeStream = ReceiverStream<Result<Snapshot, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no Hello within {HELLO_TIMEOUT:?}"
                )));
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(Some(ProxyMessage {
                kind: Some(Kind::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first message of a Subscribe stream must be a Hello",
                ));
            }
        };
        if hello.node.is_empty() {
            return Err(Status::invalid_argument("Hello.node must not be empty"));
        }
        // Two: the snapshot being read and the next one; a proxy that reads no more
        // holds up only its own stream.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(serve_proxy(self.shared.clone(), hello, peer, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One proxy's stream, until it closes, is replaced, or the server stops.
async fn serve_proxy(
    shared: Arc<Shared>,
    hello: Hello,
    peer: Option<SocketAddr>,
    mut inbound: Streaming<ProxyMessage>,
    tx: mpsc::Sender<Result<Snapshot, Status>>,
) {
    let (stream, mut replaced) = shared.proxies.connect(&hello, peer);
    let node = hello.node.as_str();
    let mut has: HashSet<String> = hello
        .modules
        .iter()
        .map(|m| m.to_ascii_lowercase())
        .collect();
    // The version the proxy serves or was last sent: never send it again.
    let mut serving = hello.version;
    let mut seen = None;
    let mut published = shared.published.subscribe();
    let mut stop = shared.stop.clone();
    tracing::info!(
        node,
        service = hello.service,
        ?peer,
        version = hello.version,
        agent = hello.agent,
        "proxy connected"
    );

    let end = loop {
        let current = published.borrow_and_update().current.clone();
        if let Some(current) = current
            && seen != Some(current.version.version)
        {
            let version = current.version.version;
            seen = Some(version);
            let group = current.mesh.select(&hello.service, &hello.labels);
            shared.proxies.update(node, stream, |v| v.group = group);
            match group {
                None => tracing::info!(
                    node,
                    version,
                    "no group of the mesh config selects this proxy"
                ),
                Some(_) if version == serving => {}
                Some(group) => match snapshot_for(&shared, &current, group, &has).await {
                    Ok(snapshot) => {
                        let modules = snapshot.modules.len();
                        if tx.send(Ok(snapshot)).await.is_err() {
                            break None;
                        }
                        serving = version;
                        tracing::info!(node, version, group, modules, "snapshot sent");
                    }
                    Err(status) => break Some(status),
                },
            }
        }
        tokio::select! {
            changed = published.changed() => if changed.is_err() { break None },
            msg = inbound.message() => match msg {
                Ok(Some(ProxyMessage { kind: Some(Kind::Ack(ack)) })) => {
                    has = ack.modules.iter().map(|m| m.to_ascii_lowercase()).collect();
                    let listeners = ack.listeners.into_iter().map(|l| (l.name, l.address)).collect();
                    shared.proxies.update(node, stream, |v| {
                        v.applied = Some(ack.version);
                        v.listeners = listeners;
                        v.last = Some(Outcome { version: ack.version, result: "ack", error: None });
                    });
                    tracing::info!(node, version = ack.version, "proxy applied the snapshot");
                }
                Ok(Some(ProxyMessage { kind: Some(Kind::Nack(nack)) })) => {
                    has = nack.modules.iter().map(|m| m.to_ascii_lowercase()).collect();
                    tracing::warn!(node, version = nack.version, error = nack.error, "proxy refused the snapshot");
                    shared.proxies.update(node, stream, |v| {
                        v.last = Some(Outcome { version: nack.version, result: "nack", error: Some(nack.error) });
                    });
                }
                Ok(Some(_)) => break Some(Status::invalid_argument(
                    "after its Hello, a proxy sends only Ack and Nack",
                )),
                Ok(None) => break None,
                Err(status) => {
                    tracing::debug!(node, "stream error: {status}");
                    break None;
                }
            },
            _ = &mut replaced => break Some(Status::aborted(
                "a newer stream from the same node replaced this one",
            )),
            _ = stop.wait_for(|s| *s) => break Some(Status::unavailable("the config server is shutting down")),
            () = tx.closed() => break None,
        }
    };
    if let Some(status) = end {
        tracing::info!(node, "ending the stream: {}", status.message());
        // A proxy that reads nothing more does not get to hold this task.
        let _ = tx.try_send(Err(status));
    }
    shared.proxies.update(node, stream, |v| v.connected = false);
    tracing::info!(node, "proxy disconnected");
}

/// The snapshot of `current` for a proxy of `group` that has the modules `has`.
async fn snapshot_for(
    shared: &Shared,
    current: &Current,
    group: usize,
    has: &HashSet<String>,
) -> Result<Snapshot, Status> {
    let version = &current.version;
    let needed = current
        .mesh
        .proxy_config(group, &version.filters)
        .map_err(|e| Status::internal(format!("version {}: {e}", version.version)))?
        .pushed_modules();
    let missing: Vec<String> = needed.into_iter().filter(|s| !has.contains(s)).collect();
    let store = shared.store.clone();
    let modules = tokio::task::spawn_blocking(move || {
        missing
            .into_iter()
            .map(|sha| match store.read_module(&sha) {
                Ok(Some(wasm)) => Ok(Module { sha256: sha, wasm }),
                Ok(None) => Err(format!("module {sha} is not in the data folder")),
                Err(e) => Err(format!("cannot read module {sha}: {e}")),
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
    .map_err(|e| {
        tracing::error!(version = version.version, "cannot build a snapshot: {e}");
        Status::internal(e)
    })?;
    Ok(Snapshot {
        version: version.version,
        mesh: version.mesh.clone(),
        filters: version.filters.clone(),
        modules,
    })
}
