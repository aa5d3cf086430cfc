//! The gRPC `Control` service: one stream per proxy, snapshots out, ACKs, NACKs and
//! traffic reports (kept by `stats`) in, and the registry of proxies that
//! `GET /v1/proxies` shows.
//!
//! A stream must carry the proxy token (`authorization: Bearer TOKEN` metadata); the
//! API token is refused here as the proxy token is refused by the API. What a proxy
//! says about itself is bounded (see the `MAX_*` constants), and so is the number of
//! proxies kept ([`crate::Limits::max_proxies`]).
//!
//! A node id is bound to the instance secret of the proxy that registered it
//! (`Hello.instance`, which a proxy keeps in its state folder across restarts).
//! While the node's stream is live, and for [`crate::Limits::node_hold`] after it
//! ends, only a stream with the same secret may use the node id: it replaces the old
//! stream at once (the same proxy reconnecting after a network cut the server has
//! not noticed yet, or restarted on the same state folder, even after a crash). Any
//! other stream is refused with ALREADY_EXISTS, so a second proxy, or anyone holding
//! the shared proxy token, cannot take over a live proxy's stream. A proxy that stops
//! cleanly says Goodbye, which frees the node id at once; otherwise another process
//! (a proxy restarted without its state folder) takes it after the hold.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_api::proxy_message::Kind;
use weft_api::{
    Ack, Control, ControlServer, Hello, MAX_MESSAGE_SIZE, MAX_PROXY_MESSAGE_SIZE, Module,
    ProxyMessage, Snapshot,
};

use crate::error::short;
use crate::stats::{DropLog, Sender};
use crate::{Current, Limits, Shared, auth};

/// A stream that says nothing is not a proxy; do not keep it.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest node id and service name: a DNS name's length.
pub(crate) const MAX_NAME_LEN: usize = 253;
/// Most labels a proxy may carry.
pub(crate) const MAX_LABELS: usize = 32;
/// Longest label key, and longest label value.
pub(crate) const MAX_LABEL_LEN: usize = 253;
/// Longest agent (Weft version) string.
const MAX_AGENT_LEN: usize = 64;
/// Shortest and longest instance secret.
const INSTANCE_LEN: std::ops::RangeInclusive<usize> = 16..=128;
/// Most listeners an ACK may report.
const MAX_LISTENERS: usize = 64;
/// Most filters a Hello or an ACK may report.
const MAX_FILTERS: usize = 64;
/// A NACK's reason is kept up to this many bytes.
const MAX_ERROR_LEN: usize = 2048;

/// The `Control` service as routes to merge with the HTTP API on one port.
pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    let server = ControlServer::new(ControlService { shared })
        // Proxies say little; only snapshots, which carry modules, are large.
        .max_decoding_message_size(MAX_PROXY_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    tonic::service::Routes::new(server).into_axum_router()
}

/// The proxies that connected, by node id: connected ones, and disconnected ones
/// until they are forgotten.
#[derive(Debug)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    max_proxies: usize,
    hold: Duration,
    forget_after: Duration,
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
    /// sha256 of the instance secret the node id is bound to.
    instance: [u8; 32],
    /// Held while the stream is live; dropped when a newer stream of the same
    /// instance replaces it, which ends it.
    live: Option<oneshot::Sender<()>>,
    /// When its last stream ended.
    ended: Option<Instant>,
    /// Its last stream ended with a Goodbye: the proxy stopped cleanly and wants
    /// nothing kept for it.
    left: bool,
}

impl Entry {
    /// Whether another instance may take the node id over at `now`.
    fn released(&self, now: Instant, hold: Duration) -> bool {
        self.live.is_none()
            && (self.left || self.ended.is_some_and(|t| now.duration_since(t) >= hold))
    }

    /// Why a stream of another instance may not take the node id now.
    fn refusal(&self, node: &str, now: Instant, hold: Duration) -> String {
        let Some(ended) = self.ended else {
            return format!(
                "node {node:?} is in use by another proxy process that is connected now: \
                 give each proxy its own --node"
            );
        };
        let ago = now.duration_since(ended);
        let left = hold.saturating_sub(ago).as_millis().div_ceil(1000);
        // Not a duplicate for sure: a proxy restarted without its state folder lands
        // here too, and only has to wait.
        format!(
            "node {node:?} was in use by another proxy process until {}s ago (a proxy \
             restarted with another --state-dir, or another proxy with the same --node); \
             it is kept for that process {}s after its stream ended, so this one may take \
             it in {left}s",
            ago.as_secs(),
            hold.as_secs()
        )
    }
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
    /// Pushed filter name to the sha256 it runs, from its last ACK (or its Hello).
    filters: BTreeMap<String, String>,
    last: Option<Outcome>,
}

