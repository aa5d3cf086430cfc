//! `weft push`, `apply`, `status`, `rollback`: the config server's HTTP API from the
//! command line. Refusals print the server's reason and exit non-zero; so do
//! `apply --wait` when a proxy refuses or is late, and `status` while one does.
//! `push --sign KEYFILE` and `apply --sign KEYFILE` send an ed25519 signature of what
//! they upload (see `keys`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use weft_agent::signature::{HEADER as SIGNATURE_HEADER, Signed};

use crate::keys::Signer;

/// Which config server, and the token for writes.
#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// The config server.
    #[arg(long, env = "WEFT_SERVER", default_value = "http://127.0.0.1:7070")]
    pub(crate) server: String,
    #[command(flatten)]
    pub(crate) token: TokenArgs,
}

/// The API token, for writes and for reads that show configs, and the CA an
/// https:// server's certificate is verified with.
#[derive(Clone, clap::Args)]
pub(crate) struct TokenArgs {
    /// API token for writes [default: the token file of the config server's data
    /// folder, WEFT_DATA_DIR, else of a config server on this machine with the
    /// default data folder].
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the API token from this file.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// For an https:// server: the CA certificate (PEM) its certificate chains to
    /// [default: ca.pem in the config server's data folder, WEFT_DATA_DIR, else of a
    /// config server on this machine with the default data folder].
    #[arg(long, env = "WEFT_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// What the server answered.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub value: Value,
}

impl TokenArgs {
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        if let Some(file) = &self.token_file {
            let t = std::fs::read_to_string(file)
                .with_context(|| format!("reading the token from {}", file.display()))?;
            return Ok(Some(t.trim().to_owned()));
        }
        // A server on this machine keeps its token in its data folder.
        Ok(crate::paths::token_files("token")
            .into_iter()
            .filter_map(|file| std::fs::read_to_string(file).ok())
            .map(|t| t.trim().to_owned())
            .find(|t| !t.is_empty()))
    }
}

impl ServerArgs {
    /// A server at `url` with this token.
    pub(crate) fn new(url: &str, token: &str) -> Self {
        Self {
            server: url.to_owned(),
            token: TokenArgs {
                token: Some(token.to_owned()),
                token_file: None,
                ca: None,
            },
        }
    }

    /// Send a request; any answer is returned, whatever its status.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> anyhow::Result<Answer> {
        self.send_with(method, path, body, &[]).await
    }

    /// [`ServerArgs::send`] with more request headers.
    pub(crate) async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
        headers: &[(&'static str, String)],
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut req = Request::builder().method(method.clone()).uri(&url);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(token) = self.token.token()? {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        // Recorded with each change the server makes (`weft history`).
        if let Some(user) = user() {
            req = req.header("x-weft-user", user);
        }
        let (body, content_type) = body.unwrap_or((Bytes::new(), "application/json"));
        let req = req
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .with_context(|| format!("{url:?} is not a valid URL"))?;
        let resp = tokio::time::timeout(Duration::from_secs(120), self.exchange(req))
            .await
            .with_context(|| format!("{method} {url}: no answer in 120 s"))?
            .with_context(|| format!("{method} {url}: cannot reach the config server"))?;
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .with_context(|| format!("{method} {url}: reading the answer"))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).trim().to_owned()));
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            value,
        })
    }

    /// One request and its answer's head: over TLS to an https:// server.
    async fn exchange(&self, req: Request<Full<Bytes>>) -> anyhow::Result<Response<Incoming>> {
        if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
            let ca = crate::https::ca_file(self.token.ca.as_deref())?;
            return crate::https::send(req, &ca).await;
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(client.request(req).await?)
    }

    /// Send a request; a refusal is an error with the server's reason.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> anyhow::Result<Value> {
        self.call_with(method, path, body, &[]).await
    }

    /// [`ServerArgs::call`] with more request headers.
    pub(crate) async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
        headers: &[(&'static str, String)],
    ) -> anyhow::Result<Value> {
        let answer = self.send_with(method.clone(), path, body, headers).await?;
        if !answer.status.is_success() {
            bail!("{}", refusal(&method, path, &answer));
        }
        Ok(answer.value)
    }
}

/// A refused request, with the server's reason and, for a missing token, where to
/// give it.
pub(crate) fn refusal(method: &Method, path: &str, answer: &Answer) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let (status, value) = (answer.status, &answer.value);
    let reason = value
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| value.to_string(), str::to_owned);
    if status == StatusCode::UNAUTHORIZED {
        return format!(
            "{method} {path}: refused ({status}): {reason}\n\
             give the token with --token, --token-file or WEFT_TOKEN, or point \
             WEFT_DATA_DIR at the server's data folder"
        );
    }
    format!("{method} {path}: refused ({status}): {reason}")
}

/// Who runs this command, as the server records it with a change: the login name,
/// when it is one the server accepts.
fn user() -> Option<String> {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|u| !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_graphic()))
}

