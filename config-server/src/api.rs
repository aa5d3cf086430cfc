//! The HTTP JSON API (see `openapi.yaml`, served at `GET /v1/openapi.yaml`).

use std::collections::BTreeMap;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use weft_config::{Balancer, Config, FailurePolicy, MeshConfig, UpstreamProtocol};

use crate::changes::{Mode, too_large};
use crate::error::{ApiError, blocking};
use crate::signing::Signed;
use crate::store::FilterVersion;
use crate::validate::{self, Member};
use crate::{Current, Shared, auth};

/// The OpenAPI document of this API.
const OPENAPI: &str = include_str!("../openapi.yaml");

/// Mesh configs are YAML a person writes; anything larger is a mistake.
const MAX_MESH_SIZE: usize = 4 << 20;

type Reply = Result<Response, ApiError>;

/// Reads that show mesh or filter configs, which may hold secrets: they need the
/// token from anywhere.
const SECRET_READS: &[&str] = &["/v1/snapshot", "/v1/versions/{version}"];

/// The request header a client names its user in, recorded with each change.
const USER_HEADER: &str = "x-weft-user";

/// The API routes, each behind the token check.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let secret_reads = Router::new()
        .route(SECRET_READS[0], get(snapshot))
        .route(SECRET_READS[1], get(version))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::require_always,
        ));
    Router::new()
        .route("/v1/filters", get(list_filters))
        .route("/v1/filters/{name}", get(get_filter).put(push_filter))
        .route("/v1/mesh", put(apply_mesh))
        .route("/v1/versions", get(versions))
        .route("/v1/rollback/{version}", post(rollback))
        .route("/v1/proxies", get(proxies))
        .route("/v1/proxies/{node}/config", get(proxy_config))
        .route("/v1/stats", get(stats))
        .route("/v1/openapi.yaml", get(openapi))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::require,
        ))
        .merge(secret_reads)
        .with_state(shared)
}

/// A route's path parameters, refused as the API refuses anything else: axum's own
/// `Path` answers in plain text (a segment that is not UTF-8 once decoded, one that
/// does not parse), where clients of this API read `{"error": ...}`.
struct Param<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Param<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            // What a client can cause is a 400; a route whose parameters do not fit
            // its handler is this server's fault, and keeps axum's 500.
            Err(e) => Err(ApiError::new(e.status(), e.body_text())),
        }
    }
}

pub(crate) async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such route: {}; see GET /v1/openapi.yaml",
        uri.path()
    ))
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} does not accept {method}; see GET /v1/openapi.yaml",
            uri.path()
        ),
    )
}

#[derive(Serialize)]
struct FilterView<'a> {
    name: &'a str,
    versions: &'a [FilterVersion],
}

async fn list_filters(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let published = shared.snapshot();
    let filters: Vec<FilterView<'_>> = published
        .state
        .filters
        .iter()
        .map(|(name, versions)| FilterView { name, versions })
        .collect();
    Json(json!({ "filters": filters }))
}

async fn get_filter(State(shared): State<Arc<Shared>>, Param(name): Param<String>) -> Reply {
    let published = shared.snapshot();
    let versions = published.state.filters.get(&name).ok_or_else(|| {
        ApiError::not_found(format!("no filter was pushed under the name {name:?}"))
    })?;
    Ok(Json(FilterView {
        name: &name,
        versions,
    })
    .into_response())
}

/// Who makes a change: the user the client names in `x-weft-user`, if it names
/// one, from the address the request came from. The name is the client's word; the
/// address is what the server saw.
fn author(headers: &HeaderMap, peer: SocketAddr) -> Result<Option<String>, ApiError> {
    let from = peer.ip().to_canonical();
    let Some(user) = headers.get(USER_HEADER) else {
        return Ok(Some(from.to_string()));
    };
    let user = user
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= 64 && u.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{USER_HEADER} must be 1 to 64 visible ASCII characters, without spaces"
            ))
        })?;
    Ok(Some(format!("{user} from {from}")))
}

