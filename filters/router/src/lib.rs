//! The built-in router: picks the upstream cluster of a request by path, method,
//! headers and query, splits traffic by weight, and rewrites path prefixes and hosts.
//!
//! 1. Routes are tried in order; the first whose conditions all hold wins.
//! 2. The winning route's `rewrite` (if any) changes the path and the authority.
//! 3. The request goes to the route's `cluster`, or to one of its `split` clusters
//!    picked at random in proportion to the weights.
//! 4. No route matches: a local 404 naming the method and path; with
//!    `no_match: continue`, the request goes on down the chain instead, to the
//!    listener's `default_cluster` (or the proxy's own 404 `no route` without one).
//!
//! Every cluster a route names (`cluster`, each `split` entry, weight 0 included) is
//! declared to the proxy, which refuses a configuration naming a cluster the mesh
//! does not have, at the route's key.
//!
//! ```yaml
//! no_match: not-found              # or: continue
//! routes:
//!   - name: api                    # optional: the route's name in logs and metrics
//!     timeout: 5s                  # optional: the request's overall timeout here
//!     match:
//!       path: { prefix: /api }     # or { exact: /a }, or { regex: "^/u/[0-9]+$" }
//!       method: GET                # or [GET, HEAD]
//!       headers: [{ name: x-user, exact: alice }]   # or regex, or present: true|false
//!       query: [{ name: debug, exact: "1" }]
//!     cluster: web                 # or split: [{ cluster: v1, weight: 80 }, ...]
//!     rewrite: { prefix: /, host: web.internal }
//! ```
//!
//! Paths match without their query string. A `prefix` is a plain string prefix (`/api`
//! also matches `/apis`; write `/api/` to mean the folder). Header and query conditions
//! look at the first value; query names and values are percent-decoded first.
//!
//! ```no_run
//! let router: weft_filter_router::Router = weft_sdk::from_config(
//!     r#"{"routes":[{"match":{"path":{"prefix":"/"}},"cluster":"web"}]}"#,
//! )?;
//! # Ok::<(), String>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::time::Duration;

use regex_lite::Regex;
use weft_sdk::prelude::*;
use weft_sdk::serde::de::{self, Deserializer, SeqAccess, Visitor};
use weft_sdk::{RequestHead, random};

/// The router's configuration (its routes, in order), and once initialised, the
/// compiled form the request path uses.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
pub struct Router {
    routes: Vec<RouteConfig>,
    #[serde(default)]
    no_match: NoMatch,
    #[serde(skip)]
    compiled: Vec<Route>,
    /// Every header a route looks at, so one host call brings them all.
    #[serde(skip)]
    header_names: Vec<String>,
}

/// What a request that no route matches gets.
#[derive(Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(crate = "weft_sdk::serde", rename_all = "kebab-case")]
enum NoMatch {
    /// A local 404 naming the method and path.
    #[default]
    NotFound,
    /// On down the chain, to the listener's `default_cluster`.
    Continue,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct RouteConfig {
    #[serde(default)]
    name: Option<String>,
    #[serde(
        default,
        deserialize_with = "weft_sdk::units::deserialize_optional_duration"
    )]
    timeout: Option<Duration>,
    #[serde(default, rename = "match")]
    matches: MatchConfig,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    split: Option<Vec<SplitConfig>>,
    #[serde(default)]
    rewrite: Option<RewriteConfig>,
}

#[derive(Default, Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct MatchConfig {
    #[serde(default)]
    path: Option<PathConfig>,
    #[serde(default, deserialize_with = "one_or_many")]
    method: Vec<String>,
    #[serde(default)]
    headers: Vec<ValueConfig>,
    #[serde(default)]
    query: Vec<ValueConfig>,
}

/// One of `exact`, `prefix`, `regex`.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct PathConfig {
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    regex: Option<String>,
}

/// A header or query parameter condition: one of `exact`, `regex`, `present`; with
/// none, the name only has to be there.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct ValueConfig {
    name: String,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    present: Option<bool>,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct SplitConfig {
    cluster: String,
    weight: u32,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct RewriteConfig {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

/// `method: GET` and `method: [GET, HEAD]` both work.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;

    impl<'de> Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a method or a list of methods")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(m) = seq.next_element::<String>()? {
                all.push(m);
            }
            Ok(all)
        }
    }

    d.deserialize_any(OneOrMany)
}