/// The proxy's answer to the last snapshot it was sent.
#[derive(Clone, Debug, Serialize)]
struct Outcome {
    version: u64,
    result: &'static str,
    error: Option<String>,
}

/// A registered stream: its number, and what ends it when a newer one replaces it.
struct Registered {
    stream: u64,
    replaced: oneshot::Receiver<()>,
}

impl Registry {
    pub fn new(limits: &Limits) -> Self {
        Self {
            inner: Mutex::default(),
            max_proxies: limits.max_proxies.max(1),
            hold: limits.node_hold,
            forget_after: limits.forget_after,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (now, forget_after) = (Instant::now(), self.forget_after);
        inner
            .proxies
            .retain(|_, e| e.ended.is_none_or(|t| now.duration_since(t) < forget_after));
        inner
    }

    /// Record a new stream for `hello.node`, if the node id is free, bound to the
    /// same instance, or released; a stream of the same instance is replaced (and
    /// ended).
    fn connect(&self, hello: &Hello, peer: Option<SocketAddr>) -> Result<Registered, Status> {
        let instance: [u8; 32] = Sha256::digest(hello.instance.as_bytes()).into();
        let now = Instant::now();
        let mut inner = self.lock();
        let node = hello.node.as_str();
        match inner.proxies.get(node) {
            Some(e) if !auth::same(&e.instance, &instance) && !e.released(now, self.hold) => {
                return Err(Status::already_exists(e.refusal(node, now, self.hold)));
            }
            Some(_) => {}
            None if inner.proxies.len() < self.max_proxies => {}
            None => {
                // Make room: forget the node disconnected longest, if it is released.
                let oldest = inner
                    .proxies
                    .iter()
                    .filter(|(_, e)| e.released(now, self.hold))
                    .min_by_key(|(_, e)| e.ended)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => {
                        inner.proxies.remove(&k);
                    }
                    None => {
                        return Err(Status::resource_exhausted(format!(
                            "the config server keeps at most {} proxies and every one is \
                             connected or was recently; raise its --max-proxies",
                            self.max_proxies
                        )));
                    }
                }
            }
        }
        let (tx, replaced) = oneshot::channel();
        inner.next_stream += 1;
        let stream = inner.next_stream;
        let serving = hello.version != 0;
        let view = ProxyView {
            node: hello.node.clone(),
            service: hello.service.clone(),
            labels: hello.labels.clone(),
            agent: hello.agent.clone(),
            connected: true,
            peer: peer.map(|p| p.to_string()),
            since: crate::store::now(),
            group: None,
            applied: serving.then_some(hello.version),
            listeners: BTreeMap::new(),
            filters: if serving {
                hello.filters.clone()
            } else {
                BTreeMap::new()
            },
            last: None,
        };
        inner.proxies.insert(
            hello.node.clone(),
            Entry {
                view,
                stream,
                instance,
                live: Some(tx),
                ended: None,
                left: false,
            },
        );
        Ok(Registered { stream, replaced })
    }

    /// Change a proxy's entry, if `stream` still owns it.
    fn update(&self, node: &str, stream: u64, f: impl FnOnce(&mut ProxyView)) {
        let mut inner = self.lock();
        if let Some(entry) = inner.proxies.get_mut(node)
            && entry.stream == stream
        {
            f(&mut entry.view);
        }
    }

    /// The stream ended; the node id stays bound to its instance for the hold,
    /// unless the proxy said Goodbye (`left`).
    fn disconnect(&self, node: &str, stream: u64, left: bool) {
        let mut inner = self.lock();
        if let Some(entry) = inner.proxies.get_mut(node)
            && entry.stream == stream
        {
            entry.view.connected = false;
            entry.live = None;
            entry.ended = Some(Instant::now());
            entry.left = left;
        }
    }

    /// Every proxy, by node id.
    pub fn list(&self) -> Vec<ProxyView> {
        self.lock()
            .proxies
            .values()
            .map(|e| e.view.clone())
            .collect()
    }
}

