//! `weft filter test`: run a built filter on one request in the proxy's own engine,
//! without a proxy, and print what it did: its decision, the request and the
//! response as it left them, properties, exchange settings, metrics and log lines.
//! Exits 0 when the filter ran, 1 when it failed (trap, panic, deadline, memory, or
//! its `init` refused the configuration), saying why.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value as Json, json};
use weft_harness::{
    Action, ExchangeError, FailurePolicy, Harness, Options, RequestSpec, Responder, ResponseSpec,
    Run, TlsInfo,
};

/// `weft filter`.
#[derive(clap::Args)]
pub(crate) struct FilterArgs {
    #[command(subcommand)]
    command: FilterCommand,
}

#[derive(clap::Subcommand)]
enum FilterCommand {
    /// Run a built filter (.wasm) on one request, as a proxy with it alone in its
    /// chain would, and print what it did. Exits 1 when the filter fails.
    Test(TestArgs),
}

/// `weft filter test`.
#[derive(clap::Args)]
struct TestArgs {
    /// The filter: a .wasm component, or `builtin:NAME`.
    file: String,
    /// Its configuration as JSON (`@FILE` reads a file); none is `null`.
    #[arg(long, default_value = "null")]
    config: String,
    /// The request line: method and path.
    #[arg(long, default_value = "GET /", value_parser = request_line)]
    request: (String, String),
    /// A request header, `name: value` (repeat it; `host` sets the authority).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = header)]
    headers: Vec<(String, String)>,
    /// The request body (`@FILE` reads a file).
    #[arg(long)]
    body: Option<String>,
    /// The upstream's answer to an attempt: a status, or how the attempt failed
    /// (connect-failure, reset, timeout, per-try-timeout, overflow,
    /// no-healthy-endpoint, protocol-error). Repeat it for retries; the last answers
    /// every later attempt. Default: 200.
    #[arg(long = "response", value_name = "STATUS", value_parser = response)]
    responses: Vec<Answer>,
    /// A header of every upstream answer, `name: value` (repeat it).
    #[arg(short = 'R', long = "response-header", value_name = "NAME: VALUE", value_parser = header)]
    response_headers: Vec<(String, String)>,
    /// The body of every upstream answer (`@FILE` reads a file).
    #[arg(long)]
    response_body: Option<String>,
    /// The identity the client proved by mutual TLS (a SPIFFE ID).
    #[arg(long, value_name = "ID")]
    peer_identity: Option<String>,
    /// What a failing hook does to the request: fail-closed, fail-open or reload.
    #[arg(long, default_value = "fail-closed", value_parser = policy)]
    failure: FailurePolicy,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// An answer `--response` names.
#[derive(Clone)]
enum Answer {
    Status(u16),
    Failed(ExchangeError),
}

pub(crate) fn run(args: &FilterArgs) -> anyhow::Result<()> {
    match &args.command {
        FilterCommand::Test(test) => run_test(test),
    }
}

fn run_test(args: &TestArgs) -> anyhow::Result<()> {
    let config = text_or_file(&args.config, "--config")?;
    serde_json::from_str::<Json>(&config).context("--config is not JSON")?;
    let (bytes, name, source) = module(&args.file)?;
    let options = Options {
        name,
        policy: args.failure,
        ..Options::default()
    };
    let harness = Harness::with_options(&bytes, &config, &source, options)
        .with_context(|| format!("the filter did not start: {source}"))?;
    let run = harness.request(spec(args)?)?;
    if args.json {
        println!("{:#}", to_json(&harness, &run));
    } else {
        print!("{}", render(&harness, &run));
    }
    match &run.failure {
        Some(f) => bail!("filter failed in {}: {}", f.hook.as_str(), f.reason),
        None => Ok(()),
    }
}

/// The module's bytes, its name in the chain, and how to call it in messages.
fn module(file: &str) -> anyhow::Result<(Vec<u8>, String, String)> {
    if let Some(name) = file.strip_prefix("builtin:") {
        let Some(bytes) = weft_builtin::get(name) else {
            let known: Vec<_> = weft_builtin::names().collect();
            bail!(
                "no built-in filter {name:?} (built-ins: {})",
                known.join(", ")
            );
        };
        return Ok((bytes.to_vec(), name.to_owned(), file.to_owned()));
    }
    let path = Path::new(file);
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {file}"))?;
    let name = (path.file_stem().and_then(|s| s.to_str())).unwrap_or("filter");
    Ok((bytes, name.to_owned(), file.to_owned()))
}

fn spec(args: &TestArgs) -> anyhow::Result<RequestSpec> {
    let (method, path) = &args.request;
    let mut spec = RequestSpec::new(method, path);
    for (name, value) in &args.headers {
        spec = spec.header(name, value);
    }
    if let Some(body) = &args.body {
        spec = spec.body(text_or_file(body, "--body")?);
    }
    let body = match &args.response_body {
        Some(b) => text_or_file(b, "--response-body")?,
        None => String::new(),
    };
    let answers = match args.responses.as_slice() {
        [] => &[Answer::Status(200)][..],
        given => given,
    };
    for answer in answers {
        let mut response = match answer {
            Answer::Status(status) => ResponseSpec::new(*status).body(body.as_str()),
            Answer::Failed(kind) => ResponseSpec::failed(*kind),
        };
        for (name, value) in &args.response_headers {
            response = response.header(name, value);
        }
        spec = spec.response(response);
    }
    if let Some(id) = &args.peer_identity {
        spec = spec.tls(TlsInfo {
            version: "TLSv1.3",
            peer_identity: Some(id.clone()),
            ..TlsInfo::default()
        });
    }
    Ok(spec)
}

/// `@FILE` reads a file; anything else is the text itself.
fn text_or_file(value: &str, flag: &str) -> anyhow::Result<String> {
    match value.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("{flag}: cannot read {file}"))
        }
        None => Ok(value.to_owned()),
    }
}