/// A route as the request path uses it: patterns compiled, names normalised.
struct Route {
    /// Named in the request's context for logs and telemetry.
    name: Option<String>,
    /// The request's overall timeout on this route.
    timeout: Option<Duration>,
    path: PathRule,
    /// Upper case; empty means any method.
    methods: Vec<String>,
    headers: Vec<ValueRule>,
    query: Vec<ValueRule>,
    target: Target,
    /// With a `prefix` path rule only.
    rewrite_prefix: Option<String>,
    rewrite_host: Option<String>,
}

enum PathRule {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

struct ValueRule {
    name: String,
    test: ValueTest,
}

enum ValueTest {
    Exact(String),
    Regex(Regex),
    Present(bool),
}

enum Target {
    Cluster(String),
    /// Clusters with their weights, and the weights' sum (never 0).
    Split(Vec<(String, u64)>, u64),
}

fn regex(what: &str, pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("{what}: invalid regex {pattern:?}: {e}"))
}

fn non_empty(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(())
}

impl ValueConfig {
    fn compile(&self, at: &str, lower_case_name: bool) -> Result<ValueRule, String> {
        non_empty(&format!("{at}.name"), &self.name)?;
        let test = match (&self.exact, &self.regex, self.present) {
            (Some(exact), None, None) => ValueTest::Exact(exact.clone()),
            (None, Some(pattern), None) => {
                ValueTest::Regex(regex(&format!("{at}.regex"), pattern)?)
            }
            (None, None, Some(present)) => ValueTest::Present(present),
            (None, None, None) => ValueTest::Present(true),
            _ => return Err(format!("{at}: give only one of exact, regex, present")),
        };
        let name = if lower_case_name {
            // The proxy's header names are lower case.
            self.name.to_ascii_lowercase()
        } else {
            self.name.clone()
        };
        Ok(ValueRule { name, test })
    }
}

impl ValueRule {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.test, value) {
            (ValueTest::Present(want), v) => v.is_some() == *want,
            (ValueTest::Exact(exact), Some(v)) => v == exact,
            (ValueTest::Regex(re), Some(v)) => re.is_match(v),
            (_, None) => false,
        }
    }
}

impl RouteConfig {
    /// Check the route and compile it; `at` names it in errors (`routes[2]`).
    fn compile(&self, at: &str) -> Result<Route, String> {
        let path = self.compile_path(at)?;
        let mut methods = Vec::with_capacity(self.matches.method.len());
        for (i, m) in self.matches.method.iter().enumerate() {
            non_empty(&format!("{at}.match.method[{i}]"), m)?;
            methods.push(m.to_ascii_uppercase());
        }
        let headers = (self.matches.headers.iter().enumerate())
            .map(|(i, h)| h.compile(&format!("{at}.match.headers[{i}]"), true))
            .collect::<Result<_, _>>()?;
        let query = (self.matches.query.iter().enumerate())
            .map(|(i, q)| q.compile(&format!("{at}.match.query[{i}]"), false))
            .collect::<Result<_, _>>()?;
        let target = self.compile_target(at)?;
        let (rewrite_prefix, rewrite_host) = self.compile_rewrite(at, &path)?;
        self.check_name_and_timeout(at)?;
        Ok(Route {
            name: self.name.clone(),
            timeout: self.timeout,
            path,
            methods,
            headers,
            query,
            target,
            rewrite_prefix,
            rewrite_host,
        })
    }

    /// `match.path`: at most one of `exact`, `prefix`, `regex`; none matches any path.
    fn compile_path(&self, at: &str) -> Result<PathRule, String> {
        Ok(match &self.matches.path {
            None => PathRule::Any,
            Some(PathConfig {
                exact: Some(p),
                prefix: None,
                regex: None,
            }) => {
                starts_with_slash(&format!("{at}.match.path.exact"), p)?;
                PathRule::Exact(p.clone())
            }
            Some(PathConfig {
                exact: None,
                prefix: Some(p),
                regex: None,
            }) => {
                starts_with_slash(&format!("{at}.match.path.prefix"), p)?;
                PathRule::Prefix(p.clone())
            }
            Some(PathConfig {
                exact: None,
                prefix: None,
                regex: Some(p),
            }) => PathRule::Regex(regex(&format!("{at}.match.path.regex"), p)?),
            Some(_) => {
                return Err(format!("{at}.match.path: give one of exact, prefix, regex"));
            }
        })
    }