async fn push_filter(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Param(name): Param<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let by = author(&headers, peer)?;
    let max = shared.max_filter_size;
    let within = shared.limits.body_timeout;
    let bytes = read_body(&headers, body, max, within, |size| match size {
        Some(size) => too_large(size, max),
        None => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the module is larger than {max} bytes, the most this server accepts"),
        ),
    })
    .await?;
    signed_module(&shared, &name, &bytes, &headers).await?;
    let pushed = shared.push(name, bytes, by).await?;
    let status = if pushed.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(pushed)).into_response())
}

/// A pushed module's signature (see `signing`): checked, then kept before the push
/// is made, so that the version it makes is never sent without it. With trusted
/// keys, a push that makes a new version is also refused while the live mesh config
/// is unsigned: that version is one proxies refuse.
async fn signed_module(
    shared: &Arc<Shared>,
    name: &str,
    bytes: &Bytes,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let signature = shared.signing.check(Signed::Module, bytes, headers)?;
    if let Some(signature) = signature {
        keep(shared, Signed::Module, bytes.clone(), signature).await?;
    }
    let sha256 = weft_engine::Engine::digest(bytes);
    // Signing again what is live changes nothing but its signature: always
    // welcome, and the way out when what is live was pushed unsigned.
    if let Some(current) = &shared.snapshot().current
        && current.version.filters.get(name) != Some(&sha256)
    {
        let mut filters = current.version.filters.clone();
        filters.insert(name.to_owned(), sha256);
        let mesh = (current.version.mesh.as_str(), &current.mesh);
        shared.signing.check_version(mesh, &filters, None)?;
    }
    Ok(())
}

/// A mesh config's signature, checked, and kept unless this is a dry run; with
/// trusted keys, the filter versions it would use must be signed too.
async fn signed_mesh(
    shared: &Arc<Shared>,
    file: &str,
    text: &str,
    headers: &HeaderMap,
    dry_run: bool,
) -> Result<(), ApiError> {
    let signature = shared
        .signing
        .check(Signed::Mesh, text.as_bytes(), headers)?;
    // A config that does not parse is refused by the apply, with where it is wrong.
    if let Ok(mesh) = MeshConfig::parse(text, file) {
        let published = shared.snapshot();
        // The filter versions the apply resolves to (see `changes`).
        let mut filters = published.state.latest_filters();
        if let Some(current) = &published.current {
            filters.extend(current.version.filters.clone());
        }
        let given = signature.as_deref();
        shared
            .signing
            .check_version((text, &mesh), &filters, given)?;
    }
    if let Some(signature) = signature
        && !dry_run
    {
        keep(
            shared,
            Signed::Mesh,
            Bytes::from(text.to_owned()),
            signature,
        )
        .await?;
    }
    Ok(())
}

/// Keep a signature in the data folder.
async fn keep(
    shared: &Arc<Shared>,
    what: Signed,
    content: Bytes,
    signature: String,
) -> Result<(), ApiError> {
    let this = shared.clone();
    blocking(move || this.signing.record(what, &content, signature))
        .await?
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot keep the {}'s signature in {}: {e}",
                what.noun(),
                shared.store.dir().display()
            ))
        })
}

#[derive(Deserialize)]
// A misspelt `dry_run` must not apply for real.
#[serde(deny_unknown_fields)]
struct MeshQuery {
    file: Option<String>,
    /// Refuse (409, nothing stored) when the config selects badly.
    #[serde(default)]
    strict: bool,
    /// Check exactly as an apply would, and store nothing.
    #[serde(default)]
    dry_run: bool,
}

