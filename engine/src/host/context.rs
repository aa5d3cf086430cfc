//! The `context` resource: the request's facts, its properties, its route, the
//! exchange settings a request hook may change, and the identities mutual TLS
//! proves (the one a filter requires of the upstream, and those that were proved).

use std::time::Duration;

use wasmtime::component::Resource;
use weft_config::spiffe;

use super::{HostState, nanos, wall_now};
use crate::bindings::types;
use crate::exchange::{ConnectionInfo, Phase};
use crate::limits::{MAX_ROUTE_NAME, MAX_SETTING};
use crate::resources::ContextRef;

fn connection(c: &ConnectionInfo, version: http::Version) -> types::Connection {
    types::Connection {
        peer_address: c.peer.to_string(),
        local_address: c.local.to_string(),
        tls: c.tls.as_ref().map(|t| types::TlsInfo {
            version: t.version.to_owned(),
            cipher: t.cipher.to_owned(),
            sni: t.sni.clone(),
            alpn: t.alpn.clone(),
            peer_identity: t.peer_identity.clone(),
        }),
        version: match version {
            http::Version::HTTP_10 | http::Version::HTTP_09 => types::HttpVersion::Http10,
            http::Version::HTTP_2 => types::HttpVersion::Http2,
            _ => types::HttpVersion::Http11,
        },
    }
}

impl types::HostContext for HostState {
    fn facts(&mut self, _: Resource<ContextRef>) -> types::Facts {
        let Some(ex) = self.exchange.as_deref() else {
            return types::Facts {
                request_id: 0,
                received_at: 0,
                elapsed: 0,
                attempt: 0,
                cluster: None,
                endpoint: None,
                connect_time: None,
                first_byte_time: None,
                route: None,
                connection: types::Connection {
                    peer_address: String::new(),
                    local_address: String::new(),
                    tls: None,
                    version: types::HttpVersion::Http11,
                },
            };
        };
        let ctx = &ex.ctx;
        types::Facts {
            request_id: ctx.id,
            // The wall clock is read when a filter asks, not for every request.
            received_at: wall_now().saturating_sub(nanos(ctx.received.elapsed())),
            elapsed: nanos(ctx.received.elapsed()),
            attempt: ctx.attempt,
            cluster: ctx.cluster.as_deref().map(str::to_owned),
            endpoint: ctx.endpoint.as_ref().map(|a| a.as_str().to_owned()),
            connect_time: ctx.connect_time.map(nanos),
            first_byte_time: ctx.first_byte_time.map(nanos),
            route: ctx.route.clone(),
            connection: connection(&ctx.conn, ex.request.parts.version),
        }
    }

    fn read_request_head(&mut self, _: Resource<ContextRef>) -> types::RequestHead {
        self.own_request_head()
    }

    fn get(&mut self, _: Resource<ContextRef>, key: String) -> Option<Vec<u8>> {
        self.ctx()?.property(&key).map(<[u8]>::to_vec)
    }

    fn set(
        &mut self,
        _: Resource<ContextRef>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), types::PropertyError> {
        match self.ctx() {
            Some(ctx) => ctx.set_property(&key, &value),
            None => Err(types::PropertyError::Full),
        }
    }

    fn remove(&mut self, _: Resource<ContextRef>, key: String) -> bool {
        self.ctx().is_some_and(|c| c.remove_property(&key))
    }

    fn set_route(&mut self, _: Resource<ContextRef>, mut name: String) {
        if let Some(ctx) = self.ctx() {
            if name.len() > MAX_ROUTE_NAME {
                let mut end = MAX_ROUTE_NAME;
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                name.truncate(end);
            }
            ctx.route = Some(name);
        }
    }

    fn grpc_status(&mut self, _: Resource<ContextRef>) -> Option<u32> {
        self.exchange.as_ref()?.ctx.grpc_status
    }

    fn configure(
        &mut self,
        _: Resource<ContextRef>,
        setting: types::ExchangeSetting,
    ) -> Result<(), types::SettingError> {
        let Some(ctx) = self.ctx() else {
            return Err(types::SettingError::TooLate);
        };
        // Once the request went upstream, its exchange settings no longer apply.
        if ctx.attempt > 0 {
            return Err(types::SettingError::TooLate);
        }
        let (slot, ns) = match setting {
            types::ExchangeSetting::Timeout(ns) => (&mut ctx.timeout, ns),
            types::ExchangeSetting::PerTryTimeout(ns) => (&mut ctx.per_try_timeout, ns),
        };
        let d = Duration::from_nanos(ns);
        if d.is_zero() || d > MAX_SETTING {
            return Err(types::SettingError::OutOfRange);
        }
        *slot = Some(d);
        Ok(())
    }

    fn require_upstream_identity(
        &mut self,
        _: Resource<ContextRef>,
        pattern: String,
    ) -> Result<(), types::SettingError> {
        let phase = self.phase;
        let Some(ctx) = self.ctx() else {
            return Err(types::SettingError::TooLate);
        };
        // A requirement must be in place before the first byte goes upstream: a
        // response hook of a local answer (attempt 0) is too late as well.
        if phase != Phase::Request || ctx.attempt > 0 {
            return Err(types::SettingError::TooLate);
        }
        if spiffe::check_pattern(&pattern).is_err() {
            return Err(types::SettingError::OutOfRange);
        }
        ctx.upstream_identity_required = Some(pattern.into_boxed_str());
        Ok(())
    }

    fn upstream_identity(&mut self, _: Resource<ContextRef>) -> Option<String> {
        // The proxy sets it per attempt; a request hook has no attempt to ask about.
        if self.phase == Phase::Request {
            return None;
        }
        let ex = self.exchange.as_deref()?;
        ex.ctx.upstream_identity.as_deref().map(str::to_owned)
    }

    fn local_identity(&mut self, _: Resource<ContextRef>) -> Option<String> {
        let ex = self.exchange.as_deref()?;
        let tls = ex.ctx.conn.tls.as_ref()?;
        tls.local_identity.as_deref().map(str::to_owned)
    }

    fn drop(&mut self, _: Resource<ContextRef>) -> wasmtime::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
