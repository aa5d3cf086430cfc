//! API-key authentication: a request passes only with a key the configuration knows.
//!
//! 1. The key is read from the `header` (default `x-api-key`), else from
//!    `Authorization: Bearer <key>`.
//! 2. Its SHA-256 is compared, in constant time, with that of every configured key
//!    (given as `key`, or already hashed as `sha256`, so the config need not hold
//!    the secret).
//! 3. A known key: the request goes on with its owner's name in the `owner_header`
//!    (default `x-api-key-owner`; any copy the client sent is removed first, so the
//!    application can trust it) and in the request property `api-key.owner`, for
//!    the filters after this one.
//! 4. No key, or an unknown one: a local 401 with a JSON body and a
//!    `www-authenticate` challenge; the upstream never sees the request.
//!
//! Every request is counted in `requests_total{result="allowed"|"missing"|"refused"}`,
//! exported as `weft_filter_api_key_requests_total`.
//!
//! ```yaml
//! header: x-api-key              # optional
//! owner_header: x-api-key-owner  # optional
//! realm: api                     # optional: the challenge's realm
//! keys:
//!   - { owner: alice, key: "alice-secret-1" }
//!   - { owner: bob, sha256: "<64 hex digits: sha256 of bob's key>" }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use weft_sdk::header_rules::{is_token, settable};
use weft_sdk::metrics::Counter;
use weft_sdk::prelude::*;
use weft_sdk::{RequestHead, log};

/// The request property that carries the owner of the request's key.
pub const OWNER_PROPERTY: &str = "api-key.owner";

/// The filter's configuration, and once initialised, its checked form.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
pub struct ApiKey {
    keys: Vec<KeyConfig>,
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_owner_header")]
    owner_header: String,
    #[serde(default = "default_realm")]
    realm: String,
    /// Each key's SHA-256 and its owner.
    #[serde(skip)]
    known: Vec<([u8; 32], String)>,
    #[serde(skip)]
    requests: Option<Counter>,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct KeyConfig {
    owner: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

fn default_header() -> String {
    "x-api-key".to_owned()
}

fn default_owner_header() -> String {
    "x-api-key-owner".to_owned()
}

fn default_realm() -> String {
    "api".to_owned()
}

/// What a request's credentials come to.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// A known key, owned by this name.
    Allowed(&'a str),
    /// No key at all.
    Missing,
    /// A key no entry knows.
    Refused,
}

impl Verdict<'_> {
    /// The `result` label this verdict is counted under: a fixed set, so a client
    /// cannot make the metric grow.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Allowed(_) => "allowed",
            Verdict::Missing => "missing",
            Verdict::Refused => "refused",
        }
    }
}