async fn apply_mesh(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<MeshQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let by = author(&headers, peer)?;
    let file = query
        .file
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "mesh.yaml".to_owned());
    if file.len() > 1024 || file.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "`file` must be a file name of at most 1024 characters, without control characters",
        ));
    }
    let too_big = |_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a mesh config may be at most {MAX_MESH_SIZE} bytes"),
        )
    };
    let within = shared.limits.body_timeout;
    let bytes = read_body(&headers, body, MAX_MESH_SIZE, within, too_big).await?;
    let text = String::from_utf8(bytes.into())
        .map_err(|e| ApiError::bad_request(format!("{file}: not UTF-8 text: {e}")))?;
    signed_mesh(&shared, &file, &text, &headers, query.dry_run).await?;
    let mode = match (query.dry_run, query.strict) {
        (true, _) => Mode::DryRun,
        (false, true) => Mode::Strict,
        (false, false) => Mode::Apply,
    };
    let applied = shared.apply(file, text, by, mode).await?;
    let warnings = &applied.warnings;
    if query.strict && !warnings.is_empty() {
        let said: Vec<&str> = warnings.iter().map(|w| w.message()).collect();
        let error = format!(
            "not applied (strict): {}; fix the selectors or the proxies, or apply without \
             strict",
            said.join("; ")
        );
        let body = json!({ "error": error, "warnings": warnings });
        return Ok((StatusCode::CONFLICT, Json(body)).into_response());
    }
    if !applied.stored {
        let body =
            json!({ "dry_run": true, "next_version": applied.version, "warnings": warnings });
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let body = json!({ "version": applied.version, "warnings": warnings });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn snapshot(State(shared): State<Arc<Shared>>) -> Reply {
    let published = shared.snapshot();
    let current = published
        .current
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no mesh config was applied yet: PUT /v1/mesh"))?;
    Ok(Json(&*current.version).into_response())
}

/// One version in full, mesh text included (which holds filter configs and their
/// secrets): it needs the token.
async fn version(
    State(shared): State<Arc<Shared>>,
    version: Result<Param<u64>, ApiError>,
) -> Reply {
    let Param(number) = version.map_err(not_a_version)?;
    let published = shared.snapshot();
    let versions = &published.state.versions;
    let found = versions.iter().find(|v| v.version == number);
    let found = found.ok_or_else(|| {
        ApiError::not_found(match versions.last() {
            Some(last) => format!("no version {number}: versions are 1 to {}", last.version),
            None => format!("no version {number}: no mesh config was applied yet"),
        })
    })?;
    Ok(Json(&**found).into_response())
}

/// A `{version}` segment that is not a version number.
fn not_a_version(e: ApiError) -> ApiError {
    let message = format!("the version must be a number: {}", e.message);
    ApiError { message, ..e }
}

/// Every version, without its mesh text (which holds filter configs): open like
/// status.
async fn versions(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let published = shared.snapshot();
    let versions: Vec<Value> = published
        .state
        .versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "created": v.created,
                "cause": v.cause,
                "mesh_file": v.mesh_file,
                "filters": v.filters,
                "by": v.by,
            })
        })
        .collect();
    Json(json!({ "versions": versions }))
}

async fn rollback(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    version: Result<Param<u64>, ApiError>,
) -> Reply {
    let Param(to) = version.map_err(not_a_version)?;
    // What the rollback would make live again must be signed as a push would be.
    if let Some(old) = (shared.snapshot().state.versions.iter()).find(|v| v.version == to)
        && let Ok(mesh) = MeshConfig::parse(&old.mesh, &old.mesh_file)
    {
        (shared.signing).check_version((&old.mesh, &mesh), &old.filters, None)?;
    }
    let version = shared.rollback(to, author(&headers, peer)?).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "version": version, "from": to })),
    )
        .into_response())
}