fn request_line(s: &str) -> Result<(String, String), String> {
    match s.trim().split_once(' ') {
        Some((method, path)) if !method.is_empty() && path.trim().starts_with('/') => {
            Ok((method.to_owned(), path.trim().to_owned()))
        }
        _ => Err(format!("{s:?} is not METHOD /PATH (e.g. 'GET /api')")),
    }
}

fn header(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        }
        _ => Err(format!("{s:?} is not NAME: VALUE")),
    }
}

fn response(s: &str) -> Result<Answer, String> {
    if let Ok(status) = s.parse::<u16>() {
        return match status {
            100..=999 => Ok(Answer::Status(status)),
            _ => Err(format!("{status} is not an HTTP status")),
        };
    }
    let kind = ExchangeError::from_name(s)
        .ok_or_else(|| format!("{s:?} is neither a status nor a way an attempt fails"))?;
    Ok(Answer::Failed(kind))
}

fn policy(s: &str) -> Result<FailurePolicy, String> {
    match s {
        "fail-closed" => Ok(FailurePolicy::FailClosed),
        "fail-open" => Ok(FailurePolicy::FailOpen),
        "reload" => Ok(FailurePolicy::Reload),
        _ => Err(format!("{s:?} is not fail-closed, fail-open or reload")),
    }
}

/// The run as text, one section per thing the filter did or left.
fn render(harness: &Harness, run: &Run) -> String {
    let mut out = format!(
        "filter    {} (sha256 {})\ninterest  {}\n",
        harness.name(),
        harness.sha256().get(..12).unwrap_or_default(),
        interest(harness),
    );
    for line in harness.init_logs() {
        out += &format!("init log  {} {}\n", line.level, line.message);
    }
    for step in &run.steps {
        let attempt = match step.attempt {
            0 => String::new(),
            n => format!(" (attempt {n})"),
        };
        out += &format!("{:<12}{}{attempt}\n", step.hook.as_str(), step.decision);
    }
    if let Some(f) = &run.failure {
        let what = if f.failed_open {
            "failed open"
        } else {
            "FAILED"
        };
        out += &format!("{what} in {}: {}\n", f.hook.as_str(), f.reason);
    }
    let r = &run.request;
    let authority = r.authority.as_deref().unwrap_or("-");
    out += &format!(
        "\nrequest   {} {} (authority {authority})\n",
        r.method, r.path
    );
    out += &lines(&r.headers, &r.body);
    let s = &run.response;
    out += &format!(
        "\nresponse  {} from {}\n",
        s.status,
        responder(&s.responder)
    );
    out += &lines(&s.headers, &s.body);
    out += &facts(run);
    let text = harness.metrics_text();
    let samples: Vec<&str> = (text.lines())
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    if !samples.is_empty() {
        out += "\nmetrics\n";
        for line in samples {
            out += &format!("  {line}\n");
        }
    }
    if !run.logs.is_empty() {
        out += "\nlogs\n";
        for line in &run.logs {
            out += &format!("  {} {}\n", line.level, line.message);
        }
    }
    out
}

/// Attempts, cluster, properties and settings, when there are any.
fn facts(run: &Run) -> String {
    let mut out = String::new();
    if run.attempts > 0 {
        let cluster = run.cluster.as_deref().unwrap_or("-");
        out += &format!(
            "\nupstream  {} attempt(s) to cluster {cluster}\n",
            run.attempts
        );
    }
    if !run.properties.is_empty() {
        out += "\nproperties\n";
        for (k, v) in &run.properties {
            out += &format!("  {k} = {:?}\n", String::from_utf8_lossy(v));
        }
    }
    let s = &run.settings;
    let mut settings = Vec::new();
    if let Some(t) = s.timeout {
        settings.push(format!("timeout {}", humantime::format_duration(t)));
    }
    if let Some(t) = s.per_try_timeout {
        settings.push(format!("per-try-timeout {}", humantime::format_duration(t)));
    }
    if let Some(r) = &s.route {
        settings.push(format!("route {r}"));
    }
    if let Some(id) = &s.upstream_identity {
        settings.push(format!("upstream identity {id}"));
    }
    if s.trace_set {
        settings.push("traceparent set".to_owned());
    }
    if !settings.is_empty() {
        out += &format!("\nsettings  {}\n", settings.join(", "));
    }
    out
}

