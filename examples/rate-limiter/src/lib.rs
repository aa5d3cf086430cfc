//! A token bucket per client, kept in the filter's shared state, so that every
//! instance of the filter in a proxy draws on the same buckets.
//!
//! 1. `on_request` names the client by `key`: the value of a header
//!    (`key: { header: x-client-id }`; a request without it counts against its peer
//!    address), or the peer's IP address (`key: peer`, the default).
//! 2. The client's bucket holds at most `capacity` tokens, starts full and gains one
//!    every `refill_every`. A request takes one: read the bucket, work out the new
//!    one, write it with compare-and-swap; when another instance wrote in between,
//!    read again.
//! 3. An empty bucket: a local 429 with a JSON body, `retry-after` (whole seconds
//!    until the next token), `x-ratelimit-limit` and `x-ratelimit-remaining: 0`.
//! 4. Otherwise the tokens left go into the request property `rate-limiter.remaining`,
//!    and `on_response` puts them on the response as `x-ratelimit-remaining`, beside
//!    `x-ratelimit-limit`: two hooks of one request may run on different instances,
//!    so what one hook learns reaches the other through the request's context.
//!
//! Every request is counted in `requests_total{result="allowed"|"limited"|"untracked"}`,
//! exported as `weft_filter_rate_limiter_requests_total`. A bucket is written with a
//! time to live of `capacity × refill_every`, after which it would be full again
//! anyway, so only clients seen that recently hold a key. `untracked` requests passed
//! without a bucket because the filter's state was full all the same (the proxy
//! keeps at most 10,000 keys per filter).
//!
//! ```yaml
//! capacity: 10           # the burst a client may send at once
//! refill_every: 100ms    # one token back per 100 ms: 10 requests a second
//! key: { header: x-api-key-owner }   # or: peer
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::time::Duration;

use sha2::{Digest, Sha256};
use weft_sdk::metrics::Counter;
use weft_sdk::prelude::*;
use weft_sdk::{RequestHead, log, state, time};

/// The request property that carries the tokens left in the client's bucket from
/// `on_request` to `on_response`.
pub const REMAINING_PROPERTY: &str = "rate-limiter.remaining";

/// Most compare-and-swap rounds one request makes before it gives up.
const MAX_ROUNDS: usize = 16;

/// Longest client name kept as it is in a state key (the proxy allows 256 bytes).
const MAX_PLAIN_KEY: usize = 200;

/// The filter's configuration.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
pub struct RateLimiter {
    capacity: u32,
    #[serde(deserialize_with = "weft_sdk::units::deserialize_duration")]
    refill_every: Duration,
    #[serde(default)]
    key: ClientKey,
    /// `refill_every` in nanoseconds, the unit of the proxy's clock.
    #[serde(skip)]
    every_ns: u64,
    #[serde(skip)]
    requests: Option<Counter>,
    /// Whether this instance has said that the state is full.
    #[serde(skip)]
    warned_full: bool,
}

/// What names a client.
#[derive(Deserialize, Default, Debug, PartialEq, Eq)]
#[serde(
    crate = "weft_sdk::serde",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ClientKey {
    /// The IP address the request came from.
    #[default]
    Peer,
    /// The value of this request header, else the peer's address.
    Header(String),
}

/// One client's bucket as the state keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Whole tokens in it.
    pub tokens: u32,
    /// When it last gained a token (or was full), on the proxy's monotonic clock in
    /// nanoseconds: the next token comes `refill_every` after it.
    pub since: u64,
}

/// What taking a token from a bucket came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// A token was taken: the bucket to write back, and the tokens left in it.
    Taken(Bucket),
    /// The bucket is empty: nanoseconds until its next token.
    Empty(u64),
}

impl Bucket {
    /// A full bucket, as a client's first request finds it.
    pub fn full(capacity: u32, now: u64) -> Self {
        Bucket {
            tokens: capacity,
            since: now,
        }
    }

    /// The bucket at `now`: one token more for each whole `every_ns` that passed.
    pub fn refilled(self, now: u64, capacity: u32, every_ns: u64) -> Self {
        // A reading from before `since` (a clock that restarted) counts as `since`.
        let since = self.since.min(now);
        let periods = (now - since) / every_ns;
        let tokens = u64::from(self.tokens).saturating_add(periods);
        if tokens >= u64::from(capacity) {
            // Full: time spent full earns nothing.
            return Bucket::full(capacity, now);
        }
        Bucket {
            tokens: u32::try_from(tokens).unwrap_or(capacity),
            since: since + periods * every_ns,
        }
    }