/// The live version, the filter versions it uses (to compare with what each proxy
/// runs), every proxy with where it stands against the live version, and what the
/// live version selects that is likely a mistake.
async fn proxies(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let published = shared.snapshot();
    let current = published.current.as_deref();
    let version = current.map(|c| c.version.version);
    let filters = current.map(|c| &c.version.filters);
    let now = SystemTime::now();
    let mut members = Vec::new();
    let proxies: Vec<Value> = (shared.proxies.list().iter())
        .filter_map(|view| serde_json::to_value(view).ok())
        .map(|mut view| {
            if let Ok(seen) = serde_json::from_value::<Seen>(view.clone()) {
                let (state, waiting) = standing(&seen, current, now);
                view["state"] = json!(state);
                view["waiting_seconds"] = json!(waiting);
                members.push(seen.member);
            }
            view
        })
        .collect();
    let warnings = current.map_or_else(Vec::new, |c| {
        validate::selection_warnings(&c.mesh, &members)
    });
    Json(json!({
        "version": version,
        "created": current.map(|c| &c.version.created),
        "filters": filters,
        "proxies": proxies,
        "warnings": warnings,
    }))
}

/// What the API reads of a proxy's registry entry (`GET /v1/proxies`).
#[derive(Debug, Deserialize)]
struct Seen {
    #[serde(flatten)]
    member: Member,
    applied: Option<u64>,
    since: String,
    #[serde(default)]
    listeners: BTreeMap<String, String>,
    last: Option<Last>,
}

/// A proxy's answer to the last snapshot it was sent.
#[derive(Debug, Deserialize, Serialize)]
struct Last {
    version: u64,
    result: String,
    error: Option<String>,
}

/// Where a proxy stands against the live version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Standing {
    /// No mesh config was applied yet.
    NoMesh,
    /// Its stream is gone; it serves what it had.
    Disconnected,
    /// No group of the live version selects it: it is sent nothing.
    Unselected,
    /// It ACKed the live version.
    Current,
    /// It NACKed the live version, and serves an earlier one.
    Refused,
    /// It was sent the live version and has not answered yet.
    Pending,
}

