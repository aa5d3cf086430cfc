//! `weft history`, `get`, `diff`, `proxy-config`: what is in force, what was, and
//! what changed, read from the config server.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use http::Method;
use serde_json::Value;

use crate::client::{ServerArgs, table, text, url_encode};

/// `weft history`.
#[derive(clap::Args)]
pub(crate) struct HistoryArgs {
    /// Print the server's JSON as it is.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weft get`.
#[derive(clap::Args)]
pub(crate) struct GetArgs {
    /// The version [default: the current one].
    version: Option<u64>,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weft diff`.
#[derive(clap::Args)]
pub(crate) struct DiffArgs {
    /// The older version.
    from: u64,
    /// The newer version [default: the current one].
    to: Option<u64>,
    /// Lines of context around each change.
    #[arg(long, short = 'U', default_value_t = 3)]
    context: usize,
    #[command(flatten)]
    server: ServerArgs,
}

/// `weft proxy-config`.
#[derive(clap::Args)]
pub(crate) struct ProxyConfigArgs {
    /// The proxy's node id (as `weft status` lists it).
    node: String,
    /// Show filter configs as they are, secrets included (needs the API token, from
    /// any machine).
    #[arg(long)]
    show_secrets: bool,
    /// Print the server's JSON as it is.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) async fn history(args: &HistoryArgs) -> anyhow::Result<()> {
    let v = args.server.call(Method::GET, "/v1/versions", None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let versions = v["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        println!("no version yet: apply a mesh config with `weft apply -f FILE`");
        return Ok(());
    }
    let mut rows = vec![[
        "VERSION".to_owned(),
        "CREATED".into(),
        "CAUSE".into(),
        "FILE".into(),
        "BY".into(),
    ]];
    let last = versions.len() - 1;
    for (i, version) in versions.iter().enumerate() {
        let mark = if i == last { " (current)" } else { "" };
        rows.push([
            format!("{}{mark}", text(version, "version")),
            text(version, "created"),
            text(version, "cause"),
            text(version, "mesh_file"),
            text(version, "by"),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// A version in full: the current one (`GET /v1/snapshot`) or a numbered one.
async fn version(server: &ServerArgs, number: Option<u64>) -> anyhow::Result<Value> {
    let path = match number {
        Some(n) => format!("/v1/versions/{n}"),
        None => "/v1/snapshot".to_owned(),
    };
    server.call(Method::GET, &path, None).await
}

/// The mesh text of a version.
fn mesh(v: &Value) -> anyhow::Result<&str> {
    v["mesh"]
        .as_str()
        .with_context(|| format!("version {} has no mesh text", text(v, "version")))
}

pub(crate) async fn get(args: &GetArgs) -> anyhow::Result<()> {
    let v = version(&args.server, args.version).await?;
    let text = mesh(&v)?;
    // As applied, byte for byte, so it can be applied again.
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}

pub(crate) async fn diff(args: &DiffArgs) -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(
        version(&args.server, Some(args.from)),
        version(&args.server, args.to)
    )?;
    let print = unified(&a, &b, args.context)?;
    if print.is_empty() {
        println!(
            "versions {} and {} are the same: same mesh config, same filter versions",
            text(&a, "version"),
            text(&b, "version")
        );
    } else {
        print!("{print}");
    }
    Ok(())
}

/// The unified line diff of two versions' mesh texts, then one line per pushed
/// filter whose version differs (a push changes no mesh text); empty when nothing
/// differs.
fn unified(a: &Value, b: &Value, context: usize) -> anyhow::Result<String> {
    let (old, new) = (mesh(a)?, mesh(b)?);
    let name = |v: &Value| {
        format!(
            "version {} ({}, {})",
            text(v, "version"),
            text(v, "mesh_file"),
            text(v, "cause")
        )
    };
    let mut out = String::new();
    if old != new {
        let diff = similar::TextDiff::from_lines(old, new);
        let unified = diff
            .unified_diff()
            .context_radius(context)
            .header(&name(a), &name(b))
            .missing_newline_hint(true)
            .to_string();
        out.push_str(&unified);
    }
    let filters = |v: &Value| -> BTreeMap<String, String> {
        (v["filters"].as_object().into_iter().flatten())
            .map(|(k, sha)| (k.clone(), sha.as_str().unwrap_or("?").to_owned()))
            .collect()
    };
    let (fa, fb) = (filters(a), filters(b));
    let names: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let short = |sha: Option<&String>| {
        sha.map_or("(none)", |s| s.get(..12).unwrap_or(s))
            .to_owned()
    };
    for name in names {
        let (x, y) = (fa.get(name), fb.get(name));
        if x != y {
            out.push_str(&format!("filter {name}: {} -> {}\n", short(x), short(y)));
        }
    }
    Ok(out)
}

pub(crate) async fn proxy_config(args: &ProxyConfigArgs) -> anyhow::Result<()> {
    let secrets = if args.show_secrets {
        "?show_secrets=true"
    } else {
        ""
    };
    let path = format!("/v1/proxies/{}/config{secrets}", url_encode(&args.node));
    let v = args.server.call(Method::GET, &path, None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&v));
    }
    Ok(())
}

/// A proxy's configuration as `weft proxy-config` prints it: who it is and what it
/// serves, then its listeners and their filter chains (a router's routes as a
/// table), then the clusters, one line per endpoint.
fn render(v: &Value) -> String {
    let mut out = identity(v);
    out.push_str(&format!("{}\n", state(v)));
    if v["secrets_shown"] != true {
        out.push_str(
            "secrets in filter configs, if any, are shown as \"<redacted>\"; --show-secrets \
             shows them (with the API token)\n",
        );
    }
    for l in v["listeners"].as_array().into_iter().flatten() {
        out.push_str(&listener(l));
    }
    out.push('\n');
    out.push_str(&table(&clusters(v)));
    out
}

/// Who the proxy is, and which group of which version configures it.
fn identity(v: &Value) -> String {
    let labels = (v["labels"].as_object().into_iter().flatten())
        .map(|(k, l)| format!("{k}={}", l.as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(",");
    let labels = if labels.is_empty() {
        "no labels".to_owned()
    } else {
        format!("labels {labels}")
    };
    format!(
        "proxy {} (service {}, {labels}): group {} (select: {}) of version {}\n",
        text(v, "node"),
        text(v, "service"),
        text(v, "group"),
        text(v, "selector"),
        text(v, "version"),
    )
}

/// Whether the proxy serves the version shown, and if not, what it serves.
fn state(v: &Value) -> String {
    match v["state"].as_str() {
        Some("current") => "it serves this version".to_owned(),
        Some("refused") => format!(
            "it REFUSED this version and serves version {}: {}",
            text(v, "applied"),
            text(&v["last"], "error")
        ),
        Some("pending") => format!(
            "it has not applied this version yet; it serves version {}",
            text(v, "applied")
        ),
        Some("disconnected") => format!(
            "it is disconnected; it served version {} when it left",
            text(v, "applied")
        ),
        _ => format!("state {}", text(v, "state")),
    }
}

/// A listener's line, then its filter chain, one filter a line.
fn listener(l: &Value) -> String {
    let default = match l["default_cluster"].as_str() {
        Some(c) => format!("default cluster {c}"),
        None => "no default cluster".to_owned(),
    };
    let mut out = format!(
        "\nlistener {} on {} (bound {}), {default}{}{}\n",
        text(l, "name"),
        text(l, "address"),
        text(l, "bound"),
        if l["tls"] == true { ", TLS" } else { "" },
        if l["mesh_internal"] == true {
            ", mesh internal"
        } else {
            ""
        },
    );
    let filters = l["filters"].as_array().cloned().unwrap_or_default();
    if filters.is_empty() {
        out.push_str("  no filters\n");
    }
    for (i, f) in filters.iter().enumerate() {
        out.push_str(&filter(i, f));
    }
    out
}

/// A filter of a chain: its module and config, and a router's routes.
fn filter(i: usize, f: &Value) -> String {
    let sha = f["sha256"].as_str().map_or("built in".to_owned(), |s| {
        format!("sha256 {}", s.get(..12).unwrap_or(s))
    });
    let mut out = format!(
        "  {i}. {} ({}, {sha}, {})\n",
        text(f, "name"),
        text(f, "module"),
        text(f, "failure")
    );
    if !f["config"].is_null() {
        out.push_str(&format!("     config: {}\n", f["config"]));
    }
    if f["module"] == "builtin:router" {
        out.push_str(&routes(&f["config"]));
    }
    out
}

/// The clusters' table: one row per endpoint, the cluster's balancer and protocol
/// on its first.
fn clusters(v: &Value) -> Vec<[String; 5]> {
    let mut rows = vec![[
        "CLUSTER".to_owned(),
        "ENDPOINT".into(),
        "WEIGHT".into(),
        "BALANCER".into(),
        "PROTOCOL".into(),
    ]];
    for c in v["clusters"].as_array().into_iter().flatten() {
        for (i, e) in c["endpoints"].as_array().into_iter().flatten().enumerate() {
            let dns = if e["dns"] == true { " (dns)" } else { "" };
            let (balancer, protocol) = if i == 0 {
                let tls = if c["tls"] == true { "+tls" } else { "" };
                (text(c, "balancer"), format!("{}{tls}", text(c, "protocol")))
            } else {
                (String::new(), String::new())
            };
            rows.push([
                text(c, "name"),
                format!("{}{dns}", text(e, "address")),
                text(e, "weight"),
                balancer,
                protocol,
            ]);
        }
    }
    rows
}

/// A router's routes: what each matches, and where it sends (a cluster, or a split
/// with each entry's share of requests).
fn routes(config: &Value) -> String {
    let Some(routes) = config["routes"].as_array() else {
        return String::new();
    };
    let mut rows = vec![["     ROUTE".to_owned(), "MATCH".into(), "TO".into()]];
    for (i, r) in routes.iter().enumerate() {
        let name = r["name"]
            .as_str()
            .map_or_else(|| format!("#{i}"), str::to_owned);
        let to = match r["split"].as_array() {
            Some(split) => {
                let total: u64 = split.iter().filter_map(|s| s["weight"].as_u64()).sum();
                split
                    .iter()
                    .map(|s| {
                        let weight = s["weight"].as_u64().unwrap_or(0);
                        let share = (weight * 100).checked_div(total).unwrap_or(0);
                        format!("{} {weight} ({share}%)", text(s, "cluster"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            None => text(r, "cluster"),
        };
        rows.push([format!("     {name}"), r["match"].to_string(), to]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_diff_shows_mesh_lines_and_filter_versions_that_changed() {
        let a = json!({
            "version": 3, "mesh_file": "mesh.yaml", "cause": "apply mesh.yaml",
            "mesh": "a: 1\nb: 2\nc: 3\n",
            "filters": { "tag": "1".repeat(64), "gone": "2".repeat(64) },
        });
        let b = json!({
            "version": 5, "mesh_file": "mesh.yaml", "cause": "push tag 333333333333",
            "mesh": "a: 1\nb: 20\nc: 3\n",
            "filters": { "tag": "3".repeat(64) },
        });
        let out = unified(&a, &b, 3).unwrap();
        assert_eq!(
            out,
            "--- version 3 (mesh.yaml, apply mesh.yaml)\n\
             +++ version 5 (mesh.yaml, push tag 333333333333)\n\
             @@ -1,3 +1,3 @@\n a: 1\n-b: 2\n+b: 20\n c: 3\n\
             filter gone: 222222222222 -> (none)\n\
             filter tag: 111111111111 -> 333333333333\n"
        );
        assert_eq!(unified(&a, &a, 3).unwrap(), "");
    }

    #[test]
    fn a_split_shows_each_share() {
        let config = json!({ "routes": [
            { "name": "api", "match": { "path": { "prefix": "/api" } },
              "split": [{ "cluster": "blue", "weight": 80 }, { "cluster": "green", "weight": 20 }] },
            { "match": { "path": { "exact": "/" } }, "cluster": "blue" },
        ]});
        let out = routes(&config);
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ROUTE", "MATCH", "TO"]
        );
        assert!(lines[1].ends_with("blue 80 (80%), green 20 (20%)"), "{out}");
        assert!(
            lines[2].trim_start().starts_with("#1") && lines[2].ends_with("blue"),
            "{out}"
        );
    }
}