    /// Exactly one of `cluster` and `split`; a split's weights must not all be 0, or
    /// no cluster could be picked.
    fn compile_target(&self, at: &str) -> Result<Target, String> {
        match (&self.cluster, &self.split) {
            (Some(_), Some(_)) => Err(format!("{at}: give either cluster or split, not both")),
            (None, None) => Err(format!("{at}: give a cluster or a split")),
            (Some(cluster), None) => {
                non_empty(&format!("{at}.cluster"), cluster)?;
                Ok(Target::Cluster(cluster.clone()))
            }
            (None, Some(split)) => {
                let mut choices = Vec::with_capacity(split.len());
                for (i, s) in split.iter().enumerate() {
                    non_empty(&format!("{at}.split[{i}].cluster"), &s.cluster)?;
                    choices.push((s.cluster.clone(), u64::from(s.weight)));
                }
                let total = choices.iter().map(|(_, w)| w).sum();
                if total == 0 {
                    return Err(format!("{at}.split: the weights add up to 0"));
                }
                Ok(Target::Split(choices, total))
            }
        }
    }

    /// `rewrite`: the new path prefix (only where a prefix matched, since that is what
    /// it replaces) and the new host.
    fn compile_rewrite(
        &self,
        at: &str,
        path: &PathRule,
    ) -> Result<(Option<String>, Option<String>), String> {
        let Some(rw) = &self.rewrite else {
            return Ok((None, None));
        };
        if let Some(with) = &rw.prefix {
            if !matches!(path, PathRule::Prefix(_)) {
                return Err(format!(
                    "{at}.rewrite.prefix: only a route with a match.path.prefix can rewrite it"
                ));
            }
            starts_with_slash(&format!("{at}.rewrite.prefix"), with)?;
            path_chars(&format!("{at}.rewrite.prefix"), with)?;
        }
        if let Some(host) = &rw.host {
            authority(&format!("{at}.rewrite.host"), host)?;
        }
        Ok((rw.prefix.clone(), rw.host.clone()))
    }

    /// The name goes into logs and metric labels, so it is bounded; the timeout must
    /// leave the request some time, and not hold it for days.
    fn check_name_and_timeout(&self, at: &str) -> Result<(), String> {
        if let Some(name) = &self.name {
            non_empty(&format!("{at}.name"), name)?;
            if name.len() > 128 {
                return Err(format!("{at}.name: longer than 128 bytes"));
            }
        }
        if self
            .timeout
            .is_some_and(|t| t.is_zero() || t > Duration::from_secs(24 * 3600))
        {
            return Err(format!(
                "{at}.timeout: give a duration above 0 and at most 24h"
            ));
        }
        Ok(())
    }
}

/// A host to send upstream: `host` or `host:port`, a DNS name, an IPv4 address or a
/// bracketed IPv6 address. Refused at load, a value that would break the request
/// head (CR, LF, NUL, spaces) never reaches one.
fn authority(what: &str, value: &str) -> Result<(), String> {
    let (host, port) = match value.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (!h.contains(':') || h.starts_with('[')) => {
            (h, Some(p))
        }
        _ => (value, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']').is_some_and(|ip| {
            !ip.is_empty()
                && ip
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: {value:?} is not a host name (host or host:port, letters, digits, - . _)"
        ))
    }
}

/// A path prefix: printable ASCII without spaces, as a request target allows.
fn path_chars(what: &str, path: &str) -> Result<(), String> {
    match path
        .bytes()
        .find(|b| !b.is_ascii_graphic() || matches!(b, b'#' | b'?'))
    {
        None => Ok(()),
        Some(b) => Err(format!(
            "{what}: {path:?} has a character a path cannot hold ({:?})",
            char::from(b)
        )),
    }
}

fn starts_with_slash(what: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{what} {path:?} must start with /"));
    }
    Ok(())
}

