//! The built-in router: picks the upstream cluster of a request by path, method,
//! headers and query, splits traffic by weight, and rewrites path prefixes and hosts.
//! The first matching route wins; no match answers 404.

use regex_lite::Regex;
use weft_sdk::prelude::*;
use weft_sdk::random;

/// The router's configuration: its routes, in order.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Router {
    routes: Vec<Route>,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Route {
    #[serde(default, rename = "match")]
    matches: Match,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    split: Vec<Split>,
    #[serde(default)]
    rewrite: Option<Rewrite>,
    /// Sum of split weights, set in init.
    #[serde(skip)]
    total_weight: u64,
}

#[derive(Default, Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Match {
    #[serde(default)]
    path: Option<PathMatch>,
    #[serde(default)]
    method: Option<Methods>,
    #[serde(default)]
    headers: Vec<ValueMatch>,
    #[serde(default)]
    query: Vec<ValueMatch>,
}

#[derive(Deserialize)]
#[serde(
    crate = "weft_sdk::serde",
    rename_all = "lowercase",
    deny_unknown_fields
)]
enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(#[serde(with = "regex_serde")] Regex),
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", untagged)]
enum Methods {
    One(String),
    Many(Vec<String>),
}

impl Methods {
    fn contains(&self, method: &str) -> bool {
        match self {
            Methods::One(m) => m.eq_ignore_ascii_case(method),
            Methods::Many(ms) => ms.iter().any(|m| m.eq_ignore_ascii_case(method)),
        }
    }
}

/// A header or query parameter condition: `exact`, `regex` or `present`.
#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct ValueMatch {
    name: String,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default, with = "regex_serde::option")]
    regex: Option<Regex>,
    #[serde(default)]
    present: Option<bool>,
}

impl ValueMatch {
    fn matches(&self, value: Option<&str>) -> bool {
        match (value, &self.exact, &self.regex, self.present) {
            (v, None, None, Some(present)) => v.is_some() == present,
            (Some(v), Some(exact), _, _) => v == exact,
            (Some(v), None, Some(re), _) => re.is_match(v),
            (Some(_), None, None, None) => true,
            (None, ..) => false,
        }
    }

