//! `weft check`: a mesh file checked offline, a running config server and its
//! proxies checked live, or both, one line per check (`ok`, `warn`, `fail`: what,
//! where, and what to do). Any `fail` exits non-zero.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use http::{Method, StatusCode, header};
use serde_json::Value;
use weft_config_server::{FilterOutcome, MeshCheck};

use crate::client::{Answer, ServerArgs, TokenArgs, refusal, text, url_encode, warnings};

/// How far this machine's clock may be from the server's before it is worth saying.
const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// How long a proxy may take to apply the current version before it counts as late.
const LATE: Duration = Duration::from_secs(10);

/// `weft check`.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// A mesh config (YAML) to check.
    file: Option<PathBuf>,
    /// Check against this running config server too: the file as the server would
    /// apply it (its pushed filters included; a dry run, nothing stored), its
    /// proxies, and the clock.
    #[arg(long, env = "WEFT_SERVER", value_name = "URL")]
    server: Option<String>,
    #[command(flatten)]
    token: TokenArgs,
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// The lines printed so far, counted.
#[derive(Default)]
struct Report {
    oks: usize,
    warns: usize,
    fails: usize,
}

impl Report {
    fn line(&mut self, level: Level, what: impl std::fmt::Display) {
        let tag = match level {
            Level::Ok => {
                self.oks += 1;
                "ok"
            }
            Level::Warn => {
                self.warns += 1;
                "warn"
            }
            Level::Fail => {
                self.fails += 1;
                "fail"
            }
        };
        println!("{tag:<5} {what}");
    }
}

pub(crate) async fn check(args: &CheckArgs) -> anyhow::Result<()> {
    if args.file.is_none() && args.server.is_none() {
        bail!("give a mesh file to check, --server URL to check a running server, or both");
    }
    let mut report = Report::default();
    let server = args.server.as_ref().map(|url| ServerArgs {
        server: url.clone(),
        token: args.token.clone(),
    });
    if let Some(file) = &args.file {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
        offline(&mut report, &name, &text, server.is_some()).await?;
        if let Some(server) = &server {
            dry_run(&mut report, server, &name, &text).await?;
        }
    }
    if let Some(server) = &server {
        live(&mut report, server, args.file.is_none()).await;
    }
    println!(
        "{} ok, {} {}, {} {}",
        report.oks,
        report.warns,
        if report.warns == 1 {
            "warning"
        } else {
            "warnings"
        },
        report.fails,
        if report.fails == 1 {
            "failure"
        } else {
            "failures"
        },
    );
    if report.fails > 0 {
        bail!(
            "{} {} failed; each `fail` line says where and what to do",
            report.fails,
            if report.fails == 1 { "check" } else { "checks" }
        );
    }
    Ok(())
}

/// What can be checked without a server: the file parses, every group validates,
/// every built-in filter loads with its config. Pushed filters are left to the
/// server's dry run when there is a server, and said to be unchecked otherwise.
async fn offline(report: &mut Report, name: &str, text: &str, server: bool) -> anyhow::Result<()> {
    let (text, file) = (text.to_owned(), name.to_owned());
    // Loading filters compiles them: work for a blocking thread.
    let checked =
        tokio::task::spawn_blocking(move || weft_config_server::check_mesh_offline(&text, &file))
            .await
            .context("the offline check stopped")?;
    let MeshCheck { groups, filters } = match checked {
        Ok(c) => c,
        Err(weft_config_server::CheckError::Config(e)) => {
            report.line(Level::Fail, format!("{e}; fix it there"));
            return Ok(());
        }
        Err(e) => bail!("{e}"),
    };
    let valid = groups.iter().filter(|g| g.is_ok()).count();
    let level = if valid == groups.len() {
        Level::Ok
    } else {
        Level::Fail
    };
    report.line(
        level,
        format!(
            "{name}: parses; {valid} of {} groups validate",
            groups.len()
        ),
    );
    for e in groups.iter().filter_map(|g| g.as_ref().err()) {
        report.line(
            Level::Fail,
            format!("{e}; fix it there (its group's filters are not loaded until then)"),
        );
    }
    for f in filters {
        let which = format!("{}: {} {} ({})", f.location, f.key, f.name, f.module);
        match f.outcome {
            FilterOutcome::Loaded => {
                report.line(Level::Ok, format!("{which}: loads with its config"))
            }
            FilterOutcome::Failed(why) => report.line(Level::Fail, format!("{why}; fix it there")),
            // The dry run loads it, with the version the server would resolve.
            FilterOutcome::Pushed if server => {}
            FilterOutcome::Pushed => report.line(
                Level::Warn,
                format!(
                    "{which}: a pushed filter, not checked offline; give --server URL to \
                     check it with the server's filters"
                ),
            ),
        }
    }
    Ok(())
}

/// The file as the server would apply it now: `PUT /v1/mesh?dry_run=true`.
async fn dry_run(
    report: &mut Report,
    server: &ServerArgs,
    name: &str,
    mesh: &str,
) -> anyhow::Result<()> {
    let path = format!("/v1/mesh?dry_run=true&file={}", url_encode(name));
    let body = Some((mesh.to_owned().into(), "application/yaml"));
    let answer = match server.send(Method::PUT, &path, body).await {
        Ok(a) => a,
        Err(e) => {
            // The live checks say it once, with what to do.
            tracing::debug!("dry run: {e:#}");
            return Ok(());
        }
    };
    if answer.status.is_success() {
        report.line(
            Level::Ok,
            format!(
                "{name}: {} would apply it as version {} (dry run: every filter, pushed ones \
                 included, loads with its config; nothing stored)",
                server.server,
                text(&answer.value, "next_version")
            ),
        );
        for w in warnings(&answer.value) {
            report.line(Level::Warn, format!("{name}: {w}"));
        }
    } else {
        let why = refusal(&Method::PUT, &path, &answer);
        let todo = if answer.status == StatusCode::UNAUTHORIZED {
            "the dry run needs the API token"
        } else {
            "fix it there and check again"
        };
        report.line(
            Level::Fail,
            format!("{name}: {}; {todo}", why.replace('\n', "; ")),
        );
    }
    Ok(())
}