/// Why a Hello is refused, if it is: what a proxy says about itself is kept for
/// as long as it is registered, and shown to operators.
fn check_hello(hello: &Hello) -> Result<(), String> {
    check_name("Hello.node", &hello.node)?;
    check_name("Hello.service", &hello.service)?;
    if !INSTANCE_LEN.contains(&hello.instance.len()) {
        return Err(format!(
            "Hello.instance must be a random secret of {} to {} bytes, drawn once per proxy process",
            INSTANCE_LEN.start(),
            INSTANCE_LEN.end()
        ));
    }
    if hello.labels.len() > MAX_LABELS {
        return Err(format!(
            "Hello.labels: {} labels; at most {MAX_LABELS}",
            hello.labels.len()
        ));
    }
    for (k, v) in &hello.labels {
        check_text("Hello.labels key", k, MAX_LABEL_LEN)?;
        if k.is_empty() {
            return Err("Hello.labels: a key is empty".into());
        }
        check_text(&format!("Hello.labels[{}]", short(k)), v, MAX_LABEL_LEN)?;
    }
    check_text("Hello.agent", &hello.agent, MAX_AGENT_LEN)?;
    check_filters("Hello.filters", &hello.filters)
}

/// Why an ACK is refused, if it is.
fn check_ack(ack: &Ack) -> Result<(), String> {
    if ack.listeners.len() > MAX_LISTENERS {
        return Err(format!(
            "Ack.listeners: {} listeners; at most {MAX_LISTENERS}",
            ack.listeners.len()
        ));
    }
    for l in &ack.listeners {
        check_text("Ack.listeners name", &l.name, MAX_NAME_LEN)?;
        check_text("Ack.listeners address", &l.address, MAX_NAME_LEN)?;
    }
    check_filters("Ack.filters", &ack.filters)
}

fn check_filters(what: &str, filters: &BTreeMap<String, String>) -> Result<(), String> {
    if filters.len() > MAX_FILTERS {
        return Err(format!(
            "{what}: {} filters; at most {MAX_FILTERS}",
            filters.len()
        ));
    }
    for (name, shas) in filters {
        crate::validate::check_name(name).map_err(|e| format!("{what}: {e}"))?;
        let ok = shas
            .split(',')
            .all(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok || shas.len() > 65 * MAX_FILTERS {
            return Err(format!(
                "{what}[{name}]: not a sha256 (64 hex digits), nor a list of them"
            ));
        }
    }
    Ok(())
}

fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    check_text(what, value, MAX_NAME_LEN)
}

/// At most `max` bytes, and no control characters: these are printed on operators'
/// terminals.
fn check_text(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{what}: {} bytes; at most {max}", value.len()));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "{what} {:?} holds control characters",
            short(value)
        ));
    }
    Ok(())
}

/// The start of a NACK's reason, at most [`MAX_ERROR_LEN`] bytes.
fn truncate_error(mut error: String) -> String {
    if error.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
        error.push_str(" [...]");
    }
    error
}

/// The modules a proxy says it keeps, as sha256 (lower-case hex); anything else is
/// not a module name and is ignored.
fn module_set(modules: &[String]) -> HashSet<String> {
    modules
        .iter()
        .filter(|m| m.len() == 64 && m.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|m| m.to_ascii_lowercase())
        .collect()
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
        // Nothing is read from a stream without the proxy token.
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !auth::bearer_matches(given, &self.shared.proxy_token) {
            let why = if given.is_none() {
                "Subscribe needs the proxy token: send the metadata `authorization: Bearer TOKEN`"
            } else if auth::bearer_matches(given, &self.shared.token) {
                "this is the API token; Subscribe needs the proxy token"
            } else {
                "the proxy token is wrong"
            };
            tracing::warn!(?peer, "refused a proxy stream: {why}");
            return Err(Status::unauthenticated(why));
        }
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
        check_hello(&hello).map_err(|why| {
            tracing::warn!(?peer, "refused a proxy stream: {why}");
            Status::invalid_argument(why)
        })?;
        let registered = self.shared.proxies.connect(&hello, peer).inspect_err(|s| {
            tracing::warn!(
                ?peer,
                node = hello.node,
                "refused a proxy stream: {}",
                s.message()
            );
        })?;
        // Two: the snapshot being read and the next one; a proxy that reads no more
        // holds up only its own stream.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(serve_proxy(
            self.shared.clone(),
            hello,
            registered,
            peer,
            inbound,
            tx,
        ));
        let mut response = Response::new(ReceiverStream::new(rx));
        let interval = self.shared.report_interval.as_millis();
        if interval > 0 {
            response.metadata_mut().insert(
                weft_api::REPORT_INTERVAL_HEADER,
                tonic::metadata::MetadataValue::from(u64::try_from(interval).unwrap_or(u64::MAX)),
            );
        }
        Ok(response)
    }
}