pub(crate) fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// The signature header of `content`, signed with the key in `key`, if one is given.
fn signed(
    key: Option<&Path>,
    what: Signed,
    content: &[u8],
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let Some(key) = key else {
        return Ok(Vec::new());
    };
    let signer = Signer::load(key)?;
    Ok(vec![(SIGNATURE_HEADER, signer.sign(what, content))])
}

/// `weft push FILE --name NAME [--sign KEYFILE]`.
pub(crate) async fn push(
    server: &ServerArgs,
    file: &Path,
    name: &str,
    sign: Option<&Path>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let headers = signed(sign, Signed::Module, &bytes)?;
    let v = server
        .call_with(
            Method::PUT,
            &format!("/v1/filters/{name}"),
            Some((bytes.into(), "application/wasm")),
            &headers,
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

/// How `weft apply` goes.
#[derive(clap::Args)]
pub(crate) struct ApplyArgs {
    /// The mesh YAML.
    #[arg(short, long, value_name = "FILE", required_unless_present = "path")]
    file: Option<PathBuf>,
    /// The mesh YAML, given without -f.
    #[arg(value_name = "FILE", conflicts_with = "file")]
    path: Option<PathBuf>,
    /// Return once every connected proxy the new version selects has applied it
    /// (ACK); fail as soon as one refuses it (NACK), or at --timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "30s", value_parser = weft_config::units::parse_duration, requires = "wait")]
    timeout: Duration,
    /// Refuse, storing nothing, when a group selects no connected proxy or a
    /// connected proxy has no group (without it these are warnings).
    #[arg(long)]
    strict: bool,
    /// Sign the mesh config with this private key (`weft keys new`); a server with
    /// --trusted-keys takes only signed configs.
    #[arg(long, value_name = "KEYFILE")]
    sign: Option<PathBuf>,
}

/// A mesh config applied.
pub(crate) struct Applied {
    pub version: u64,
    /// What it selects that is likely a mistake, as the server said it.
    pub warnings: Vec<String>,
}

/// `PUT /v1/mesh` with `file`, strict when asked.
pub(crate) async fn apply_file(
    server: &ServerArgs,
    file: &Path,
    strict: bool,
) -> anyhow::Result<Applied> {
    apply_signed(server, file, strict, None).await
}

/// [`apply_file`], signed with the key in `sign` when one is given.
pub(crate) async fn apply_signed(
    server: &ServerArgs,
    file: &Path,
    strict: bool,
    sign: Option<&Path>,
) -> anyhow::Result<Applied> {
    let yaml = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let headers = signed(sign, Signed::Mesh, &yaml)?;
    let query = url_encode(&file.display().to_string());
    let strict = if strict { "&strict=true" } else { "" };
    let v = server
        .call_with(
            Method::PUT,
            &format!("/v1/mesh?file={query}{strict}"),
            Some((yaml.into(), "application/yaml")),
            &headers,
        )
        .await?;
    let version = v["version"]
        .as_u64()
        .with_context(|| format!("PUT /v1/mesh: the answer has no version: {v}"))?;
    Ok(Applied {
        version,
        warnings: warnings(&v),
    })
}

/// The messages of an answer's `warnings`.
pub(crate) fn warnings(v: &Value) -> Vec<String> {
    (v["warnings"].as_array().into_iter().flatten())
        .map(|w| text(w, "message"))
        .collect()
}

pub(crate) async fn apply(server: &ServerArgs, args: &ApplyArgs) -> anyhow::Result<()> {
    let file = (args.file.as_ref().or(args.path.as_ref()))
        .context("give the mesh YAML, as FILE or -f FILE")?;
    let applied = apply_signed(server, file, args.strict, args.sign.as_deref()).await?;
    let version = applied.version;
    println!("applied {}: version {version}", file.display());
    for w in &applied.warnings {
        eprintln!("warning: {w}");
    }
    if args.wait {
        wait_for(server, version, args.timeout).await?;
    }
    Ok(())
}

/// Wait until every connected proxy `version` selects has applied it; fail when one
/// refuses it, goes away, or `timeout` passes first.
async fn wait_for(server: &ServerArgs, version: u64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    // Those selected when the wait began: a proxy that connects later is not waited for.
    let mut selected: Option<BTreeSet<String>> = None;
    let mut done = BTreeSet::new();
    loop {
        let proxies = proxies_on(server, version).await?;
        let selected = selected.get_or_insert_with(|| selected_nodes(&proxies));
        if selected.is_empty() {
            println!("no connected proxy is selected by version {version}: nothing to wait for");
            return Ok(());
        }
        let pending = pending(selected, &proxies, version, &mut done)?;
        if pending.is_empty() {
            let noun = if selected.len() == 1 {
                "proxy"
            } else {
                "proxies"
            };
            println!("version {version} is in force on {} {noun}", selected.len());
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "timed out after {}: not yet on version {version}: {}; see `weft status` and \
                 those proxies' logs",
                humantime::format_duration(timeout),
                pending.join(", ")
            );
        }
        tokio::time::sleep((deadline - now).min(Duration::from_millis(200))).await;
    }
}

/// Every proxy, while `version` is still the live one.
async fn proxies_on(server: &ServerArgs, version: u64) -> anyhow::Result<Vec<Value>> {
    let v = server.call(Method::GET, "/v1/proxies", None).await?;
    if v["version"].as_u64() != Some(version) {
        bail!(
            "version {} replaced version {version} while waiting for it; see `weft status`",
            text(&v, "version")
        );
    }
    Ok(v["proxies"].as_array().cloned().unwrap_or_default())
}

/// The connected proxies the live version selects.
fn selected_nodes(proxies: &[Value]) -> BTreeSet<String> {
    (proxies.iter())
        .filter(|p| matches!(p["state"].as_str(), Some("current" | "refused" | "pending")))
        .map(|p| text(p, "node"))
        .collect()
}

/// The `selected` proxies still applying `version`, each with the version it serves;
/// those that applied it are said once (kept in `done`). Fails when one refused it,
/// is no longer selected, or went away.
fn pending(
    selected: &BTreeSet<String>,
    proxies: &[Value],
    version: u64,
    done: &mut BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let mut failed = Vec::new();
    let mut pending = Vec::new();
    for node in selected {
        let p = proxies.iter().find(|p| p["node"] == node.as_str());
        match p.and_then(|p| p["state"].as_str()) {
            Some("current") => {
                if done.insert(node.clone()) {
                    println!("{node}: applied version {version}");
                }
            }
            Some("pending") => pending.push(format!(
                "{node} (serves version {})",
                p.map_or_else(|| "-".to_owned(), |p| text(p, "applied"))
            )),
            Some("refused") => failed.push(format!(
                "{node} refused version {version}: {}",
                p.map_or_else(|| "-".to_owned(), |p| text(&p["last"], "error"))
            )),
            Some("unselected") => failed.push(format!(
                "{node} is no longer selected by version {version} (it reconnected as \
                 another service or with other labels)"
            )),
            _ => failed.push(format!(
                "{node} disconnected before applying version {version}; see its log"
            )),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{}\nfix the mesh config (or what the proxy names) and apply again, or go \
             back with `weft rollback`",
            failed.join("\n")
        );
    }
    Ok(pending)
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

/// `weft status`: the table, then why any proxy is not on the current version. Fails
/// (exit 1) while a proxy refuses the current version, or has not applied it after
/// `grace`; `--json` prints the server's answer and fails only when it cannot get it.
pub(crate) async fn status(server: &ServerArgs, json: bool, grace: Duration) -> anyhow::Result<()> {
    let proxies = server.call(Method::GET, "/v1/proxies", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&proxies)?);
        return Ok(());
    }
    let version = text(&proxies, "version");
    println!("current version: {version}");
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
        "STATE".into(),
        "LISTENERS".into(),
        "FILTERS".into(),
    ]];
    // What the live version runs, to mark a proxy that runs something else.
    let live = proxies.get("filters").and_then(Value::as_object);
    let mut refusals = Vec::new();
    for p in &list {
        rows.push([
            text(p, "node"),
            text(p, "service"),
            text(p, "connected"),
            text(p, "group"),
            text(p, "applied"),
            text(p, "state"),
            listeners_cell(p),
            filters_cell(p, live),
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
    let (behind, refused) = behind(&list, &version, grace);
    for w in warnings(&proxies) {
        println!("WARNING: {w}");
    }
    if !behind.is_empty() {
        let todo = if refused {
            "fix what the NACK names and apply again, or go back with `weft rollback`"
        } else {
            "a late proxy's log says what it is doing"
        };
        bail!(
            "not every proxy is on version {version}: {}; {todo}",
            behind.join("; ")
        );
    }
    Ok(())
}

/// A proxy's listeners, `name=address,...`.
fn listeners_cell(p: &Value) -> String {
    p.get("listeners")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A proxy's filters with their modules' short digests, marking those that are not
/// what the live version runs.
fn filters_cell(p: &Value, live: Option<&serde_json::Map<String, Value>>) -> String {
    p.get("filters")
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
        .unwrap_or_default()
}

/// The proxies not on the current version: those that refuse it, and those that
/// have waited `grace` or longer (each printed as a `LATE:` line); and whether any
/// refuses.
fn behind(list: &[Value], version: &str, grace: Duration) -> (Vec<String>, bool) {
    let (mut behind, mut refused) = (Vec::new(), false);
    for p in list {
        let node = text(p, "node");
        match p["state"].as_str() {
            Some("refused") => {
                refused = true;
                behind.push(format!("{node} refuses it (see its NACK)"));
            }
            Some("pending") => {
                let waited = p["waiting_seconds"].as_u64().unwrap_or(0);
                if Duration::from_secs(waited) >= grace {
                    println!(
                        "LATE: {node} has not applied version {version} after {waited}s \
                         (it serves {})",
                        text(p, "applied")
                    );
                    behind.push(format!("{node} has not applied it after {waited}s"));
                }
            }
            _ => {}
        }
    }
    (behind, refused)
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