/// Printable ASCII without surrounding spaces: safe in a header value and a log line.
fn printable(s: &str) -> bool {
    !s.is_empty() && s.trim() == s && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// 64 hex digits as 32 bytes.
fn from_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |b: u8| char::from(b).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl KeyConfig {
    /// The key's SHA-256, checked.
    fn digest(&self, at: &str) -> Result<[u8; 32], String> {
        if !printable(&self.owner) || self.owner.len() > 256 {
            return Err(format!(
                "{at}.owner: {:?} must be 1 to 256 printable ASCII characters",
                self.owner
            ));
        }
        match (&self.key, &self.sha256) {
            (Some(key), None) if key.is_empty() => Err(format!("{at}.key: empty")),
            (Some(key), None) => Ok(sha256(key.as_bytes())),
            (None, Some(hex)) => {
                from_hex(hex).ok_or_else(|| format!("{at}.sha256: {hex:?} is not 64 hex digits"))
            }
            _ => Err(format!("{at}: give one of `key` and `sha256`")),
        }
    }
}

impl ApiKey {
    fn check(&mut self) -> Result<(), String> {
        if self.keys.is_empty() {
            return Err("keys: empty: no request could pass".to_owned());
        }
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            let digest = k.digest(&at)?;
            if let Some(j) = self.known.iter().position(|(d, _)| *d == digest) {
                return Err(format!("{at}: the same key as keys[{j}]"));
            }
            self.known.push((digest, k.owner.clone()));
        }
        self.header = self.header.to_ascii_lowercase();
        if !is_token(&self.header) || self.header == "authorization" {
            return Err(format!(
                "header: {:?} is not a header name (Authorization: Bearer is always read)",
                self.header
            ));
        }
        self.owner_header = self.owner_header.to_ascii_lowercase();
        // Authorization is the credential this filter reads and hides; never an owner.
        if !settable(&self.owner_header) || self.owner_header == "authorization" {
            return Err(format!(
                "owner_header: {:?} is not a header a filter may set",
                self.owner_header
            ));
        }
        if self.owner_header == self.header {
            return Err("owner_header: the same header as `header`".to_owned());
        }
        if !printable(&self.realm) || self.realm.contains(['"', '\\']) {
            return Err(format!("realm: {:?} cannot be quoted", self.realm));
        }
        Ok(())
    }

    /// The key the request presents: the configured header's, else a bearer token.
    pub fn presented<'h>(&self, head: &'h RequestHead) -> Option<&'h [u8]> {
        if let Some(key) = head.header_bytes(&self.header).filter(|k| !k.is_empty()) {
            return Some(key);
        }
        let auth = head.header_bytes("authorization")?;
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let (scheme, token) = auth.split_at_checked(7)?;
        (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
    }

    /// Who the request's key belongs to, if anyone.
    pub fn verdict(&self, head: &RequestHead) -> Verdict<'_> {
        let Some(key) = self.presented(head) else {
            return Verdict::Missing;
        };
        let digest = sha256(key);
        // Every entry is compared, so the time taken does not say which matched.
        let mut owner = None;
        for (known, name) in &self.known {
            if bool::from(known.ct_eq(&digest)) {
                owner = Some(name.as_str());
            }
        }
        owner.map_or(Verdict::Refused, Verdict::Allowed)
    }

    /// The 401: a JSON body, and the challenge RFC 6750 describes.
    pub fn unauthorized(&self, verdict: &Verdict<'_>) -> LocalResponse {
        let (challenge, body) = match verdict {
            Verdict::Refused => (
                format!("Bearer realm=\"{}\", error=\"invalid_token\"", self.realm),
                r#"{"error":"invalid_api_key","message":"the API key is not valid"}"#,
            ),
            _ => (
                format!("Bearer realm=\"{}\"", self.realm),
                r#"{"error":"missing_api_key","message":"an API key is required"}"#,
            ),
        };
        LocalResponse::new(401)
            .header("content-type", "application/json")
            .header("www-authenticate", challenge)
            .body(format!("{body}\n"))
    }

    fn count(&self, verdict: &Verdict<'_>) {
        if let Some(requests) = &self.requests {
            // A failed count is the proxy's to report; the verdict stands.
            let _ = requests.inc(&[verdict.label()]);
        }
    }
}

impl Filter for ApiKey {
    fn init(&mut self) -> Result<(), String> {
        self.check()?;
        let requests = Counter::define(
            "api_key_requests_total",
            "Requests the API-key filter saw, by result: allowed, missing or refused.",
            &["result"],
        )
        .map_err(|e| format!("cannot define the metric api_key_requests_total: {e:?}"))?;
        self.requests = Some(requests);
        Ok(())
    }

    fn interest(&self) -> Interest {
        let headers = [
            self.header.as_str(),
            "authorization",
            self.owner_header.as_str(),
        ];
        Interest::REQUEST.with_request_headers(headers)
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        let head = req.head();
        // Only this filter names the owner: a client's claim of one never passes.
        if head.header_bytes(&self.owner_header).is_some() {
            req.remove_header(&self.owner_header);
        }
        let verdict = self.verdict(&head);
        self.count(&verdict);
        let Verdict::Allowed(owner) = verdict else {
            return Action::Respond(self.unauthorized(&verdict));
        };
        if let Err(e) = req.set_header(&self.owner_header, owner) {
            // Checked at init; should the proxy refuse it all the same, the app must
            // not get the request without knowing whose it is.
            log::error(&format!("cannot set {}: {e:?}", self.owner_header));
            return Action::respond(500, "cannot name the API key's owner\n");
        }
        if let Err(e) = ctx.set(OWNER_PROPERTY, owner.as_bytes()) {
            // Later filters go without it; the application still has the header.
            log::warn(&format!("cannot set the property {OWNER_PROPERTY}: {e:?}"));
        }
        Action::Continue
    }
}

weft_sdk::export!(ApiKey);

#[cfg(test)]
mod tests;