/// One proxy's stream, until it closes, is replaced, or the server stops.
async fn serve_proxy(
    shared: Arc<Shared>,
    hello: Hello,
    registered: Registered,
    peer: Option<SocketAddr>,
    mut inbound: Streaming<ProxyMessage>,
    tx: mpsc::Sender<Result<Snapshot, Status>>,
) {
    let Registered {
        stream,
        mut replaced,
    } = registered;
    let node = hello.node.as_str();
    let sender = Sender {
        node,
        service: &hello.service,
    };
    let mut drops = DropLog::default();
    let mut has = module_set(&hello.modules);
    // The version the proxy serves or was last sent: never send it again.
    let mut serving = hello.version;
    // The version last sent on this stream: an ACK of another one restates what the
    // proxy served before it connected.
    let mut sent = None;
    let mut left = false;
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
                        sent = Some(version);
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
                    if let Err(why) = check_ack(&ack) {
                        break Some(Status::invalid_argument(why));
                    }
                    has = module_set(&ack.modules);
                    let listeners = ack.listeners.into_iter().map(|l| (l.name, l.address)).collect();
                    shared.proxies.update(node, stream, |v| {
                        v.applied = Some(ack.version);
                        v.listeners = listeners;
                        v.filters = ack.filters;
                        v.last = Some(Outcome { version: ack.version, result: "ack", error: None });
                    });
                    if sent == Some(ack.version) {
                        tracing::info!(node, version = ack.version, "proxy applied the snapshot");
                    } else {
                        tracing::debug!(node, version = ack.version, "proxy restated the version it serves");
                    }
                }
                Ok(Some(ProxyMessage { kind: Some(Kind::Nack(nack)) })) => {
                    has = module_set(&nack.modules);
                    let error = truncate_error(nack.error);
                    tracing::warn!(node, version = nack.version, error, "proxy refused the snapshot");
                    shared.proxies.update(node, stream, |v| {
                        v.last = Some(Outcome { version: nack.version, result: "nack", error: Some(error) });
                    });
                }
                Ok(Some(ProxyMessage { kind: Some(Kind::Report(report)) })) => {
                    // What a report holds never ends the stream: rows the server
                    // cannot use are dropped and counted, the rest kept.
                    let outcome = shared.stats.record(&sender, &report);
                    drops.note(node, outcome);
                }
                Ok(Some(ProxyMessage { kind: Some(Kind::Goodbye(_)) })) => {
                    left = true;
                    break None;
                }
                Ok(Some(_)) => break Some(Status::invalid_argument(
                    "after its Hello, a proxy sends only Ack, Nack, Report and Goodbye",
                )),
                Ok(None) => break None,
                Err(status) => {
                    tracing::debug!(node, "stream error: {status}");
                    break None;
                }
            },
            _ = &mut replaced => break Some(Status::aborted(
                "a newer stream from the same proxy replaced this one",
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
    shared.proxies.disconnect(node, stream, left);
    if left {
        tracing::info!(node, "proxy stopped and said goodbye; its node id is free");
    } else {
        tracing::info!(node, "proxy disconnected");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: &str) -> Hello {
        Hello {
            node: node.into(),
            service: "web".into(),
            instance: "i".repeat(32),
            ..Default::default()
        }
    }

    #[test]
    fn hellos_are_bounded() {
        assert_eq!(check_hello(&hello("web-1")), Ok(()));
        let mut h = hello("web-1");
        h.labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(
            check_hello(&h),
            Err("Hello.labels: 33 labels; at most 32".into())
        );
        let mut h = hello("web-1");
        h.labels
            .insert("zone".into(), "a".repeat(MAX_LABEL_LEN + 1));
        assert_eq!(
            check_hello(&h),
            Err("Hello.labels[zone]: 254 bytes; at most 253".into())
        );
        let mut h = hello("web-1");
        h.labels.insert("k".repeat(300), "a".into());
        assert_eq!(
            check_hello(&h),
            Err("Hello.labels key: 300 bytes; at most 253".into())
        );
        assert!(
            check_hello(&hello(""))
                .unwrap_err()
                .contains("must not be empty")
        );
        assert!(check_hello(&hello(&"n".repeat(254))).is_err());
        assert!(
            check_hello(&hello("web\x1b[2J"))
                .unwrap_err()
                .contains("control characters")
        );
        let mut h = hello("web-1");
        h.instance = "short".into();
        assert!(check_hello(&h).unwrap_err().starts_with("Hello.instance"));
        let mut h = hello("web-1");
        h.filters.insert("hello".into(), "not a sha".into());
        assert!(check_hello(&h).unwrap_err().contains("not a sha256"));
        h.filters.insert(
            "hello".into(),
            format!("{},{}", "a".repeat(64), "b".repeat(64)),
        );
        assert_eq!(check_hello(&h), Ok(()));
    }

    #[test]
    fn long_nack_reasons_are_cut_at_a_character() {
        let cut = truncate_error("é".repeat(MAX_ERROR_LEN));
        assert!(cut.len() <= MAX_ERROR_LEN + 6, "{}", cut.len());
        assert!(cut.ends_with(" [...]"));
        assert_eq!(truncate_error("short".into()), "short");
    }

    #[test]
    fn a_full_registry_forgets_the_node_gone_longest_once_released() {
        let limits = Limits {
            max_proxies: 2,
            node_hold: Duration::ZERO,
            ..Limits::default()
        };
        let registry = Registry::new(&limits);
        let a = registry.connect(&hello("a"), None).unwrap();
        let b = registry.connect(&hello("b"), None).unwrap();
        let full = registry.connect(&hello("c"), None).err().unwrap();
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        registry.disconnect("b", b.stream, false);
        registry.disconnect("a", a.stream, false);
        // b is gone longest: it makes room for c; a stays listed.
        registry.connect(&hello("c"), None).unwrap();
        let nodes: Vec<String> = registry.list().into_iter().map(|p| p.node).collect();
        assert_eq!(nodes, ["a", "c"]);
    }

    /// The Hello of another process with the same node id.
    fn other_process(node: &str) -> Hello {
        Hello {
            instance: "o".repeat(32),
            ..hello(node)
        }
    }

    #[test]
    fn the_same_instance_replaces_its_stream_and_another_waits_for_the_hold() {
        let limits = Limits {
            node_hold: Duration::from_secs(3600),
            ..Limits::default()
        };
        let registry = Registry::new(&limits);
        let mut first = registry.connect(&hello("web-1"), None).unwrap();
        let live = registry
            .connect(&other_process("web-1"), None)
            .err()
            .unwrap();
        assert_eq!(live.code(), tonic::Code::AlreadyExists);
        assert!(
            live.message().contains("connected now")
                && live.message().contains("give each proxy its own --node"),
            "{}",
            live.message()
        );
        // The same proxy, restarted on its state folder: its old stream is ended.
        let second = registry.connect(&hello("web-1"), None).unwrap();
        assert!(
            matches!(
                first.replaced.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ),
            "the old stream is ended"
        );
        registry.disconnect("web-1", first.stream, false);
        assert!(
            registry.list()[0].connected,
            "a stale stream changes nothing"
        );
        registry.disconnect("web-1", second.stream, false);
        let held = registry
            .connect(&other_process("web-1"), None)
            .err()
            .unwrap();
        assert_eq!(held.code(), tonic::Code::AlreadyExists);
        assert!(
            held.message().contains("until 0s ago")
                && held.message().contains("another --state-dir")
                && held.message().contains("may take it in 3600s")
                && !held.message().contains("give each proxy"),
            "{}",
            held.message()
        );
        // After a crash, the same instance takes it back during the hold.
        registry.connect(&hello("web-1"), None).unwrap();
    }

    #[test]
    fn a_goodbye_frees_the_node_id_at_once() {
        let limits = Limits {
            node_hold: Duration::from_secs(3600),
            ..Limits::default()
        };
        let registry = Registry::new(&limits);
        let first = registry.connect(&hello("web-1"), None).unwrap();
        registry.disconnect("web-1", first.stream, true);
        assert!(!registry.list()[0].connected);
        let other = registry.connect(&other_process("web-1"), None).unwrap();
        // The newcomer holds it now, as any proxy does.
        registry.disconnect("web-1", other.stream, false);
        let back = registry.connect(&hello("web-1"), None).err().unwrap();
        assert_eq!(back.code(), tonic::Code::AlreadyExists);
    }
}