fn lines(headers: &[(String, String)], body: &[u8]) -> String {
    let mut out = String::new();
    for (n, v) in headers {
        out += &format!("  {n}: {v}\n");
    }
    if !body.is_empty() {
        out += &format!("  body ({} bytes): {:?}\n", body.len(), preview(body));
    }
    out
}

/// A body as text, cut short when long.
fn preview(body: &[u8]) -> String {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(SHOWN)]).into_owned();
    if body.len() > SHOWN {
        text + "..."
    } else {
        text
    }
}

fn interest(harness: &Harness) -> String {
    let i = harness.interest();
    let body = |b: weft_harness::BodyMode| match b {
        weft_harness::BodyMode::Buffered => " (buffered body)",
        weft_harness::BodyMode::None => "",
    };
    let mut hooks = Vec::new();
    if i.request {
        hooks.push(format!("on-request{}", body(i.request_body)));
    }
    if i.response {
        hooks.push(format!("on-response{}", body(i.response_body)));
    }
    if i.done {
        hooks.push("on-done".to_owned());
    }
    if hooks.is_empty() {
        return "no hooks: requests pass untouched".to_owned();
    }
    let mut out = hooks.join(", ");
    if i.keep_request_body > 0 {
        out += &format!("; keeps request bodies up to {} bytes", i.keep_request_body);
    }
    out
}

fn responder(r: &Responder) -> String {
    match r {
        Responder::Upstream => "the upstream".to_owned(),
        Responder::Filter => "the filter".to_owned(),
        Responder::Proxy(None) => "the proxy".to_owned(),
        Responder::Proxy(Some(kind)) => format!("the proxy ({})", kind.name()),
    }
}

/// The run as JSON: the same facts as the text, for scripts.
fn to_json(harness: &Harness, run: &Run) -> Json {
    let headers =
        |h: &[(String, String)]| -> Json { h.iter().map(|(n, v)| json!([n, v])).collect() };
    let body = |b: &[u8]| Json::String(String::from_utf8_lossy(b).into_owned());
    let action = match &run.action {
        Action::Continue => json!({"continue": null}),
        Action::Respond(l) => json!({"respond": {
            "status": l.status, "headers": headers(&l.headers), "body": body(&l.body)}}),
        Action::Route(c) => json!({"route": c}),
        Action::Delay(d) => json!({"delay_ms": millis(*d)}),
    };
    let responder = match &run.response.responder {
        Responder::Upstream => json!("upstream"),
        Responder::Filter => json!("filter"),
        Responder::Proxy(kind) => json!({"proxy": kind.map(ExchangeError::name)}),
    };
    let metrics: Vec<Json> = (harness.metrics().iter())
        .map(|s| json!({"name": s.name, "labels": headers(&s.labels), "value": s.value.as_f64()}))
        .collect();
    let s = &run.settings;
    json!({
        "filter": harness.name(),
        "sha256": harness.sha256(),
        "action": action,
        "steps": run.steps.iter().map(|s| json!({
            "hook": s.hook.as_str(), "attempt": s.attempt, "decision": s.decision})).collect::<Vec<_>>(),
        "failure": run.failure.as_ref().map(|f| json!({
            "hook": f.hook.as_str(), "reason": f.reason, "failed_open": f.failed_open})),
        "request": {
            "method": run.request.method, "path": run.request.path,
            "authority": run.request.authority, "headers": headers(&run.request.headers),
            "body": body(&run.request.body)},
        "response": {
            "status": run.response.status, "headers": headers(&run.response.headers),
            "body": body(&run.response.body), "responder": responder},
        "attempts": run.attempts,
        "cluster": run.cluster,
        "properties": run.properties.iter().map(|(k, v)| json!([k, body(v)])).collect::<Vec<_>>(),
        "settings": {
            "timeout_ms": s.timeout.map(millis), "per_try_timeout_ms": s.per_try_timeout.map(millis),
            "route": s.route, "upstream_identity": s.upstream_identity, "trace_set": s.trace_set},
        "metrics": metrics,
        "logs": run.logs.iter().map(|l| json!({
            "level": l.level.as_str(), "message": l.message})).collect::<Vec<_>>(),
    })
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
