//! The gRPC `Control` service: one stream per proxy, snapshots out, ACKs, NACKs and
//! traffic reports (kept by `stats`) in, each proxy kept in the `registry` that
//! `GET /v1/proxies` shows.
//!
//! A stream must carry the proxy token (`authorization: Bearer TOKEN` metadata); the
//! API token is refused here as the proxy token is refused by the API. Its first
//! message must be a Hello, within [`HELLO_TIMEOUT`], and what a proxy says about
//! itself is bounded (see `checks`).
//!
//! 1. [`ControlService::subscribe`] checks the token, reads and checks the Hello,
//!    and registers the proxy under its node id (see `registry` for who may hold one).
//! 2. [`serve_proxy`] sends the proxy each new version its group has, and records
//!    what the proxy answers, until the stream closes, is replaced, or the server
//!    stops.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weft_api::proxy_message::Kind;
use weft_api::{
    Ack, CertifyRequest, CertifyResponse, Control, ControlServer, Hello, MAX_MESSAGE_SIZE,
    MAX_PROXY_MESSAGE_SIZE, Module, Nack, ProxyMessage, Report, Snapshot,
};

use crate::checks::{check_ack, check_hello, module_set, truncate_error};
use crate::registry::Registered;
use crate::stats::{DropLog, Sender};
use crate::{Current, Published, Shared, auth};

/// A stream that says nothing is not a proxy; do not keep it.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where snapshots go to the proxy.
type Outbound = mpsc::Sender<Result<Snapshot, Status>>;

/// The `Control` service as routes to merge with the HTTP API on one port.
pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    let server = ControlServer::new(ControlService { shared })
        // Proxies say little; only snapshots, which carry modules, are large.
        .max_decoding_message_size(MAX_PROXY_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    tonic::service::Routes::new(server).into_axum_router()
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
        self.authorize(&request, peer, "Subscribe")?;
        let proven = request.extensions().get::<crate::tls::Proven>().cloned();
        let mut inbound = request.into_inner();
        let hello = read_hello(&mut inbound).await?;
        let registered = self.register(&hello, peer)?;
        // A stream that must prove its proxy's identity and does not gets nothing.
        let registered = crate::tls::admit(&self.shared, &hello, proven.as_ref(), registered)?;
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
        self.tell_report_interval(&mut response);
        Ok(response)
    }

    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        self.authorize(&request, peer, "Certify")?;
        crate::certify::certify(&self.shared, request.into_inner(), peer)
            .await
            .map(Response::new)
    }
}

impl ControlService {
    /// Whether the call `rpc` carries the proxy token, and if not, what it carries
    /// instead so the operator knows which token to give.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        peer: Option<SocketAddr>,
        rpc: &str,
    ) -> Result<(), Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth::bearer_matches(given, &self.shared.proxy_token) {
            return Ok(());
        }
        let why = if given.is_none() {
            format!("{rpc} needs the proxy token: send the metadata `authorization: Bearer TOKEN`")
        } else if auth::bearer_matches(given, &self.shared.token) {
            format!("this is the API token; {rpc} needs the proxy token")
        } else {
            "the proxy token is wrong".to_owned()
        };
        tracing::warn!(?peer, rpc, "refused a proxy's call: {why}");
        Err(Status::unauthenticated(why))
    }

    /// Check the Hello and take the node id it names.
    fn register(&self, hello: &Hello, peer: Option<SocketAddr>) -> Result<Registered, Status> {
        check_hello(hello).map_err(|why| {
            tracing::warn!(?peer, "refused a proxy stream: {why}");
            Status::invalid_argument(why)
        })?;
        self.shared.proxies.connect(hello, peer).inspect_err(|s| {
            tracing::warn!(
                ?peer,
                node = hello.node,
                "refused a proxy stream: {}",
                s.message()
            );
        })
    }

    /// Tell the proxy how often to report its traffic; it reports nothing without.
    fn tell_report_interval<T>(&self, response: &mut Response<T>) {
        let interval = self.shared.report_interval.as_millis();
        if interval > 0 {
            response.metadata_mut().insert(
                weft_api::REPORT_INTERVAL_HEADER,
                tonic::metadata::MetadataValue::from(u64::try_from(interval).unwrap_or(u64::MAX)),
            );
        }
    }
}