    /// Take one token at `now`, after refilling.
    pub fn take(self, now: u64, capacity: u32, every_ns: u64) -> Take {
        let bucket = self.refilled(now, capacity, every_ns);
        match bucket.tokens.checked_sub(1) {
            Some(tokens) => Take::Taken(Bucket { tokens, ..bucket }),
            None => Take::Empty(every_ns.saturating_sub(now.saturating_sub(bucket.since))),
        }
    }

    /// The 12 bytes the state keeps: tokens, then `since`, little-endian.
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.tokens.to_le_bytes());
        out[4..].copy_from_slice(&self.since.to_le_bytes());
        out
    }

    /// A bucket [`Bucket::encode`] wrote; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (tokens, since) = bytes.split_first_chunk::<4>()?;
        Some(Bucket {
            tokens: u32::from_le_bytes(*tokens),
            since: u64::from_le_bytes(since.try_into().ok()?),
        })
    }
}

/// What the filter decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Let through, with this many tokens left.
    Allowed(u32),
    /// Refused: the client may try again after this many whole seconds.
    Limited(u64),
    /// Let through without a bucket: the state had no room for a new one.
    Untracked,
}

impl Admission {
    /// The `result` label it is counted under: a fixed set, so a client cannot make
    /// the metric grow.
    pub fn label(&self) -> &'static str {
        match self {
            Admission::Allowed(_) => "allowed",
            Admission::Limited(_) => "limited",
            Admission::Untracked => "untracked",
        }
    }
}

/// The IP address of an `ip:port` peer address (each connection has its own port).
pub fn peer_ip(peer_address: &str) -> String {
    match peer_address.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().to_string(),
        Err(_) => peer_address.to_owned(),
    }
}

/// The state key of a client's bucket: its name, or the SHA-256 of a name too long
/// for a state key.
pub fn state_key(client: &str) -> String {
    if client.len() <= MAX_PLAIN_KEY {
        return format!("bucket/{client}");
    }
    let digest = Sha256::digest(client.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("bucket-sha256/{hex}")
}

/// Whole seconds to wait, rounded up, at least one, as `retry-after` says it.
fn whole_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000).max(1)
}

impl RateLimiter {
    fn check(&mut self) -> Result<(), String> {
        if self.capacity == 0 {
            return Err("capacity: 0 would refuse every request".to_owned());
        }
        self.every_ns = u64::try_from(self.refill_every.as_nanos()).unwrap_or(u64::MAX);
        if self.every_ns == 0 {
            return Err("refill_every: must be longer than zero".to_owned());
        }
        if let ClientKey::Header(name) = &mut self.key {
            *name = name.to_ascii_lowercase();
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(format!("key.header: {name:?} is not a header name"));
            }
        }
        Ok(())
    }

    /// The client a request counts against: `client/<header value>`, or
    /// `peer/<ip>` from the peer address `peer` gives (asked only when needed).
    pub fn client(&self, head: Option<&RequestHead>, peer: impl FnOnce() -> String) -> String {
        let named = match (&self.key, head) {
            (ClientKey::Header(name), Some(head)) => head.header(name).filter(|v| !v.is_empty()),
            _ => None,
        };
        match named {
            Some(value) => format!("client/{value}"),
            None => format!("peer/{}", peer_ip(&peer())),
        }
    }

    /// Take a token from `client`'s bucket at `now` (the proxy's monotonic clock, in
    /// nanoseconds), in the filter's shared state.
    pub fn admit(&mut self, client: &str, now: u64) -> Admission {
        let key = state_key(client);
        for _ in 0..MAX_ROUNDS {
            let (bucket, version) = match state::get(&key) {
                Some(entry) => match Bucket::decode(&entry.value) {
                    Some(bucket) => (bucket, Some(entry.version)),
                    // Not ours to read: start over, replacing it.
                    None => (Bucket::full(self.capacity, now), Some(entry.version)),
                },
                None => (Bucket::full(self.capacity, now), None),
            };
            let next = match bucket.take(now, self.capacity, self.every_ns) {
                Take::Taken(next) => next,
                // Refusing writes nothing: the bucket did not change.
                Take::Empty(wait) => return Admission::Limited(whole_seconds(wait)),
            };
            // A bucket left alone for `ttl` would be full again, as a missing one is:
            // it may go, so idle clients do not fill the state.
            let ttl = self.refill_every.saturating_mul(self.capacity);
            match state::compare_and_swap_with_ttl(&key, version, &next.encode(), ttl) {
                Ok(Some(_)) => return Admission::Allowed(next.tokens),
                // Another instance wrote first: read what it wrote.
                Ok(None) => continue,
                Err(e) => return self.untracked(&e),
            }
        }
        // So many writers on one bucket that this one never got its turn: the client
        // is sending faster than the bucket could let it anyway.
        Admission::Limited(whole_seconds(self.every_ns))
    }

    fn untracked(&mut self, error: &state::StateError) -> Admission {
        if !self.warned_full {
            self.warned_full = true;
            log::warn(&format!(
                "cannot keep a new bucket ({error:?}): new clients pass unlimited"
            ));
        }
        Admission::Untracked
    }

    /// The 429 for a client that must wait `retry_after` seconds.
    pub fn limited(&self, retry_after: u64) -> LocalResponse {
        let body = format!(
            "{{\"error\":\"rate_limited\",\"message\":\"too many requests\",\"retry_after\":{retry_after}}}\n"
        );
        LocalResponse::new(429)
            .header("content-type", "application/json")
            .header("retry-after", retry_after.to_string())
            .header("x-ratelimit-limit", self.capacity.to_string())
            .header("x-ratelimit-remaining", "0")
            .body(body)
    }
}

