//! Upgrades (WebSocket and the like) and CONNECT tunnels: what the client asked for,
//! what the upstream answered, and the joined connection once both sides agree.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::cluster::upstream::{HeldConnection, Io};
use crate::cluster::{Attempt, Cluster};
use crate::conn::{ConnWatch, Watched};
use crate::error::ProxyError;
use crate::state::ListenerState;

/// An HTTP/1.1 upgrade (WebSocket and the like) or a CONNECT tunnel on its way: the
/// request goes through the chain as any other. An upgrade asks the upstream to
/// switch too, and a 101 answer joins the two connections; a CONNECT opens a
/// connection to an endpoint of the routed cluster, and the proxy's 200 joins it to
/// the client's.
pub(crate) struct Upgrade {
    /// The protocol the client asked to switch to; none for CONNECT.
    protocol: Option<HeaderValue>,
    client: hyper::upgrade::OnUpgrade,
    upstream: Option<Far>,
}

/// The upstream side of an upgrade.
enum Far {
    /// An upstream that answered 101, the protocol it switched to, and the
    /// connection's place in its cluster's count.
    Switched(hyper::upgrade::OnUpgrade, HeaderValue, HeldConnection),
    /// A tunnel's connection, counted in its cluster's connections while it lasts.
    Tunnel(Box<dyn Io>, HeldConnection),
}

impl Upgrade {
    /// The upgrade a request asks for: HTTP/1.1, `Connection: upgrade` and an
    /// `Upgrade` naming protocols the listener passes (only those are asked of the
    /// upstream; a request naming none is served as a plain one, its `Upgrade`
    /// removed with the other hop-by-hop headers); or CONNECT, when the listener
    /// allows it.
    pub(crate) fn of(req: &mut Request<Incoming>, state: &ListenerState) -> Option<Self> {
        if req.method() == http::Method::CONNECT {
            return state.allow_connect.then(|| Self {
                protocol: None,
                client: hyper::upgrade::on(req),
                upstream: None,
            });
        }
        if req.version() != http::Version::HTTP_11 {
            return None;
        }
        // One lookup for the common case, a request without `Upgrade`.
        let headers = req.headers();
        let asked = headers.get(UPGRADE)?;
        let asks = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        if !asks {
            return None;
        }
        let protocol = allowed_upgrades(asked, &state.upgrades)?;
        Some(Self {
            protocol: Some(protocol),
            client: hyper::upgrade::on(req),
            upstream: None,
        })
    }

    /// Whether this is a CONNECT tunnel.
    pub(crate) fn is_connect(&self) -> bool {
        self.protocol.is_none()
    }

    /// Ask the upstream to switch as the client asked.
    pub(crate) fn ask(&self, headers: &mut HeaderMap) {
        if let Some(protocol) = &self.protocol {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(UPGRADE, protocol.clone());
        }
    }