/// Where `proxy` stands against `current` at `now`, and for a pending one how long
/// it has been waited for: since the later of the version's creation and its
/// connection, so a proxy that just connected is not late.
fn standing(proxy: &Seen, current: Option<&Current>, now: SystemTime) -> (Standing, Option<u64>) {
    let Some(current) = current else {
        return (Standing::NoMesh, None);
    };
    let m = &proxy.member;
    if !m.connected {
        return (Standing::Disconnected, None);
    }
    if current.mesh.select(&m.service, &m.labels).is_none() {
        return (Standing::Unselected, None);
    }
    let live = current.version.version;
    if proxy.applied == Some(live) {
        return (Standing::Current, None);
    }
    if (proxy.last.as_ref()).is_some_and(|l| l.version == live && l.result == "nack") {
        return (Standing::Refused, None);
    }
    let since = [current.version.created.as_str(), proxy.since.as_str()]
        .into_iter()
        .filter_map(|t| humantime::parse_rfc3339(t).ok())
        .max();
    let waited = since.map(|t| now.duration_since(t).unwrap_or_default().as_secs());
    (Standing::Pending, waited)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigQuery {
    /// Show filter configs as they are; needs the API token.
    #[serde(default)]
    show_secrets: bool,
}

/// The configuration the live version gives one proxy, as it is sent: its group's
/// listeners with their filter chains, and the clusters with their endpoints and
/// weights. Filter configs have their secrets redacted unless `show_secrets` is
/// asked for with the API token.
async fn proxy_config(
    State(shared): State<Arc<Shared>>,
    Param(node): Param<String>,
    query: Result<Query<ConfigQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Reply {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if query.show_secrets {
        auth::api_token(&shared, &headers, "show_secrets")?;
    }
    let published = shared.snapshot();
    let current = published
        .current
        .as_deref()
        .ok_or_else(|| ApiError::not_found("no mesh config was applied yet: PUT /v1/mesh"))?;
    let views: Vec<Value> = (shared.proxies.list().iter())
        .filter_map(|view| serde_json::to_value(view).ok())
        .collect();
    let Some(view) = views.iter().find(|v| v["node"] == node.as_str()) else {
        let mut known: Vec<&str> = views.iter().filter_map(|v| v["node"].as_str()).collect();
        known.sort_unstable();
        let known = if known.is_empty() {
            "none has connected".to_owned()
        } else {
            format!("known: {}", known.join(", "))
        };
        return Err(ApiError::not_found(format!(
            "no proxy {node:?} is known to this server ({known}); a proxy is known from \
             its first connection until 10 minutes after its stream ends"
        )));
    };
    let seen: Seen = serde_json::from_value(view.clone())
        .map_err(|e| ApiError::internal(format!("proxy {node:?}: unreadable entry: {e}")))?;
    let m = &seen.member;
    let live = current.version.version;
    let group = current.mesh.select(&m.service, &m.labels).ok_or_else(|| {
        let selectors: Vec<String> = (current.mesh.proxies.iter())
            .map(|g| validate::selector_text(&g.select))
            .collect();
        ApiError::not_found(format!(
            "no group of version {live} selects proxy {node:?} (service {:?}, labels {:?}), \
             so it is sent nothing; the groups select {}",
            m.service,
            m.labels,
            selectors.join(", ")
        ))
    })?;
    let config = current
        .mesh
        .proxy_config(group, &current.version.filters)
        .map_err(|e| ApiError::internal(format!("version {live}: {e}")))?;
    let (state, _) = standing(&seen, Some(current), SystemTime::now());
    let (listeners, clusters) = effective(&config, &seen.listeners, !query.show_secrets);
    Ok(Json(json!({
        "node": node,
        "service": m.service,
        "labels": m.labels,
        "connected": m.connected,
        "version": live,
        "applied": seen.applied,
        "state": state,
        "last": seen.last,
        "group": group,
        "selector": validate::selector_text(&current.mesh.proxies[group].select),
        "secrets_shown": query.show_secrets,
        "listeners": listeners,
        "clusters": clusters,
    }))
    .into_response())
}

/// A configuration's listeners (with the address each got, from the proxy's last
/// ACK) and clusters, as JSON, with filter configs redacted when `redacted`.
fn effective(
    config: &Config,
    bound: &BTreeMap<String, String>,
    redacted: bool,
) -> (Vec<Value>, Vec<Value>) {
    let listeners = (config.listeners.iter())
        .map(|l| {
            let filters: Vec<Value> = (l.filters.iter())
                .map(|f| {
                    let mut config = f.config.as_ref().map(|c| c.value.json().clone());
                    if redacted && let Some(c) = &mut config {
                        redact(c);
                    }
                    json!({
                        "name": f.name.value,
                        "module": f.module.value,
                        "sha256": f.sha256.as_ref().map(|s| &s.value),
                        "failure": failure_name(f.failure),
                        "config": config,
                    })
                })
                .collect();
            json!({
                "name": l.name.value,
                "address": l.address.value,
                "bound": bound.get(&l.name.value),
                "tls": l.tls.is_some(),
                "default_cluster": l.default_cluster.as_ref().map(|d| &d.value),
                "mesh_internal": l.mesh_internal,
                "filters": filters,
            })
        })
        .collect();
    let clusters = (config.clusters.iter())
        .map(|c| {
            let endpoints: Vec<Value> = (c.endpoints.iter())
                .map(|e| {
                    json!({
                        "address": e.value.address(),
                        "weight": e.value.weight(),
                        "dns": e.value.is_dns(),
                    })
                })
                .collect();
            json!({
                "name": c.name.value,
                "balancer": balancer_name(c.balancer),
                "protocol": protocol_name(c.protocol),
                "tls": c.tls.is_some(),
                "endpoints": endpoints,
            })
        })
        .collect();
    (listeners, clusters)
}

fn failure_name(p: FailurePolicy) -> &'static str {
    match p {
        FailurePolicy::FailClosed => "fail-closed",
        FailurePolicy::FailOpen => "fail-open",
        FailurePolicy::Reload => "reload",
    }
}

fn balancer_name(b: Balancer) -> &'static str {
    match b {
        Balancer::RoundRobin => "round-robin",
        Balancer::LeastRequest => "least-request",
        Balancer::PeakEwma => "peak-ewma",
    }
}