impl Route {
    fn matches(&self, head: &RequestHead, path: &str, query: Option<&str>) -> bool {
        let path_ok = match &self.path {
            PathRule::Any => true,
            PathRule::Exact(p) => path == p,
            PathRule::Prefix(p) => path.starts_with(p.as_str()),
            PathRule::Regex(re) => re.is_match(path),
        };
        if !path_ok {
            return false;
        }
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|want| want.eq_ignore_ascii_case(head.method()))
        {
            return false;
        }
        self.headers.iter().all(|h| h.matches(head.header(&h.name)))
            && self
                .query
                .iter()
                .all(|q| q.matches(query_param(query, &q.name).as_deref()))
    }

    fn cluster(&self) -> &str {
        match &self.target {
            Target::Cluster(c) => c,
            Target::Split(choices, total) => {
                let mut pick = random::u64() % total;
                for (cluster, weight) in choices {
                    if pick < *weight {
                        return cluster;
                    }
                    pick -= weight;
                }
                // Unreachable while `total` is the weights' sum; any choice is fine.
                choices.last().map_or("", |(c, _)| c.as_str())
            }
        }
    }
}

/// The first value of a query parameter, percent-decoded; `Some("")` for a bare
/// `?flag`.
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (!pair.is_empty() && decode(k) == name).then(|| decode(v))
    })
}

/// Percent- and `+`-decoding of a query component; borrows when there is nothing to
/// decode, which is the common case.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Replace `prefix` at the start of `path_and_query` with `with`, keeping the query,
/// and never making `//` at the seam nor gluing two segments together.
fn rewrite_prefix(path_and_query: &str, prefix: &str, with: &str) -> String {
    let rest = path_and_query.get(prefix.len()..).unwrap_or("");
    let mut out = String::with_capacity(with.len() + rest.len() + 1);
    out.push_str(with);
    match (with.ends_with('/'), rest.starts_with('/')) {
        (true, true) => out.push_str(&rest[1..]),
        (false, false) if !rest.is_empty() && !rest.starts_with('?') => {
            out.push('/');
            out.push_str(rest);
        }
        _ => out.push_str(rest),
    }
    out
}

impl Filter for Router {
    fn init(&mut self) -> Result<(), String> {
        if self.routes.is_empty() {
            return Err("routes: give at least one route".into());
        }
        self.compiled = (self.routes.iter().enumerate())
            .map(|(i, r)| r.compile(&format!("routes[{i}]")))
            .collect::<Result<_, _>>()?;
        for h in self.compiled.iter().flat_map(|r| &r.headers) {
            if !self.header_names.contains(&h.name) {
                self.header_names.push(h.name.clone());
            }
        }
        Ok(())
    }

    fn interest(&self) -> Interest {
        Interest::REQUEST.with_request_headers(&self.header_names)
    }

    fn clusters(&self) -> Vec<ClusterRef> {
        let mut named = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(c) = &r.cluster {
                named.push(ClusterRef::new(c, format!("routes[{i}].cluster")));
            }
            for (j, s) in r.split.iter().flatten().enumerate() {
                named.push(ClusterRef::new(
                    &s.cluster,
                    format!("routes[{i}].split[{j}].cluster"),
                ));
            }
        }
        named
    }

    fn on_request(&mut self, req: &Request, ctx: &Context) -> Action {
        // One host call: method, path and the headers the routes look at.
        let head = req.head();
        let full = head.path();
        let (path, query) = match full.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (full, None),
        };
        let Some(route) = (self.compiled.iter()).find(|r| r.matches(&head, path, query)) else {
            if self.no_match == NoMatch::Continue {
                return Action::Continue;
            }
            return Action::Respond(
                LocalResponse::new(404).text(format!("no route for {} {path}\n", head.method())),
            );
        };
        if let Some(name) = &route.name {
            ctx.set_route(name);
        }
        if let Some(timeout) = route.timeout
            && let Err(e) = ctx.set_timeout(timeout)
        {
            weft_sdk::log::warn(&format!(
                "router: the proxy refused the route's timeout: {e:?}"
            ));
        }
        // The rewrites were checked at init; should the proxy still refuse one, the
        // client learns that routing failed, the log learns why.
        if let (Some(with), PathRule::Prefix(prefix)) = (&route.rewrite_prefix, &route.path)
            && let Err(e) = req.set_path(&rewrite_prefix(full, prefix, with))
        {
            weft_sdk::log::error(&format!(
                "router: the proxy refused the rewritten path: {e}"
            ));
            return Action::respond(500, "routing failed\n");
        }
        if let Some(host) = &route.rewrite_host
            && let Err(e) = req.set_authority(host)
        {
            weft_sdk::log::error(&format!(
                "router: the proxy refused the rewritten host: {e}"
            ));
            return Action::respond(500, "routing failed\n");
        }
        Action::route(route.cluster())
    }
}

weft_sdk::export!(Router);

#[cfg(test)]
mod tests;
