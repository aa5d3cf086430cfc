//! The registry of proxies that `GET /v1/proxies` shows: who holds each node id,
//! what each proxy said about itself and answered, and which stream may still speak
//! for it.
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
//! (a proxy restarted without its state folder) takes it after the hold. The number
//! of proxies kept is bounded too ([`crate::Limits::max_proxies`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tonic::Status;
use weft_api::{Ack, Hello};

use crate::{Limits, auth};

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

impl ProxyView {
    /// A proxy as its Hello describes it. What it serves counts only when it says it
    /// serves a version: a proxy with nothing applied has no filters to show.
    fn from_hello(hello: &Hello, peer: Option<SocketAddr>) -> Self {
        let serving = hello.version != 0;
        Self {
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
        }
    }
}

/// A registered stream: its number, and what ends it when a newer one replaces it.
pub(crate) struct Registered {
    pub stream: u64,
    pub replaced: oneshot::Receiver<()>,
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
    pub fn connect(&self, hello: &Hello, peer: Option<SocketAddr>) -> Result<Registered, Status> {
        let instance: [u8; 32] = Sha256::digest(hello.instance.as_bytes()).into();
        let mut inner = self.lock();
        self.admit(&mut inner, &hello.node, &instance)?;
        let (tx, replaced) = oneshot::channel();
        inner.next_stream += 1;
        let stream = inner.next_stream;
        inner.proxies.insert(
            hello.node.clone(),
            Entry {
                view: ProxyView::from_hello(hello, peer),
                stream,
                instance,
                live: Some(tx),
                ended: None,
                left: false,
            },
        );
        Ok(Registered { stream, replaced })
    }

    /// Whether `instance` may take `node`: its own node, a released one, or a new one
    /// when there is room (made by forgetting a released node if need be).
    fn admit(&self, inner: &mut Inner, node: &str, instance: &[u8; 32]) -> Result<(), Status> {
        let now = Instant::now();
        match inner.proxies.get(node) {
            Some(e) if !auth::same(&e.instance, instance) && !e.released(now, self.hold) => {
                Err(Status::already_exists(e.refusal(node, now, self.hold)))
            }
            Some(_) => Ok(()),
            None if inner.proxies.len() < self.max_proxies => Ok(()),
            None => self.make_room(inner, now),
        }
    }

    /// Forget the node disconnected longest, if it is released; refuse otherwise.
    fn make_room(&self, inner: &mut Inner, now: Instant) -> Result<(), Status> {
        let oldest = inner
            .proxies
            .iter()
            .filter(|(_, e)| e.released(now, self.hold))
            .min_by_key(|(_, e)| e.ended)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                inner.proxies.remove(&k);
                Ok(())
            }
            None => Err(Status::resource_exhausted(format!(
                "the config server keeps at most {} proxies and every one is \
                 connected or was recently; raise its --max-proxies",
                self.max_proxies
            ))),
        }
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

    /// The group of the live mesh config that selects the proxy, if any.
    pub fn placed(&self, node: &str, stream: u64, group: Option<usize>) {
        self.update(node, stream, |v| v.group = group);
    }

    /// The proxy serves `ack.version`, with these listeners and filters.
    pub fn acked(&self, node: &str, stream: u64, ack: Ack) {
        let listeners = ack
            .listeners
            .into_iter()
            .map(|l| (l.name, l.address))
            .collect();
        self.update(node, stream, |v| {
            v.applied = Some(ack.version);
            v.listeners = listeners;
            v.filters = ack.filters;
            v.last = Some(Outcome {
                version: ack.version,
                result: "ack",
                error: None,
            });
        });
    }

    /// The proxy refused `version` for `error`, and serves what it served before.
    pub fn nacked(&self, node: &str, stream: u64, version: u64, error: String) {
        self.update(node, stream, |v| {
            v.last = Some(Outcome {
                version,
                result: "nack",
                error: Some(error),
            });
        });
    }

    /// The stream ended; the node id stays bound to its instance for the hold,
    /// unless the proxy said Goodbye (`left`).
    pub fn disconnect(&self, node: &str, stream: u64, left: bool) {
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

    /// The service and labels of `node`, if its stream is live and bound to
    /// `instance` (the secret of that stream's Hello): who a request on the
    /// proxy's behalf outside its stream (a certificate) speaks for.
    pub fn live(
        &self,
        node: &str,
        instance: &str,
    ) -> Result<(String, BTreeMap<String, String>), Status> {
        let digest: [u8; 32] = Sha256::digest(instance.as_bytes()).into();
        let inner = self.lock();
        let Some(entry) = inner.proxies.get(node) else {
            return Err(Status::failed_precondition(format!(
                "node {node:?} has no Subscribe stream: subscribe first"
            )));
        };
        if !auth::same(&entry.instance, &digest) {
            return Err(Status::permission_denied(format!(
                "node {node:?} is held by another proxy process (another instance secret)"
            )));
        }
        if entry.live.is_none() {
            return Err(Status::failed_precondition(format!(
                "node {node:?} has no live Subscribe stream: subscribe first"
            )));
        }
        Ok((entry.view.service.clone(), entry.view.labels.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests::hello;

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
