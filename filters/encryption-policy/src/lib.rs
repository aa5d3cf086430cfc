//! The built-in encryption policy: mutual TLS and SPIFFE identities, put to use.
//!
//! 1. **Inbound, who may call.** In `strict` mode a request whose client proved no
//!    identity with its certificate (`facts().connection.tls.peer-identity`) is
//!    refused: 403 `mutual TLS required`. Then the `rules`: a matching `deny` rule
//!    refuses (403 `caller not allowed`); once any `allow` rule exists, a request
//!    that matches none is refused too.
//! 2. **Inbound, who called.** With `forward_identity`, the application gets the
//!    caller's proven identity in that header, in Envoy's `x-forwarded-client-cert`
//!    form (`By=<this proxy's identity>;URI=<the caller's>`). A client's own copy of
//!    the header never gets through, whatever else the policy says.
//! 3. **Outbound.** A request whose host a `destinations` entry names may leave only
//!    over mutual TLS to an upstream that proves a matching identity
//!    (`context.require-upstream-identity`): the proxy sends nothing to any other.
//!
//! ```yaml
//! mode: strict                 # or permissive (the default)
//! rules:                       # optional; deny rules win
//!   - action: allow            # or deny
//!     principals: ["spiffe://bank.example/ns/trading/*"]   # optional: SPIFFE patterns
//!     paths: ["/orders", "/orders/*"]                      # optional: exact, or a prefix
//!     methods: [GET, POST]                                 # optional
//! destinations:                # optional
//!   - host: banking            # the request's host, port ignored, any case
//!     identity: spiffe://bank.example/ns/banking/sa/banking
//! forward_identity:            # optional
//!   header: x-forwarded-client-cert
//! ```
//!
//! A principal pattern is a SPIFFE ID, an ID prefix ending in `/*` (whole segments:
//! `spiffe://bank.example/ns/trading/*`), or `*`: any identity a caller proved. A
//! caller that proved none matches no principal; a rule without `principals` matches
//! every caller. Paths match without the query, after the proxy normalised them
//! (dot segments removed, slashes merged); `/orders/*` is every path under
//! `/orders/`. Put the filter first in the chain, before any filter that rewrites the
//! path or the host.
//!
//! Destinations match the host alone: the cluster a request goes to is chosen after
//! the request hooks (a router's `route` is its answer, and `facts().cluster` is set
//! only for the attempt), so a request hook cannot know it.
//!
//! `config: {}` asks for no hook at all: every request passes untouched.
//!
//! A refusal is a local 403 with a short text body, counted in
//! `denied_total{reason="mutual_tls_required"|"caller_not_allowed"}` and logged
//! with the caller's identity (cut at 256 bytes) and why.
//!
//! ```no_run
//! let policy: weft_filter_encryption_policy::EncryptionPolicy =
//!     weft_sdk::from_config(r#"{"mode":"strict"}"#)?;
//! # Ok::<(), String>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod rules;

use weft_sdk::header_rules::{is_token, settable};
use weft_sdk::metrics::Counter;
use weft_sdk::prelude::*;
use weft_sdk::{RequestHead, log, spiffe};

use rules::{Denial, Effect, Mode, PathPattern, Policy, Rule};

