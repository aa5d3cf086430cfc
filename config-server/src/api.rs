//! The HTTP JSON API (see `openapi.yaml`, served at `GET /v1/openapi.yaml`).

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::changes::too_large;
use crate::error::ApiError;
use crate::store::FilterVersion;
use crate::{Shared, auth};

/// The OpenAPI document of this API.
const OPENAPI: &str = include_str!("../openapi.yaml");

/// Mesh configs are YAML a person writes; anything larger is a mistake.
const MAX_MESH_SIZE: usize = 4 << 20;

type Reply = Result<Response, ApiError>;

/// Reads that show mesh or filter configs, which may hold secrets: they need the
/// token from anywhere.
const SECRET_READS: &[&str] = &["/v1/snapshot"];

/// The API routes, each behind the token check.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let secret_reads = Router::new()
        .route(SECRET_READS[0], get(snapshot))
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
        .route("/v1/stats", get(stats))
        .route("/v1/openapi.yaml", get(openapi))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::require,
        ))
        .merge(secret_reads)
        .with_state(shared)
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

async fn get_filter(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Reply {
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

async fn push_filter(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
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
    let pushed = shared.push(name, bytes).await?;
    let status = if pushed.changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(pushed)).into_response())
}

#[derive(Deserialize)]
struct MeshQuery {
    file: Option<String>,
}

async fn apply_mesh(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<MeshQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
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
    let version = shared.apply(file, text).await?;
    Ok((StatusCode::CREATED, Json(json!({ "version": version }))).into_response())
}

async fn snapshot(State(shared): State<Arc<Shared>>) -> Reply {
    let published = shared.snapshot();
    let current = published
        .current
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no mesh config was applied yet: PUT /v1/mesh"))?;
    Ok(Json(&*current.version).into_response())
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
            })
        })
        .collect();
    Json(json!({ "versions": versions }))
}

async fn rollback(
    State(shared): State<Arc<Shared>>,
    version: Result<Path<u64>, PathRejection>,
) -> Reply {
    let Path(to) = version.map_err(|e| {
        ApiError::bad_request(format!("the version must be a number: {}", e.body_text()))
    })?;
    let version = shared.rollback(to).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "version": version, "from": to })),
    )
        .into_response())
}

/// The live version, the filter versions it uses (to compare with what each proxy
/// runs), and every proxy.
async fn proxies(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let published = shared.snapshot();
    let current = published.current.as_ref();
    let version = current.map(|c| c.version.version);
    let filters = current.map(|c| &c.version.filters);
    let proxies = shared.proxies.list();
    Json(json!({ "version": version, "filters": filters, "proxies": proxies }))
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
        ("/v1/rollback/{version}", &["post"]),
        ("/v1/proxies", &["get"]),
        ("/v1/stats", &["get"]),
        ("/v1/openapi.yaml", &["get"]),
    ];

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
