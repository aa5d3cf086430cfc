//! `weft push`, `apply`, `status`, `rollback`: the config server's HTTP API from the
//! command line. Refusals print the server's reason and exit non-zero.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Which config server, and the token for writes.
#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// The config server.
    #[arg(long, env = "WEFT_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// API token for writes [default: the token file of a config server on this
    /// machine, if there is one].
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the API token from this file.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
}

impl ServerArgs {
    /// A server at `url` with this token.
    pub(crate) fn new(url: &str, token: &str) -> Self {
        Self {
            server: url.to_owned(),
            token: Some(token.to_owned()),
            token_file: None,
        }
    }

    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        if let Some(file) = &self.token_file {
            let t = std::fs::read_to_string(file)
                .with_context(|| format!("reading the token from {}", file.display()))?;
            return Ok(Some(t.trim().to_owned()));
        }
        // A server started on this machine with its defaults keeps its token here.
        let local = crate::paths::server_data_dir().join("token");
        Ok(std::fs::read_to_string(local)
            .ok()
            .map(|t| t.trim().to_owned()))
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut req = Request::builder().method(method.clone()).uri(&url);
        if let Some(token) = self.token()? {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let (body, content_type) = body.unwrap_or((Bytes::new(), "application/json"));
        let req = req
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .with_context(|| format!("{url:?} is not a valid URL"))?;
        let client = Client::builder(TokioExecutor::new()).build_http();
        let resp = tokio::time::timeout(Duration::from_secs(120), client.request(req))
            .await
            .with_context(|| format!("{method} {url}: no answer in 120 s"))?
            .with_context(|| format!("{method} {url}: cannot reach the config server"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).trim().to_owned()));
        if !status.is_success() {
            let path = path.split('?').next().unwrap_or(path);
            let reason = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            if status == StatusCode::UNAUTHORIZED {
                bail!(
                    "{method} {path}: refused ({status}): {reason}\n\
                     give the token with --token, --token-file or WEFT_TOKEN"
                );
            }
            bail!("{method} {path}: refused ({status}): {reason}");
        }
        Ok(value)
    }
}

pub(crate) fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

pub(crate) async fn push(server: &ServerArgs, file: &Path, name: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let v = server
        .call(
            Method::PUT,
            &format!("/v1/filters/{name}"),
            Some((bytes.into(), "application/wasm")),
        )
        .await?;
    let changed = v.get("changed").and_then(Value::as_bool).unwrap_or(true);
    let what = format!(
        "{name} sha256:{} ({} bytes)",
        text(&v, "sha256"),
        text(&v, "size")
    );
    match v.get("version").and_then(Value::as_u64) {
        Some(version) if changed => println!("pushed {what}: live as version {version}"),
        Some(version) => println!("{what} is already live in version {version}: nothing changed"),
        None => println!("pushed {what}; no mesh config applied yet"),
    }
    if let Some(note) = v.get("note").and_then(Value::as_str) {
        println!("note: {note}");
    }
    Ok(())
}

pub(crate) async fn apply(server: &ServerArgs, file: &Path) -> anyhow::Result<()> {
    let yaml = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    let query: String = url_encode(&name);
    let v = server
        .call(
            Method::PUT,
            &format!("/v1/mesh?file={query}"),
            Some((yaml.into(), "application/yaml")),
        )
        .await?;
    println!("applied {name}: version {}", text(&v, "version"));
    Ok(())
}

pub(crate) async fn rollback(server: &ServerArgs, version: u64) -> anyhow::Result<()> {
    let v = server
        .call(Method::POST, &format!("/v1/rollback/{version}"), None)
        .await?;
    println!(
        "rolled back to version {version}: now version {}",
        text(&v, "version")
    );
    Ok(())
}

pub(crate) async fn status(server: &ServerArgs, json: bool) -> anyhow::Result<()> {
    let proxies = server.call(Method::GET, "/v1/proxies", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&proxies)?);
        return Ok(());
    }
    println!("current version: {}", text(&proxies, "version"));
    let list = proxies
        .get("proxies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        println!("no proxy has connected yet");
        return Ok(());
    }
    let mut rows = vec![[
        "NODE".to_owned(),
        "SERVICE".into(),
        "CONNECTED".into(),
        "GROUP".into(),
        "APPLIED".into(),
        "LISTENERS".into(),
        "FILTERS".into(),
    ]];
    // What the live version runs, to mark a proxy that runs something else.
    let live = proxies.get("filters").and_then(Value::as_object);
    let mut refusals = Vec::new();
    for p in &list {
        let listeners = p
            .get("listeners")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let filters = p
            .get("filters")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(name, shas)| {
                        let shas = shas.as_str().unwrap_or("?");
                        let short: Vec<&str> =
                            shas.split(',').map(|s| s.get(..12).unwrap_or(s)).collect();
                        let stale = live.is_some_and(|l| {
                            l.get(name).and_then(Value::as_str).is_some_and(|want| {
                                !shas.split(',').all(|s| s.eq_ignore_ascii_case(want))
                            })
                        });
                        let mark = if stale {
                            " (not the live version's)"
                        } else {
                            ""
                        };
                        format!("{name}={}{mark}", short.join("+"))
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        rows.push([
            text(p, "node"),
            text(p, "service"),
            text(p, "connected"),
            text(p, "group"),
            text(p, "applied"),
            listeners,
            filters,
        ]);
        if let Some(last) = p.get("last").filter(|l| text(l, "result") == "nack") {
            refusals.push(format!(
                "{} refused version {}: {}",
                text(p, "node"),
                text(last, "version"),
                text(last, "error")
            ));
        }
    }
    print!("{}", table(&rows));
    for r in refusals {
        println!("NACK: {r}");
    }
    Ok(())
}

/// Rows as left-aligned columns two spaces apart, one line each.
pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Percent-encode a query value (everything but unreserved characters).
pub(crate) fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