/// The server, its clock, and where each proxy stands; and, when no file was
/// given, what the current version selects that is likely a mistake.
async fn live(report: &mut Report, server: &ServerArgs, current_warnings: bool) {
    let url = &server.server;
    let Some(answer) = proxies_answer(report, server).await else {
        return;
    };
    let v = &answer.value;
    let date = answer.headers.get(header::DATE);
    let Some(version) = v["version"].as_u64() else {
        report.line(
            Level::Warn,
            format!("server {url}: no mesh config applied yet; apply one with `weft apply FILE`"),
        );
        clock(report, date);
        return;
    };
    report.line(
        Level::Ok,
        format!(
            "server {url}: answers; current version {version} (made {})",
            text(v, "created")
        ),
    );
    clock(report, date);
    proxies(report, v, version, url);
    version_warnings(report, v, version, current_warnings);
}

/// `GET /v1/proxies`, or none when the server cannot be asked (said as a fail).
async fn proxies_answer(report: &mut Report, server: &ServerArgs) -> Option<Answer> {
    let url = &server.server;
    match server.send(Method::GET, "/v1/proxies", None).await {
        Ok(a) if a.status.is_success() => Some(a),
        Ok(a) => {
            let why = refusal(&Method::GET, "/v1/proxies", &a).replace('\n', "; ");
            report.line(Level::Fail, format!("server {url}: {why}"));
            None
        }
        Err(e) => {
            report.line(
                Level::Fail,
                format!(
                    "server {url}: {}; start it, or give the right --server",
                    crate::report(&e)
                ),
            );
            None
        }
    }
}

/// Where each proxy stands against `version`, and how many are on it.
fn proxies(report: &mut Report, v: &Value, version: u64, url: &str) {
    let proxies = v["proxies"].as_array().cloned().unwrap_or_default();
    let connected = proxies.iter().filter(|p| p["connected"] == true).count();
    if connected == 0 {
        report.line(
            Level::Warn,
            format!(
                "proxies: none connected; start one with `weft proxy --config-server {url} \
                 --service NAME`"
            ),
        );
    }
    let mut current = 0;
    for p in &proxies {
        if proxy(report, p, version) {
            current += 1;
        }
    }
    if connected > 0 {
        report.line(
            Level::Ok,
            format!("proxies: {connected} connected, {current} on version {version}"),
        );
    }
}

/// What is said of one proxy that is not on `version`; whether it is on it.
fn proxy(report: &mut Report, p: &Value, version: u64) -> bool {
    let node = text(p, "node");
    let applied = text(p, "applied");
    match p["state"].as_str() {
        Some("current") => return true,
        Some("refused") => report.line(
            Level::Fail,
            format!(
                "proxy {node}: refuses version {version} and serves version {applied}: {}; \
                 fix what it names and apply again, or go back with `weft rollback`",
                text(&p["last"], "error")
            ),
        ),
        Some("pending") => {
            let waited = p["waiting_seconds"].as_u64().unwrap_or(0);
            if Duration::from_secs(waited) >= LATE {
                report.line(
                    Level::Warn,
                    format!(
                        "proxy {node}: has not applied version {version} after {waited}s \
                         (serves version {applied}); its log says what it is doing"
                    ),
                );
            } else {
                report.line(
                    Level::Ok,
                    format!("proxy {node}: applying version {version} (sent {waited}s ago)"),
                );
            }
        }
        Some("disconnected") => report.line(
            Level::Warn,
            format!(
                "proxy {node}: disconnected; it serves what it had (version {applied}) \
                 until it reconnects"
            ),
        ),
        // Said by the warnings below, with the groups there are.
        _ => {}
    }
    false
}

/// What the current version selects that is likely a mistake: all of it when no
/// file was checked, else only what the file's dry run could not say.
fn version_warnings(report: &mut Report, v: &Value, version: u64, current_warnings: bool) {
    if current_warnings {
        for w in warnings(v) {
            report.line(Level::Warn, format!("version {version}: {w}"));
        }
    } else {
        // The file's warnings came with its dry run; a proxy no group selects is
        // the one thing said of the current version too.
        for w in (v["warnings"].as_array().into_iter().flatten())
            .filter(|w| w["kind"] == "proxy_without_group")
        {
            report.line(
                Level::Warn,
                format!("version {version}: {}", text(w, "message")),
            );
        }
    }
}

/// This machine's clock against the server's `Date`.
fn clock(report: &mut Report, date: Option<&http::HeaderValue>) {
    let server = date
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok());
    let Some(server) = server else {
        report.line(
            Level::Warn,
            "clock: the server sent no Date header, so the clocks cannot be compared",
        );
        return;
    };
    let here = SystemTime::now();
    let (skew, side) = match here.duration_since(server) {
        Ok(ahead) => (ahead, "ahead of"),
        Err(behind) => (behind.duration(), "behind"),
    };
    // The header has whole seconds: a second is no skew.
    if skew > CLOCK_SKEW {
        report.line(
            Level::Warn,
            format!(
                "clock: this machine is {}s {side} the server; the times of versions and \
                 proxies will look off: sync both clocks (NTP)",
                skew.as_secs()
            ),
        );
    } else {
        report.line(
            Level::Ok,
            format!(
                "clock: this machine and the server agree within {}s",
                CLOCK_SKEW.as_secs()
            ),
        );
    }
}