    /// Keep the upstream's side of a 101, which must switch to a protocol the
    /// client asked for.
    pub(crate) fn answered<B>(
        &mut self,
        resp: &mut http::Response<B>,
        cluster: &Cluster,
    ) -> Result<(), ProxyError> {
        let Some(asked) = &self.protocol else {
            return switched_unasked(resp, cluster);
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        let protocol = match resp.headers().get(UPGRADE) {
            None => asked.clone(),
            Some(to) => {
                let chosen = to.to_str().ok().map(|t| protocol_name(t.trim()));
                let offered = asked
                    .to_str()
                    .ok()
                    .into_iter()
                    .flat_map(|a| a.split(','))
                    .any(|a| {
                        chosen.is_some_and(|c| protocol_name(a.trim()).eq_ignore_ascii_case(c))
                    });
                if !offered {
                    return Err(ProxyError::upstream_protocol(
                        cluster.name(),
                        &format!("switched to {to:?}, which the client did not ask for"),
                    ));
                }
                to.clone()
            }
        };
        let on = hyper::upgrade::on(resp);
        self.upstream = Some(Far::Switched(on, protocol, cluster.hold_connection()));
        Ok(())
    }

    /// Open the tunnel of a CONNECT to an endpoint of `cluster`: the proxy's own 200,
    /// as the response hooks see it.
    pub(crate) async fn tunnel(
        &mut self,
        cluster: &Cluster,
        attempt: &mut Attempt,
    ) -> Result<http::response::Parts, ProxyError> {
        let (io, held) = cluster
            .tunnel(attempt)
            .await
            .map_err(|e| ProxyError::upstream(cluster.name(), &e))?;
        self.upstream = Some(Far::Tunnel(io, held));
        Ok(Response::new(()).into_parts().0)
    }

    /// If the client gets its 101 (an upgrade) or a 2xx (CONNECT), join the two
    /// sides until either closes or no byte moves either way for `idle_timeout`; one
    /// with no upstream behind it (a filter's own answer) cannot be honoured and
    /// becomes a 502.
    pub(crate) fn finish(self, resp: &mut Response<ProxyBody>, idle_timeout: Duration) {
        let joined = match &self.protocol {
            Some(_) => resp.status() == StatusCode::SWITCHING_PROTOCOLS,
            None => resp.status().is_success(),
        };
        if !joined {
            return;
        }
        let (upstream, held) = match (self.upstream, &self.protocol) {
            (Some(Far::Switched(upstream, protocol, held)), Some(_)) => {
                let headers = resp.headers_mut();
                headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(UPGRADE, protocol);
                (Either::Left(upstream), held)
            }
            (Some(Far::Tunnel(io, held)), None) => {
                // A 2xx answer to CONNECT has no body: the tunnel follows the head.
                *resp.body_mut() = ProxyBody::empty();
                resp.headers_mut().remove(http::header::CONTENT_LENGTH);
                (Either::Right(io), held)
            }
            _ => {
                *resp.status_mut() = StatusCode::BAD_GATEWAY;
                *resp.body_mut() = ProxyBody::full("upgrade failed\n");
                return;
            }
        };
        let client = self.client;
        tokio::spawn(async move {
            let _held = held;
            let Ok(client) = client.await else {
                return;
            };
            let upstream: Box<dyn Io> = match upstream {
                Either::Left(switched) => match switched.await {
                    Ok(io) => Box::new(hyper_util::rt::TokioIo::new(io)),
                    Err(_) => return,
                },
                Either::Right(io) => io,
            };
            // Every byte either way passes the upstream side: watching it is enough.
            let watch = Arc::new(ConnWatch::new(u32::MAX));
            let mut upstream = Watched::new(upstream, watch.clone());
            let mut client = hyper_util::rt::TokioIo::new(client);
            tokio::select! {
                ended = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                    if let Err(e) = ended {
                        tracing::debug!("upgraded connection ended: {e}");
                    }
                }
                () = watch.idle(idle_timeout) => {
                    tracing::debug!("upgraded connection closed: idle for {idle_timeout:?}");
                }
            }
        });
    }
}

/// The name of an upgrade protocol without its version: `websocket` of `WebSocket/13`.
fn protocol_name(p: &str) -> &str {
    p.split('/').next().unwrap_or(p).trim()
}

/// The protocols of a client's `Upgrade` that the listener passes, as the value to
/// ask the upstream for; none when it names none of them.
fn allowed_upgrades(asked: &HeaderValue, allowed: &[Box<str>]) -> Option<HeaderValue> {
    let text = asked.to_str().ok()?;
    let passes = |p: &&str| {
        let name = protocol_name(p);
        // Validation refuses `h2c` in the list; refused here as well, whatever it says.
        !name.eq_ignore_ascii_case("h2c") && allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    };
    let (mut total, mut kept) = (0, 0);
    for p in text.split(',').map(str::trim) {
        total += 1;
        kept += usize::from(passes(&p));
    }
    match kept {
        0 => None,
        // The usual case, one protocol that passes: sent on as it is.
        k if k == total => Some(asked.clone()),
        _ => {
            let list: Vec<&str> = text.split(',').map(str::trim).filter(passes).collect();
            HeaderValue::from_str(&list.join(", ")).ok()
        }
    }
}

/// A 101 to a request that asked for no switch (or for a CONNECT tunnel) is not
/// HTTP: an upstream error, never a tunnel.
pub(crate) fn switched_unasked<B>(
    resp: &http::Response<B>,
    cluster: &Cluster,
) -> Result<(), ProxyError> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ProxyError::upstream_protocol(
            cluster.name(),
            "answered 101 Switching Protocols to a request that asked for no upgrade",
        ));
    }
    Ok(())
}