fn protocol_name(p: UpstreamProtocol) -> &'static str {
    match p {
        UpstreamProtocol::Http1 => "http1",
        UpstreamProtocol::Http2 => "http2",
        UpstreamProtocol::Auto => "auto",
    }
}

/// Words that make a key's value secret, wherever they appear in it, in any case:
/// `api_key`, `X-Auth-Token`, `clientSecret`, `authorization`.
const SECRET_WORDS: &[&str] = &["token", "secret", "password", "key", "authorization"];

/// What a secret value is shown as.
const REDACTED: &str = "<redacted>";

/// Replace the value of every secret key, at any depth, with [`REDACTED`]. A
/// secret key's whole value goes, whatever it holds: a map under `secrets:` may
/// hold anything.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if SECRET_WORDS.iter().any(|w| key.contains(w)) {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    /// e.g. `30s`, `1m`.
    window: Option<String>,
    /// `auto`, `destination` or `source`.
    reporter: Option<String>,
}

/// The traffic proxies reported over a window, per service and route.
async fn stats(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Reply {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let max = crate::stats::MAX_WINDOW;
    let window = match &query.window {
        None => Duration::from_secs(30),
        Some(w) => humantime::parse_duration(w)
            .ok()
            .filter(|w| (Duration::from_secs(1)..=max).contains(w))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "window {w:?} is not a duration from 1s to {}s, e.g. 30s or 1m",
                    max.as_secs()
                ))
            })?,
    };
    let choice = match &query.reporter {
        None => crate::stats::Choice::Auto,
        Some(r) => crate::stats::Choice::parse(r).ok_or_else(|| {
            ApiError::bad_request(format!(
                "reporter {r:?} is not one of auto, destination, source"
            ))
        })?,
    };
    // Summing up to two minutes of every row is work for a blocking thread, not for
    // the workers that serve the proxies' streams and the other requests.
    let view = crate::error::blocking(move || {
        let view = shared.stats.view(window, choice, shared.report_interval);
        Json(view).into_response()
    })
    .await?;
    Ok(view)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