/// The proxy's monotonic clock in nanoseconds.
fn now() -> u64 {
    u64::try_from(time::monotonic().as_nanos()).unwrap_or(u64::MAX)
}

impl Filter for RateLimiter {
    fn init(&mut self) -> Result<(), String> {
        self.check()?;
        let requests = Counter::define(
            "rate_limiter_requests_total",
            "Requests the rate limiter saw, by result: allowed, limited or untracked.",
            &["result"],
        )
        .map_err(|e| format!("cannot define the metric rate_limiter_requests_total: {e:?}"))?;
        self.requests = Some(requests);
        Ok(())
    }

    fn interest(&self) -> Interest {
        let named = match &self.key {
            ClientKey::Header(name) => vec![name.as_str()],
            ClientKey::Peer => Vec::new(),
        };
        Interest::REQUEST
            .with_request_headers(named)
            .with_response()
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        // The head is read only when a header names the client.
        let head = matches!(self.key, ClientKey::Header(_)).then(|| req.head());
        let client = self.client(head.as_ref(), || ctx.facts().connection.peer_address);
        let admission = self.admit(&client, now());
        if let Some(requests) = &self.requests {
            // A failed count is the proxy's to report; the decision stands.
            let _ = requests.inc(&[admission.label()]);
        }
        match admission {
            Admission::Allowed(remaining) => {
                if let Err(e) = ctx.set(REMAINING_PROPERTY, remaining.to_string().as_bytes()) {
                    // The response goes without the header; the limit still holds.
                    log::warn(&format!("cannot set {REMAINING_PROPERTY}: {e:?}"));
                }
                Action::Continue
            }
            Admission::Limited(retry_after) => Action::Respond(self.limited(retry_after)),
            Admission::Untracked => Action::Continue,
        }
    }

    fn on_response(&mut self, resp: &Response, ctx: &Context) -> ResponseAction {
        // Another filter may have written the property: only a number is passed on.
        let remaining = ctx.get(REMAINING_PROPERTY).and_then(|v| {
            let text = String::from_utf8(v).ok()?;
            text.parse::<u32>().ok()
        });
        if let Some(remaining) = remaining {
            // Both names are plain and the values digits: the proxy takes them.
            let _ = resp.set_header("x-ratelimit-limit", &self.capacity.to_string());
            let _ = resp.set_header("x-ratelimit-remaining", &remaining.to_string());
        }
        ResponseAction::Continue
    }
}

weft_sdk::export!(RateLimiter);

#[cfg(test)]
mod tests;
