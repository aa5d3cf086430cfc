//! `weft stat`: success rate, request rate and latency per service and route across
//! the mesh, from the traffic proxies report to the config server
//! (`GET /v1/stats`), redrawn live in a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::client::{ServerArgs, table, text, url_encode};

/// What `weft stat` was asked.
#[derive(clap::Args)]
pub(crate) struct StatArgs {
    /// Sum the traffic of this last stretch of time (1s to 2m).
    #[arg(long, default_value = "30s", value_parser = weft_config::units::parse_duration)]
    window: Duration,
    /// Whose counts to show: `destination` (beside the callee), `source` (beside the
    /// caller), or `auto`: per service, the callee side's when a proxy beside it
    /// reports, else the caller side's.
    #[arg(long, default_value = "auto", value_parser = ["auto", "destination", "source"])]
    reporter: String,
    /// Print once and exit (the default when standard output is not a terminal).
    #[arg(long)]
    once: bool,
    /// Print the server's JSON (once).
    #[arg(long)]
    json: bool,
    /// How often the live view is redrawn.
    #[arg(long, default_value = "2s", value_parser = weft_config::units::parse_duration)]
    refresh: Duration,
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) async fn stat(args: &StatArgs) -> anyhow::Result<()> {
    let path = format!(
        "/v1/stats?window={}s&reporter={}",
        args.window.as_secs(),
        url_encode(&args.reporter)
    );
    let first = args.server.call(Method::GET, &path, None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&first)?);
        return Ok(());
    }
    if args.once || !std::io::stdout().is_terminal() {
        print!("{}", render(&first));
        return Ok(());
    }
    let mut view = Ok(first);
    let refresh = args.refresh.max(Duration::from_millis(200));
    loop {
        // Home, clear, then the view: one redraw per refresh.
        let text = match &view {
            Ok(v) => render(v),
            Err(e) => format!("{}\n(retrying every {}s)\n", e, refresh.as_secs_f64()),
        };
        print!("\x1b[H\x1b[2J{text}");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(refresh) => {}
        }
        view = args.server.call(Method::GET, &path, None).await;
    }
}

/// The table `weft stat` prints: per service a line for all its routes (`*`), then
/// one per route.
fn render(v: &Value) -> String {
    let mut out = format!(
        "window {}s ({}s of it collected); proxies report every {}s\n",
        text(v, "window_seconds"),
        number(v.get("covered_seconds"), 0),
        number(v.get("report_interval_seconds"), 0),
    );
    let services = v
        .get("services")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if services.is_empty() {
        out.push_str("no traffic reported in the window\n");
        out.push_str(&dropped_note(v));
        return out;
    }
    let mut rows = vec![[
        "SERVICE".to_owned(),
        "ROUTE".into(),
        "REPORTER".into(),
        "REQUESTS".into(),
        "SUCCESS".into(),
        "RPS".into(),
        "P50".into(),
        "P95".into(),
        "P99".into(),
        "PROXIES".into(),
    ]];
    for s in services {
        let service = text(s, "service");
        let reporter = text(s, "reporter");
        let routes = s
            .get("routes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let all = std::iter::once(("*".to_owned(), s));
        let each = routes.iter().map(|r| {
            let route = r.get("route").and_then(Value::as_str).unwrap_or_default();
            let route = if route.is_empty() { "(none)" } else { route };
            (route.to_owned(), r)
        });
        for (route, line) in all.chain(each) {
            let latency = line.get("latency_ms");
            let ms = |q: &str| milliseconds(latency.and_then(|l| l.get(q)));
            rows.push([
                service.clone(),
                route,
                reporter.clone(),
                text(line, "requests"),
                percent(line.get("success_rate")),
                number(line.get("rps"), 2),
                ms("p50"),
                ms("p95"),
                ms("p99"),
                text(line, "proxies"),
            ]);
        }
    }
    out.push_str(&table(&rows));
    out.push_str(&dropped_note(v));
    out
}

/// What the server dropped of the reports, and why; nothing when it dropped none.
fn dropped_note(v: &Value) -> String {
    let mut out = String::new();
    if let Some(n) = v.get("dropped_rows").and_then(Value::as_u64)
        && n > 0
    {
        let dropped = v.get("dropped");
        let count = |why: &str| dropped.and_then(|d| d.get(why)).and_then(Value::as_u64);
        let why: Vec<String> = [
            ("full", "past the services and routes the server keeps"),
            ("invalid", "that made no sense"),
            ("report_too_long", "of reports with too many rows"),
        ]
        .into_iter()
        .filter_map(|(key, what)| count(key).filter(|n| *n > 0).map(|n| format!("{n} {what}")))
        .collect();
        out.push_str(&format!(
            "{n} report rows were dropped since the server started"
        ));
        if !why.is_empty() {
            out.push_str(&format!(": {}", why.join(", ")));
        }
        out.push('\n');
    }
    out
}

fn number(v: Option<&Value>, decimals: usize) -> String {
    match v.and_then(Value::as_f64) {
        Some(n) => format!("{n:.decimals$}"),
        None => "-".into(),
    }
}

/// A share from 0 to 1 as a percentage; anything else is no share, whatever the
/// server says.
fn percent(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(n) if (0.0..=1.0).contains(&n) => format!("{:.2}%", n * 100.0),
        _ => "-".into(),
    }
}

/// Latency with the precision that matters at its size.
fn milliseconds(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(ms) if ms < 10.0 => format!("{ms:.2}ms"),
        Some(ms) if ms < 1000.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{:.2}s", ms / 1000.0),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_services_and_routes() {
        let v = serde_json::json!({
            "window_seconds": 30, "covered_seconds": 12.4, "report_interval_seconds": 5.0,
            "dropped_rows": 0,
            "services": [{
                "service": "bank", "reporter": "destination", "requests": 9, "errors": 2,
                "success_rate": 0.7777777, "rps": 0.725, "proxies": 2,
                "latency_ms": {"p50": 3.456, "p95": 48.2, "p99": 1500.0},
                "routes": [{"route": "", "requests": 9, "errors": 2, "success_rate": 0.7777777,
                    "rps": 0.725, "proxies": 2, "latency_ms": {"p50": null, "p95": null, "p99": null}}]
            }]
        });
        let out = render(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "window 30s (12s of it collected); proxies report every 5s"
        );
        assert!(lines[1].starts_with("SERVICE  ROUTE   REPORTER     REQUESTS  SUCCESS"));
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "bank",
                "*",
                "destination",
                "9",
                "77.78%",
                "0.72",
                "3.46ms",
                "48ms",
                "1.50s",
                "2"
            ]
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(row[1], "(none)");
        assert_eq!(row[6..9], ["-", "-", "-"]);
    }

    #[test]
    fn never_shows_a_success_rate_above_100_percent() {
        assert_eq!(percent(Some(&serde_json::json!(1.0))), "100.00%");
        assert_eq!(percent(Some(&serde_json::json!(0.0))), "0.00%");
        for wrong in [
            serde_json::json!(18446744073709551616.0),
            serde_json::json!(1.0001),
            serde_json::json!(-0.5),
            serde_json::json!("1"),
        ] {
            assert_eq!(percent(Some(&wrong)), "-", "{wrong}");
        }
        let v = serde_json::json!({
            "window_seconds": 30, "dropped_rows": 3,
            "dropped": {"full": 0, "invalid": 2, "report_too_long": 1}, "services": []
        });
        assert!(
            render(&v).ends_with(
                "3 report rows were dropped since the server started: 2 that made no sense, \
                 1 of reports with too many rows\n"
            ),
            "{}",
            render(&v)
        );
    }
}