    fn check(&self) -> Result<(), String> {
        let set = [
            self.exact.is_some(),
            self.regex.is_some(),
            self.present.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(format!(
                "{:?}: give one of exact, regex, present",
                self.name
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Split {
    cluster: String,
    weight: u32,
}

#[derive(Deserialize)]
#[serde(crate = "weft_sdk::serde", deny_unknown_fields)]
struct Rewrite {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    host: Option<String>,
}

mod regex_serde {
    use regex_lite::Regex;
    use weft_sdk::serde::{Deserialize, Deserializer, de::Error};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Regex, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s).map_err(|e| D::Error::custom(format!("invalid regex {s:?}: {e}")))
    }

    pub mod option {
        use super::*;
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regex>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

impl Route {
    fn check(&mut self) -> Result<(), String> {
        match (&self.cluster, self.split.is_empty()) {
            (Some(_), false) => return Err("give either cluster or split, not both".into()),
            (None, true) => return Err("give a cluster or a split".into()),
            _ => {}
        }
        self.total_weight = self.split.iter().map(|s| u64::from(s.weight)).sum();
        if !self.split.is_empty() && self.total_weight == 0 {
            return Err("split weights add up to 0".into());
        }
        if let Some(Rewrite {
            prefix: Some(p), ..
        }) = &self.rewrite
        {
            if !matches!(self.matches.path, Some(PathMatch::Prefix(_))) {
                return Err("rewrite.prefix needs a path prefix match".into());
            }
            if !p.starts_with('/') {
                return Err(format!("rewrite.prefix {p:?} must start with /"));
            }
        }
        if let Some(PathMatch::Exact(p) | PathMatch::Prefix(p)) = &self.matches.path {
            if !p.starts_with('/') {
                return Err(format!("path {p:?} must start with /"));
            }
        }
        for m in self.matches.headers.iter().chain(&self.matches.query) {
            m.check()?;
        }
        Ok(())
    }

    fn matches(&self, req: &Request, path: &str, query: Option<&str>) -> bool {
        let m = &self.matches;
        let path_ok = match &m.path {
            None => true,
            Some(PathMatch::Exact(p)) => path == p,
            Some(PathMatch::Prefix(p)) => path.starts_with(p.as_str()),
            Some(PathMatch::Regex(re)) => re.is_match(path),
        };
        if !path_ok {
            return false;
        }
        if let Some(methods) = &m.method {
            if !methods.contains(&req.method()) {
                return false;
            }
        }
        if !m
            .headers
            .iter()
            .all(|h| h.matches(req.header(&h.name).as_deref()))
        {
            return false;
        }
        m.query
            .iter()
            .all(|q| q.matches(query_param(query, &q.name).as_deref()))
    }

    fn cluster(&self) -> &str {
        if let Some(c) = &self.cluster {
            return c;
        }
        let mut pick = random::u64() % self.total_weight;
        for s in &self.split {
            let w = u64::from(s.weight);
            if pick < w {
                return &s.cluster;
            }
            pick -= w;
        }
        &self.split[self.split.len() - 1].cluster
    }
}

/// The first value of a query parameter, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len()
                && s.is_char_boundary(i + 1)
                && s.is_char_boundary(i + 3) =>
            {
                match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replace `prefix` at the start of `path` with `with`, without doubling slashes.
fn rewrite_prefix(path_and_query: &str, prefix: &str, with: &str) -> String {
    let rest = &path_and_query[prefix.len().min(path_and_query.len())..];
    match (with.ends_with('/'), rest.starts_with('/')) {
        (true, true) => format!("{with}{}", &rest[1..]),
        (false, false) if !rest.is_empty() && !rest.starts_with('?') => format!("{with}/{rest}"),
        _ => format!("{with}{rest}"),
    }
}

impl Filter for Router {
    fn init(&mut self) -> Result<(), String> {
        for (i, route) in self.routes.iter_mut().enumerate() {
            route.check().map_err(|e| format!("route {i}: {e}"))?;
        }
        Ok(())
    }

    fn on_request(&mut self, req: &Request) -> Action {
        let full = req.path();
        let (path, query) = match full.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (full.as_str(), None),
        };
        let Some(route) = self.routes.iter().find(|r| r.matches(req, path, query)) else {
            return Action::Respond(
                LocalResponse::new(404).text(format!("no route for {} {path}\n", req.method())),
            );
        };
        if let Some(rw) = &route.rewrite {
            if let (Some(with), Some(PathMatch::Prefix(prefix))) = (&rw.prefix, &route.matches.path)
            {
                if let Err(e) = req.set_path(&rewrite_prefix(&full, prefix, with)) {
                    return Action::respond(500, format!("router: cannot rewrite path: {e}\n"));
                }
            }
            if let Some(host) = &rw.host {
                if let Err(e) = req.set_authority(host) {
                    return Action::respond(500, format!("router: cannot rewrite host: {e}\n"));
                }
            }
        }
        Action::route(route.cluster())
    }
}

weft_sdk::export!(Router);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrites_keep_single_slashes_and_queries() {
        assert_eq!(
            rewrite_prefix("/old/page?x=1", "/old/", "/new/"),
            "/new/page?x=1"
        );
        assert_eq!(rewrite_prefix("/strip/inner", "/strip", "/"), "/inner");
        assert_eq!(rewrite_prefix("/strip", "/strip", "/"), "/");
        assert_eq!(rewrite_prefix("/api/v1", "/api", "/v2"), "/v2/v1");
        assert_eq!(rewrite_prefix("/api?q", "/api", "/v2"), "/v2?q");
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(
            query_param(Some("a=1&debug=1"), "debug").as_deref(),
            Some("1")
        );
        assert_eq!(
            query_param(Some("name=a%20b+c"), "name").as_deref(),
            Some("a b c")
        );
        assert_eq!(query_param(Some("flag"), "flag").as_deref(), Some(""));
        assert_eq!(query_param(None, "x"), None);
    }

    #[test]
    fn config_is_checked() {
        let parse = |json: &str| -> Result<(), String> {
            let mut r: Router = serde_json::from_str(json).map_err(|e| e.to_string())?;
            r.init()
        };
        assert!(parse(r#"{"routes":[{"cluster":"a"}]}"#).is_ok());
        assert!(parse(r#"{"routes":[{}]}"#).unwrap_err().contains("route 0"));
        assert!(parse(r#"{"routes":[{"split":[{"cluster":"a","weight":0}]}]}"#).is_err());
        assert!(parse(r#"{"routes":[{"cluster":"a","rewrite":{"prefix":"/"}}]}"#).is_err());
        assert!(parse(r#"{"routes":[{"match":{"path":{"regex":"("}},"cluster":"a"}]}"#).is_err());
        assert!(parse(r#"{"routes":[{"cluster":"a","extra":1}]}"#).is_err());
    }
}