/// The stream's first message, which must be a Hello, within [`HELLO_TIMEOUT`].
async fn read_hello(inbound: &mut Streaming<ProxyMessage>) -> Result<Hello, Status> {
    match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no Hello within {HELLO_TIMEOUT:?}"
        ))),
        Ok(Err(status)) => Err(status),
        Ok(Ok(Some(ProxyMessage {
            kind: Some(Kind::Hello(hello)),
        }))) => Ok(hello),
        Ok(Ok(_)) => Err(Status::invalid_argument(
            "the first message of a Subscribe stream must be a Hello",
        )),
    }
}

/// How a proxy's stream ends.
enum End {
    /// The proxy closed it, or went away: there is no one to tell why.
    Closed,
    /// The proxy said Goodbye: it stopped cleanly, and its node id is free at once.
    Left,
    /// The server ends it, and tells the proxy why.
    Told(Status),
}

/// One proxy's stream, until it closes, is replaced, or the server stops.
async fn serve_proxy(
    shared: Arc<Shared>,
    hello: Hello,
    registered: Registered,
    peer: Option<SocketAddr>,
    mut inbound: Streaming<ProxyMessage>,
    tx: Outbound,
) {
    let Registered {
        stream,
        mut replaced,
    } = registered;
    let mut proxy = ProxyStream::new(&shared, &hello, stream);
    let mut published = shared.published.subscribe();
    let mut stop = shared.stop.clone();
    tracing::info!(
        node = hello.node,
        service = hello.service,
        ?peer,
        version = hello.version,
        agent = hello.agent,
        "proxy connected"
    );
    let end = loop {
        if let Break(end) = proxy.offer_current(&mut published, &tx).await {
            break end;
        }
        tokio::select! {
            changed = published.changed() => if changed.is_err() { break End::Closed },
            msg = inbound.message() => if let Break(end) = proxy.receive(msg) { break end },
            _ = &mut replaced => break End::Told(Status::aborted(
                "a newer stream from the same proxy replaced this one",
            )),
            _ = stop.wait_for(|s| *s) => {
                break End::Told(Status::unavailable("the config server is shutting down"))
            }
            () = tx.closed() => break End::Closed,
        }
    };
    proxy.end(end, &tx);
}

/// What the server knows of one proxy's stream while it lasts.
struct ProxyStream<'a> {
    shared: &'a Shared,
    hello: &'a Hello,
    node: &'a str,
    /// The registry's number for this stream: updates from a replaced stream are
    /// ignored.
    stream: u64,
    /// The modules the proxy says it keeps: a snapshot carries only the others.
    has: HashSet<String>,
    /// The version the proxy serves or was last sent: never send it again.
    serving: u64,
    /// The version last sent on this stream: an ACK of another one restates what
    /// the proxy served before it connected.
    sent: Option<u64>,
    /// The live version last looked at, so each is looked at once.
    seen: Option<u64>,
    drops: DropLog,
}

impl<'a> ProxyStream<'a> {
    fn new(shared: &'a Shared, hello: &'a Hello, stream: u64) -> Self {
        Self {
            shared,
            hello,
            node: &hello.node,
            stream,
            has: module_set(&hello.modules),
            serving: hello.version,
            sent: None,
            seen: None,
            drops: DropLog::default(),
        }
    }

    /// Look at the live version once: note the proxy's group, and send its snapshot
    /// unless the proxy serves it already.
    async fn offer_current(
        &mut self,
        published: &mut watch::Receiver<Arc<Published>>,
        tx: &Outbound,
    ) -> ControlFlow<End> {
        let current = published.borrow_and_update().current.clone();
        let Some(current) = current else {
            return Continue(());
        };
        let version = current.version.version;
        if self.seen == Some(version) {
            return Continue(());
        }
        self.seen = Some(version);
        let group = current.mesh.select(&self.hello.service, &self.hello.labels);
        self.shared.proxies.placed(self.node, self.stream, group);
        match group {
            None => {
                let node = self.node;
                tracing::info!(
                    node,
                    version,
                    "no group of the mesh config selects this proxy"
                );
                Continue(())
            }
            Some(_) if version == self.serving => Continue(()),
            Some(group) => self.send(&current, group, tx).await,
        }
    }