/// Read a request body of at most `max` bytes, arriving within `within`. A
/// `Content-Length` over the limit is refused before reading anything; a body that
/// only turns out too large while streaming is refused as soon as it does; a body
/// that trickles in is refused when the time is up, so it cannot hold the
/// connection.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    within: Duration,
    too_large: impl Fn(Option<usize>) -> ApiError,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared
        && size > max
    {
        return Err(too_large(Some(size)));
    }
    let read = tokio::time::timeout(within, axum::body::to_bytes(body, max))
        .await
        .map_err(|_| {
            ApiError::timeout(format!(
                "the request body did not arrive within {}s",
                within.as_secs_f64()
            ))
        })?;
    read.map_err(|e| {
        let over = std::iter::successors(e.source(), |e| (*e).source())
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            too_large(None)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes `router` serves, with their methods.
    const ROUTES: &[(&str, &[&str])] = &[
        ("/v1/filters", &["get"]),
        ("/v1/filters/{name}", &["get", "put"]),
        ("/v1/mesh", &["put"]),
        ("/v1/snapshot", &["get"]),
        ("/v1/versions", &["get"]),
        ("/v1/versions/{version}", &["get"]),
        ("/v1/rollback/{version}", &["post"]),
        ("/v1/proxies", &["get"]),
        ("/v1/proxies/{node}/config", &["get"]),
        ("/v1/stats", &["get"]),
        ("/v1/openapi.yaml", &["get"]),
    ];

    #[test]
    fn secrets_are_redacted_at_any_depth_by_key() {
        let mut config = json!({
            "routes": [{ "cluster": "web", "headers": [{ "name": "x-canary", "exact": "1" }] }],
            "auth": { "API_Key": "k1", "tokens": ["a", "b"], "issuer": "me" },
            "clientSecret": { "nested": "whole value goes" },
            "Authorization": "Bearer x",
            "password_file": "/etc/p",
            "upstream": [{ "access_token": 7 }],
        });
        redact(&mut config);
        assert_eq!(
            config,
            json!({
                "routes": [{ "cluster": "web", "headers": [{ "name": "x-canary", "exact": "1" }] }],
                "auth": { "API_Key": REDACTED, "tokens": REDACTED, "issuer": "me" },
                "clientSecret": REDACTED,
                "Authorization": REDACTED,
                "password_file": REDACTED,
                "upstream": [{ "access_token": REDACTED }],
            })
        );
    }

    fn seen(applied: Option<u64>, last: Option<(u64, &str)>, since: &str) -> Seen {
        Seen {
            member: Member {
                node: "web-1".into(),
                service: "web".into(),
                labels: BTreeMap::new(),
                connected: true,
            },
            applied,
            since: since.into(),
            listeners: BTreeMap::new(),
            last: last.map(|(version, result)| Last {
                version,
                result: result.into(),
                error: None,
            }),
        }
    }

    #[test]
    fn where_a_proxy_stands_against_the_live_version() {
        let mesh = "proxies:\n  - select: { service: web }\n";
        let version = Arc::new(crate::store::Version {
            version: 3,
            created: "2026-01-01T00:00:00Z".into(),
            cause: "apply mesh.yaml".into(),
            mesh_file: "mesh.yaml".into(),
            mesh: mesh.into(),
            filters: BTreeMap::new(),
            by: None,
        });
        let current = Current::parse(version).unwrap();
        let at = |t: &str| humantime::parse_rfc3339(t).unwrap();
        let now = at("2026-01-01T00:01:00Z");
        let early = "2025-12-31T00:00:00Z";
        let stand = |p: &Seen| standing(p, Some(&current), now);
        assert_eq!(
            stand(&seen(Some(3), Some((3, "ack")), early)).0,
            Standing::Current
        );
        assert_eq!(
            stand(&seen(Some(2), Some((3, "nack")), early)).0,
            Standing::Refused
        );
        // Waiting since the version was made, or since the proxy came, if later.
        assert_eq!(
            stand(&seen(Some(2), Some((2, "ack")), early)),
            (Standing::Pending, Some(60))
        );
        assert_eq!(
            stand(&seen(None, None, "2026-01-01T00:00:50Z")),
            (Standing::Pending, Some(10))
        );
        // A NACK of an earlier version does not make the live one refused.
        assert_eq!(
            stand(&seen(Some(1), Some((2, "nack")), early)).0,
            Standing::Pending
        );
        let mut other = seen(Some(3), None, early);
        other.member.service = "cart".into();
        assert_eq!(stand(&other).0, Standing::Unselected);
        other.member.connected = false;
        assert_eq!(stand(&other).0, Standing::Disconnected);
        assert_eq!(standing(&other, None, now).0, Standing::NoMesh);
    }

    #[test]
    fn a_change_records_the_user_the_client_names_and_where_it_came_from() {
        let peer: SocketAddr = "[::ffff:10.0.0.7]:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(author(&headers, peer).unwrap().as_deref(), Some("10.0.0.7"));
        headers.insert(USER_HEADER, "alice".parse().unwrap());
        assert_eq!(
            author(&headers, peer).unwrap().as_deref(),
            Some("alice from 10.0.0.7")
        );
        headers.insert(USER_HEADER, "al ice".parse().unwrap());
        assert!(author(&headers, peer).is_err());
    }

    #[test]
    fn the_openapi_document_covers_every_route() {
        let doc: Value = serde_saphyr::from_str(OPENAPI).expect("openapi.yaml parses");
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().expect("paths");
        assert_eq!(paths.len(), ROUTES.len(), "{:?}", paths.keys());
        for (path, methods) in ROUTES {
            for method in *methods {
                let op = &paths[*path][*method];
                assert!(
                    op["responses"].is_object(),
                    "{method} {path} is not documented"
                );
                if *method != "get" || SECRET_READS.contains(path) {
                    assert!(
                        op["responses"]["401"].is_object(),
                        "{method} {path}: no 401"
                    );
                }
            }
        }
    }
}