/// The encryption policy's configuration, and once initialised, its checked form.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
pub struct EncryptionPolicy {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    rules: Vec<RuleConfig>,
    #[serde(default)]
    destinations: Vec<DestinationConfig>,
    #[serde(default)]
    forward_identity: Option<ForwardConfig>,
    #[serde(skip)]
    policy: Policy,
    /// `(host, identity pattern)`: the host lower-cased, without brackets or a
    /// trailing dot.
    #[serde(skip)]
    outbound: Vec<(String, String)>,
    /// The forward header's name, lower-cased.
    #[serde(skip)]
    forward: Option<String>,
    #[serde(skip)]
    denied: Option<Counter>,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct RuleConfig {
    action: Effect,
    #[serde(default)]
    principals: Option<Vec<String>>,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    methods: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct DestinationConfig {
    host: String,
    identity: String,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct ForwardConfig {
    header: String,
}

/// Longest caller identity a log line carries.
const MAX_LOGGED: usize = 256;

/// A list that, when given, names at least one thing: `[]` would match nothing,
/// which is never what an operator meant by writing the key.
fn non_empty<T>(key: &str, list: Option<Vec<T>>) -> Result<Option<Vec<T>>, String> {
    match list {
        Some(l) if l.is_empty() => Err(format!("{key}: empty; leave it out to match any")),
        l => Ok(l),
    }
}

impl RuleConfig {
    fn check(&self, key: &str) -> Result<Rule, String> {
        let principals = non_empty(&format!("{key}.principals"), self.principals.clone())?;
        for (i, p) in principals.iter().flatten().enumerate() {
            spiffe::check_pattern(p).map_err(|e| {
                format!("{key}.principals[{i}]: {p:?} is not a SPIFFE ID or pattern: {e}")
            })?;
        }
        let paths = match non_empty(&format!("{key}.paths"), self.paths.clone())? {
            Some(ps) => Some(
                (ps.iter().enumerate())
                    .map(|(i, p)| {
                        PathPattern::parse(p).map_err(|e| format!("{key}.paths[{i}]: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        let methods = non_empty(&format!("{key}.methods"), self.methods.clone())?;
        for (i, m) in methods.iter().flatten().enumerate() {
            if !is_token(m) {
                return Err(format!("{key}.methods[{i}]: {m:?} is not an HTTP method"));
            }
        }
        Ok(Rule {
            effect: self.action,
            principals,
            paths,
            methods,
        })
    }
}

/// The host of a request's authority as destinations name it: no port, no IPv6
/// brackets, no trailing dot (`banking.` is `banking` to DNS).
pub fn host_of(authority: &str) -> &str {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// A destination's `host`, checked and made the form [`host_of`] gives.
fn check_host(key: &str, host: &str) -> Result<String, String> {
    let bare = match host.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| format!("{key}: {host:?} opens a bracket it does not close"))?,
        // One colon is a port; an IPv6 literal has at least two.
        None if host.matches(':').count() == 1 => {
            return Err(format!("{key}: {host:?}: give the host without a port"));
        }
        None => host,
    };
    let bare = bare.strip_suffix('.').unwrap_or(bare);
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._:".contains(&b);
    if bare.is_empty() || !bare.bytes().all(allowed) {
        return Err(format!("{key}: {host:?} is not a host name or address"));
    }
    Ok(bare.to_ascii_lowercase())
}

/// A value of `x-forwarded-client-cert`: as it is, or quoted when it holds a
/// character the header's syntax gives a meaning (Envoy quotes these the same way).
fn push_xfcc_value(out: &mut String, value: &str) {
    if !value.contains([',', ';', '=', '"', '\\', ' ']) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Envoy's `x-forwarded-client-cert` for a caller that proved `peer` to this proxy,
/// which presented `local`: `By=<local>;URI=<peer>`, or `URI=<peer>` alone when the
/// proxy presented no mesh identity.
pub fn xfcc(local: Option<&str>, peer: &str) -> String {
    let mut out = String::with_capacity(peer.len() + local.map_or(0, str::len) + 9);
    if let Some(by) = local {
        out.push_str("By=");
        push_xfcc_value(&mut out, by);
        out.push(';');
    }
    out.push_str("URI=");
    push_xfcc_value(&mut out, peer);
    out
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The identity the client proved with its certificate, if any.
fn caller_identity(ctx: &Context) -> Option<String> {
    let tls = ctx.facts().connection.tls?;
    tls.peer_identity.filter(|id| !id.is_empty())
}

impl EncryptionPolicy {
    fn check(&mut self) -> Result<(), String> {
        let rules = (self.rules.iter().enumerate())
            .map(|(i, r)| r.check(&format!("rules[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        self.policy = Policy {
            mode: self.mode,
            rules,
        };
        for (i, d) in self.destinations.iter().enumerate() {
            let host = check_host(&format!("destinations[{i}].host"), &d.host)?;
            if let Some(j) = self.outbound.iter().position(|(h, _)| *h == host) {
                return Err(format!(
                    "destinations[{i}].host: {:?} is named already by destinations[{j}]",
                    d.host
                ));
            }
            spiffe::check_pattern(&d.identity).map_err(|e| {
                format!(
                    "destinations[{i}].identity: {:?} is not a SPIFFE ID or pattern: {e}",
                    d.identity
                )
            })?;
            self.outbound.push((host, d.identity.clone()));
        }
        if let Some(f) = &self.forward_identity {
            let name = f.header.to_ascii_lowercase();
            if !settable(&name) {
                return Err(format!(
                    "forward_identity.header: {:?} is not a header a filter may set",
                    f.header
                ));
            }
            self.forward = Some(name);
        }
        Ok(())
    }

    /// Whether a hook is needed at all: without rules, strict mode, destinations or a
    /// forward header, the filter has nothing to do.
    fn active(&self) -> bool {
        self.policy.enforces() || !self.outbound.is_empty() || self.forward.is_some()
    }

    /// The identity pattern the upstream of a request for `authority` must prove.
    pub fn destination(&self, authority: Option<&str>) -> Option<&str> {
        let host = host_of(authority?);
        (self.outbound.iter())
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, identity)| identity.as_str())
    }

    /// The 403, counted and logged.
    fn deny(&self, denial: Denial, caller: Option<&str>) -> Action {
        if let Some(denied) = &self.denied {
            // A failed count is the proxy's to report; the refusal stands.
            let _ = denied.inc(&[denial.label()]);
        }
        let why = match denial {
            Denial::MutualTlsRequired => "strict mode, no identity proven".to_owned(),
            Denial::DeniedBy(i) => format!("rules[{i}] denies it"),
            Denial::NoAllowMatched => "no allow rule matches".to_owned(),
        };
        // Quoted, so that whatever a certificate names reads as one value.
        let caller = caller.map_or_else(
            || "none".to_owned(),
            |c| format!("{:?}", cut(c, MAX_LOGGED)),
        );
        log::info(&format!(
            "denied: {}: caller {caller} ({why})",
            denial.message()
        ));
        Action::Respond(LocalResponse::new(403).text(format!("{}\n", denial.message())))
    }

    /// Hand the application the caller's identity, and never a client's claim of one.
    fn forward(
        &self,
        req: &Request,
        ctx: &Context,
        head: &RequestHead,
        header: &str,
        caller: Option<&str>,
    ) {
        let sent = caller.is_some_and(|peer| {
            let value = xfcc(ctx.local_identity().as_deref(), peer);
            // Replaces every value a client sent.
            req.set_header(header, &value).is_ok()
        });
        // No identity, or one the proxy refused as a header value: no header at all.
        if !sent && head.header_bytes(header).is_some() {
            req.remove_header(header);
        }
    }
}

impl Filter for EncryptionPolicy {
    fn init(&mut self) -> Result<(), String> {
        self.check()?;
        if self.policy.enforces() {
            let counter = Counter::define(
                "denied_total",
                "Requests the encryption policy refused, by reason.",
                &["reason"],
            )
            .map_err(|e| format!("cannot define the metric denied_total: {e:?}"))?;
            self.denied = Some(counter);
        }
        Ok(())
    }

    fn interest(&self) -> Interest {
        if !self.active() {
            return Interest::NONE;
        }
        Interest::REQUEST.with_request_headers(self.forward.iter())
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        let head = req.head();
        let caller = if self.policy.enforces() || self.forward.is_some() {
            caller_identity(ctx)
        } else {
            None
        };
        if let Err(denial) =
            (self.policy).decide(caller.as_deref(), head.method(), head.path_only())
        {
            return self.deny(denial, caller.as_deref());
        }
        if let Some(header) = &self.forward {
            self.forward(req, ctx, &head, header, caller.as_deref());
        }
        if let Some(identity) = self.destination(head.authority())
            && let Err(e) = ctx.require_upstream_identity(identity)
        {
            // Checked at init, and this is a request hook: should the proxy refuse all
            // the same, the request must not leave unprotected.
            log::error(&format!(
                "the proxy refused to require {identity:?} of the upstream: {e:?}"
            ));
            return Action::respond(500, "cannot require the upstream's identity\n");
        }
        Action::Continue
    }
}

weft_sdk::export!(EncryptionPolicy);

#[cfg(test)]
mod tests;