    /// Send the snapshot of `current` for `group`.
    async fn send(&mut self, current: &Current, group: usize, tx: &Outbound) -> ControlFlow<End> {
        let snapshot = match snapshot_for(self.shared, current, group, &self.has).await {
            Ok(snapshot) => snapshot,
            Err(status) => return Break(End::Told(status)),
        };
        let (version, modules) = (snapshot.version, snapshot.modules.len());
        if tx.send(Ok(snapshot)).await.is_err() {
            return Break(End::Closed);
        }
        self.serving = version;
        self.sent = Some(version);
        let node = self.node;
        tracing::info!(node, version, group, modules, "snapshot sent");
        Continue(())
    }

    /// One message from the proxy, or the end of its side of the stream.
    fn receive(&mut self, msg: Result<Option<ProxyMessage>, Status>) -> ControlFlow<End> {
        let kind = match msg {
            Ok(Some(ProxyMessage { kind: Some(kind) })) => kind,
            Ok(Some(ProxyMessage { kind: None })) => return Break(Self::unexpected()),
            Ok(None) => return Break(End::Closed),
            Err(status) => {
                let node = self.node;
                tracing::debug!(node, "stream error: {status}");
                return Break(End::Closed);
            }
        };
        match kind {
            Kind::Ack(ack) => return self.acked(ack),
            Kind::Nack(nack) => self.nacked(nack),
            Kind::Report(report) => self.reported(&report),
            Kind::Goodbye(_) => return Break(End::Left),
            Kind::Hello(_) => return Break(Self::unexpected()),
        }
        Continue(())
    }

    fn unexpected() -> End {
        End::Told(Status::invalid_argument(
            "after its Hello, a proxy sends only Ack, Nack, Report and Goodbye",
        ))
    }

    /// The proxy applied a version (or restates the one it served before it
    /// connected).
    fn acked(&mut self, ack: Ack) -> ControlFlow<End> {
        if let Err(why) = check_ack(&ack) {
            return Break(End::Told(Status::invalid_argument(why)));
        }
        self.has = module_set(&ack.modules);
        let (node, version) = (self.node, ack.version);
        self.shared.proxies.acked(node, self.stream, ack);
        if self.sent == Some(version) {
            tracing::info!(node, version, "proxy applied the snapshot");
        } else {
            tracing::debug!(node, version, "proxy restated the version it serves");
        }
        Continue(())
    }

    /// The proxy refused a version, and serves what it served before.
    fn nacked(&mut self, nack: Nack) {
        self.has = module_set(&nack.modules);
        let error = truncate_error(nack.error);
        let (node, version) = (self.node, nack.version);
        tracing::warn!(node, version, error, "proxy refused the snapshot");
        self.shared
            .proxies
            .nacked(node, self.stream, version, error);
    }

    /// What a report holds never ends the stream: rows the server cannot use are
    /// dropped and counted, the rest kept.
    fn reported(&mut self, report: &Report) {
        let sender = Sender {
            node: self.node,
            service: &self.hello.service,
        };
        let outcome = self.shared.stats.record(&sender, report);
        self.drops.note(self.node, outcome);
    }

    /// Tell the proxy why its stream ends, if the server ends it, and let its node
    /// id go (at once after a Goodbye, after the hold otherwise).
    fn end(self, end: End, tx: &Outbound) {
        let node = self.node;
        let left = matches!(end, End::Left);
        if let End::Told(status) = end {
            tracing::info!(node, "ending the stream: {}", status.message());
            // A proxy that reads nothing more does not get to hold this task.
            let _ = tx.try_send(Err(status));
        }
        self.shared.proxies.disconnect(node, self.stream, left);
        if left {
            tracing::info!(node, "proxy stopped and said goodbye; its node id is free");
        } else {
            tracing::info!(node, "proxy disconnected");
        }
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
    // Every module the proxy will run, held or sent: a proxy with trusted keys checks each.
    let (mesh_signature, module_signatures) = shared.signing.for_snapshot(&version.mesh, &needed);
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
        mesh_signature,
        module_signatures,
    })
}
