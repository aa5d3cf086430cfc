//! The operator's commands against a real `weft config-server` and real `weft proxy`
//! processes: exit codes that say whether a version is in force, warnings for a mesh
//! that selects no proxy, `weft check`, and what is in force (`history`, `get`,
//! `diff`, `proxy-config`).

use std::path::Path;
use std::process::Output;

use weft_testkit::{ANY_PORT, TempDir, listener, output, refused};
use weft_tests::guests;

mod support;

use support::plane::{ProxyProc, Server, config_server, proxy_of, write};
use support::weft;

/// A mesh whose one group (`select`) gets an `inbound` listener, plus `extra` (more
/// listeners).
fn mesh(select: &str, extra: &str) -> String {
    format!(
        "clusters:
  - name: web
    endpoints: [\"127.0.0.1:9\"]
proxies:
  - select: {select}
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: web
{extra}"
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a command printed, for assertion messages.
fn both(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

/// Stop (`-STOP`) or resume (`-CONT`) a proxy process: stopped, it holds its
/// stream and answers nothing.
fn pause(proxy: &ProxyProc, sig: &str) {
    proxy.process.signal(sig);
}

/// A `weft` client command with no token anywhere it would look by default.
fn without_token(server: &Server, home: &Path, args: &[&str]) -> Output {
    output(
        weft()
            .args(args)
            .args(["--server", &server.url])
            .env("XDG_DATA_HOME", home),
    )
}

#[test]
fn apply_wait_and_status_fail_with_the_reason_when_a_proxy_refuses_or_is_late() {
    let dir = TempDir::new();
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    let good = write(&dir.0, "mesh.yaml", &mesh("{ service: web }", ""));
    let first = server.apply(&good);
    let a = proxy_of(
        &server.url,
        &server.proxy_token,
        "web-a",
        "web",
        &dir.0.join("a"),
        1,
    );
    server.converged(&["web-a"], first);

    // --wait returns once the proxy has applied the new version.
    let out = server.cli(&["apply", &good, "--wait"]);
    assert!(out.status.success(), "{}", both(&out));
    let said = stdout(&out);
    assert!(
        said.contains("web-a: applied version 2")
            && said.contains("version 2 is in force on 1 proxy"),
        "{said}"
    );
    assert!(server.cli(&["status"]).status.success());

    // A listener on a port this test holds: the proxy cannot bind it and refuses.
    let taken = listener();
    let extra = format!(
        "      - name: mirror\n        address: {}\n        default_cluster: web\n",
        taken.local_addr().unwrap()
    );
    let refused = write(&dir.0, "taken.yaml", &mesh("{ service: web }", &extra));
    let out = server.cli(&["apply", "-f", &refused, "--wait", "--timeout", "60s"]);
    assert!(!out.status.success(), "{}", both(&out));
    assert!(stdout(&out).contains("version 3"), "{}", both(&out));
    let why = stderr(&out);
    assert!(
        why.contains("web-a refused version 3: ")
            && why.contains("proxies[0].listeners[1].address")
            && why.contains("cannot listen"),
        "{why}"
    );

    // `weft status` fails while it refuses, and says why.
    let out = server.cli(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stdout(&out).contains("NACK: web-a refused version 3: "),
        "{}",
        both(&out)
    );
    assert!(
        stderr(&out).contains("not every proxy is on version 3: web-a refuses it"),
        "{}",
        both(&out)
    );
    // The JSON is for reading: it says where each proxy stands, whatever that is.
    let status = server.proxies();
    assert_eq!(status["proxies"][0]["state"], "refused", "{status:#}");
    assert_eq!(status["proxies"][0]["applied"], 2, "{status:#}");
    // `weft check` fails on it too, with the proxy's reason and what to do.
    let out = server.cli(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let lines = stdout(&out);
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("fail  proxy web-a: refuses version 3")
                && l.contains("cannot listen")
                && l.contains("weft rollback")),
        "{lines}"
    );

    // A proxy that holds its stream but answers nothing (stopped) is late: --wait
    // gives up at its timeout, and `weft status` fails past its grace.
    pause(&a, "-STOP");
    let out = server.cli(&["apply", "-f", &good, "--wait", "--timeout", "1s"]);
    let status = server.cli(&["status", "--grace", "0s"]);
    let relaxed = server.cli(&["status", "--grace", "1h"]);
    pause(&a, "-CONT");
    assert!(!out.status.success(), "{}", both(&out));
    assert!(
        stderr(&out).contains("timed out after 1s: not yet on version 4: web-a (serves version 2)"),
        "{}",
        both(&out)
    );
    assert_eq!(status.status.code(), Some(1), "{}", both(&status));
    assert!(
        stdout(&status).contains("LATE: web-a has not applied version 4 after ")
            && stdout(&status).contains("(it serves 2)"),
        "{}",
        both(&status)
    );
    assert!(
        stderr(&status).contains("web-a has not applied it after"),
        "{}",
        both(&status)
    );
    // Within the grace, a proxy that is applying is no failure.
    assert!(relaxed.status.success(), "{}", both(&relaxed));
    server.converged(&["web-a"], 4);
    let out = server.cli(&["status"]);
    assert!(out.status.success(), "{}", both(&out));
}

#[test]
fn apply_warns_when_a_group_selects_no_proxy_and_strict_refuses_it() {
    let dir = TempDir::new();
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    let good = write(&dir.0, "mesh.yaml", &mesh("{ service: cart }", ""));
    let first = server.apply(&good);
    let _cart = proxy_of(
        &server.url,
        &server.proxy_token,
        "cart-1",
        "cart",
        &dir.0.join("cart"),
        1,
    );
    server.converged(&["cart-1"], first);

    // A typo of the service: applied, with warnings that name the group, its
    // selector, and the proxies there are.
    let typo = write(&dir.0, "typo.yaml", &mesh("{ service: carts }", ""));
    let out = server.cli(&["apply", "-f", &typo]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stdout(&out).contains("version 2"), "{}", both(&out));
    let warned = stderr(&out);
    assert!(
        warned.contains(
            "warning: group 0 (select: { service: carts }) selects no connected proxy (did \
             you mean service \"cart\"?); connected: cart-1 (service cart, labels zone=a)"
        ),
        "{warned}"
    );
    assert!(
        warned.contains(
            "warning: proxy cart-1 (service cart, labels zone=a) is selected by no group"
        ),
        "{warned}"
    );

    // Strict: refused, and nothing stored.
    let out = server.cli(&["apply", "-f", &typo, "--strict"]);
    assert!(!out.status.success(), "{}", both(&out));
    let refused = stderr(&out);
    assert!(
        refused.contains("409")
            && refused.contains("not applied (strict)")
            && refused.contains("carts"),
        "{refused}"
    );
    let history: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["history", "--json"])).unwrap();
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        2,
        "{history:#}"
    );
    // A mesh that selects the proxy passes strict.
    let out = server.cli(&["apply", "-f", &good, "--strict", "--wait"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(stderr(&out).is_empty(), "{}", both(&out));

    // `weft check` says the same of the file, as warnings: no failure.
    let out = server.cli(&["check", &typo]);
    assert!(out.status.success(), "{}", both(&out));
    let lines = stdout(&out);
    assert!(
        lines.lines().any(|l| l.starts_with("warn  ")
            && l.contains("group 0 (select: { service: carts }) selects no connected proxy")),
        "{lines}"
    );
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("ok    ") && l.contains("would apply it as version 4")),
        "{lines}"
    );
}

/// A mesh with a pushed filter, a router and a fault filter; the router routes
/// `/` to `cluster`.
fn checked_mesh(cluster: &str, pushed: &str) -> String {
    format!(
        "clusters:
  - name: web
    endpoints: [\"127.0.0.1:9\"]
proxies:
  - select: {{}}
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        filters:
          - name: tag
            module: filter:{pushed}
          - name: router
            module: builtin:router
            config:
              routes:
                - match: {{ path: {{ prefix: / }} }}
                  cluster: {cluster}
          - name: fault
            module: builtin:fault
            config: {{ abort: {{ status: 503, header: {{ name: x-fault, value: abort }} }} }}
"
    )
}

#[test]
fn check_says_what_is_wrong_offline_and_against_a_running_server() {
    let dir = TempDir::new();
    let check = |args: &[&str]| {
        output(
            weft()
                .arg("check")
                .args(args)
                .env("WEFT_CACHE_DIR", dir.0.join("cache")),
        )
    };
    // Offline: the router names a cluster the mesh lacks.
    let bad = write(&dir.0, "bad.yaml", &checked_mesh("nowhere", "tag"));
    let out = check(&[&bad]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let lines = stdout(&out);
    let line = |prefix: &str, part: &str| {
        lines
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains(part))
            .unwrap_or_else(|| panic!("no {prefix:?} line with {part:?}:\n{lines}"))
            .to_owned()
    };
    line("ok    ", "bad.yaml: parses; 1 of 1 groups validate");
    let unchecked = line(
        "warn  ",
        "proxies[0].listeners[0].filters[0] tag (filter:tag)",
    );
    assert!(
        unchecked.contains("not checked offline") && unchecked.contains("--server"),
        "{unchecked}"
    );
    let router = line(
        "fail  ",
        "proxies[0].listeners[0].filters[1].config.routes[0].cluster",
    );
    assert!(
        router.contains(&format!("{bad}:17:28:")) && router.contains("\"nowhere\""),
        "{router}"
    );
    line(
        "ok    ",
        "proxies[0].listeners[0].filters[2] fault (builtin:fault): loads with its config",
    );
    assert!(stderr(&out).contains("1 check failed"), "{}", both(&out));

    // A file that does not parse is one failure that says where.
    let broken = write(&dir.0, "broken.yaml", "proxies: [\n");
    let out = check(&[&broken]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stdout(&out).starts_with(&format!("fail  {broken}:")),
        "{}",
        both(&out)
    );

    let good = write(&dir.0, "good.yaml", &checked_mesh("web", "tag"));
    let out = check(&[&good]);
    assert!(out.status.success(), "{}", both(&out));

    // Against a server: the pushed filter is checked there, by a dry run that stores
    // nothing.
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    let out = server.cli(&["check", &good]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.starts_with(&format!("fail  {good}: "))
                && l.contains("proxies[0].listeners[0].filters[0].module")
                && l.contains("no filter was pushed under the name \"tag\"")),
        "{}",
        both(&out)
    );
    server.cli_ok(&["push", guests::TAG_ONE, "--name", "tag"]);
    let out = server.cli(&["check", &good]);
    assert!(out.status.success(), "{}", both(&out));
    let lines = stdout(&out);
    let dry = lines
        .lines()
        .find(|l| l.contains("would apply it as version 1"))
        .unwrap_or_else(|| panic!("{lines}"));
    assert!(
        dry.starts_with("ok    ") && dry.contains("nothing stored"),
        "{dry}"
    );
    assert!(!lines.contains("not checked offline"), "{lines}");
    for (prefix, part) in [
        (
            "ok    ",
            "clock: this machine and the server agree within 5s",
        ),
        ("warn  ", "no mesh config applied yet"),
        ("warn  ", "group 0 (select: {}) selects no connected proxy"),
    ] {
        assert!(
            lines
                .lines()
                .any(|l| l.starts_with(prefix) && l.contains(part)),
            "no {prefix:?} line with {part:?}:\n{lines}"
        );
    }
    let history = server.cli_ok(&["history"]);
    assert!(history.contains("no version yet"), "{history}");

    // A pushed filter the server does not have fails there, at its key.
    let unknown = write(&dir.0, "unknown.yaml", &checked_mesh("web", "nothere"));
    let out = server.cli(&["check", &unknown]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("fail  ")
            && l.contains("proxies[0].listeners[0].filters[0].module")
            && l.contains("\"nothere\"")),
        "{}",
        both(&out)
    );

    // A server that does not answer is a failure that says so.
    let gone = refused();
    let url = format!("http://{}", gone.addr);
    let out = check(&["--server", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    assert!(
        stdout(&out).starts_with(&format!("fail  server {url}: ")),
        "{}",
        both(&out)
    );
}

/// The mesh of the inspection test: a router splitting `/api` between blue (two
/// endpoints, one of weight 3) and green.
fn split_mesh(blue: u32, green: u32) -> String {
    format!(
        "clusters:
  - name: blue
    endpoints: [\"127.0.0.1:9\", {{ address: \"127.0.0.2:9\", weight: 3 }}]
  - name: green
    endpoints: [\"127.0.0.3:9\"]
proxies:
  - select: {{ service: web }}
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        filters:
          - name: tag
            module: filter:tag
            config: {{ prefix: v- }}
          - name: router
            module: builtin:router
            config:
              routes:
                - name: api
                  match: {{ path: {{ prefix: /api }} }}
                  split:
                    - {{ cluster: blue, weight: {blue} }}
                    - {{ cluster: green, weight: {green} }}
"
    )
}

/// The sha256 `weft push` printed.
fn pushed_sha(out: &str) -> String {
    out.split("sha256:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no sha256 in {out:?}"))
        .to_owned()
}

#[test]
fn history_get_diff_and_proxy_config_show_what_is_in_force() {
    let dir = TempDir::new();
    let server = config_server(&dir.0.join("server"), ANY_PORT);
    let one = pushed_sha(&server.cli_ok(&["push", guests::TAG_ONE, "--name", "tag"]));
    let v1 = split_mesh(80, 20);
    let file = write(&dir.0, "mesh.yaml", &v1);
    assert_eq!(server.apply(&file), 1);
    let v2 = split_mesh(50, 50);
    write(&dir.0, "mesh.yaml", &v2);
    assert_eq!(server.apply(&file), 2);
    let two = pushed_sha(&server.cli_ok(&["push", guests::TAG_TWO, "--name", "tag"]));
    let _a = proxy_of(
        &server.url,
        &server.proxy_token,
        "web-a",
        "web",
        &dir.0.join("a"),
        1,
    );
    server.converged(&["web-a"], 3);

    // History: each version, what made it, the file, and who from where.
    let history = server.cli_ok(&["history"]);
    let rows: Vec<&str> = history.lines().collect();
    assert_eq!(rows.len(), 4, "{history}");
    assert!(
        rows[1].starts_with("1 ") && rows[1].contains(&format!("apply {file}")),
        "{history}"
    );
    assert!(
        rows[3].starts_with("3 (current)") && rows[3].contains(&format!("push tag {}", &two[..12])),
        "{history}"
    );
    // Who: the login name when there is one, and the address it came from.
    assert!(rows[1].trim_end().ends_with("127.0.0.1"), "{history}");

    // Get: the mesh text as applied, the current version by default.
    assert_eq!(server.cli_ok(&["get", "1"]), v1);
    assert_eq!(server.cli_ok(&["get"]), v2);
    let missing = server.cli_err(&["get", "9"]);
    assert!(
        missing.contains("404") && missing.contains("versions are 1 to 3"),
        "{missing}"
    );

    // Diff: the changed lines, and the filter version the push changed.
    let diff = server.cli_ok(&["diff", "1", "3"]);
    assert!(diff.starts_with("--- version 1 ("), "{diff}");
    for line in [
        "-                    - { cluster: blue, weight: 80 }",
        "+                    - { cluster: blue, weight: 50 }",
        "-                    - { cluster: green, weight: 20 }",
        "+                    - { cluster: green, weight: 50 }",
    ] {
        assert!(diff.lines().any(|l| l == line), "no {line:?} in\n{diff}");
    }
    assert!(
        diff.ends_with(&format!("filter tag: {} -> {}\n", &one[..12], &two[..12])),
        "{diff}"
    );
    let same = server.cli_ok(&["diff", "2", "2"]);
    assert!(same.contains("are the same"), "{same}");

    // proxy-config: what the server sends web-a.
    let shown = server.cli_ok(&["proxy-config", "web-a"]);
    for part in [
        "proxy web-a (service web, labels zone=a): group 0 (select: { service: web }) of version 3",
        "it serves this version",
        &format!("0. tag (filter:tag, sha256 {}, fail-closed)", &two[..12]),
        "config: {\"prefix\":\"v-\"}",
        "1. router (builtin:router, built in, fail-closed)",
        "blue 50 (50%), green 50 (50%)",
        "secrets in filter configs, if any, are shown as \"<redacted>\"",
    ] {
        assert!(shown.contains(part), "no {part:?} in\n{shown}");
    }
    let endpoints: Vec<Vec<&str>> = shown
        .lines()
        .skip_while(|l| !l.starts_with("CLUSTER"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        endpoints[..4],
        [
            vec!["CLUSTER", "ENDPOINT", "WEIGHT", "BALANCER", "PROTOCOL"],
            vec!["blue", "127.0.0.1:9", "1", "peak-ewma", "http1"],
            vec!["blue", "127.0.0.2:9", "3"],
            vec!["green", "127.0.0.3:9", "1", "peak-ewma", "http1"],
        ],
        "{shown}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["proxy-config", "web-a", "--json"])).unwrap();
    assert_eq!(json["state"], "current");
    assert_eq!(json["listeners"][0]["filters"][0]["sha256"], two.as_str());
    assert_eq!(json["secrets_shown"], false);
    let unknown = server.cli_err(&["proxy-config", "web-z"]);
    assert!(
        unknown.contains("404") && unknown.contains("known: web-a"),
        "{unknown}"
    );

    // Secrets need the API token: the open local read has them redacted; asking for
    // them without the token, or with the proxy token, is refused.
    let home = dir.0.join("elsewhere");
    let out = without_token(&server, &home, &["proxy-config", "web-a"]);
    assert!(out.status.success(), "{}", both(&out));
    let out = without_token(&server, &home, &["proxy-config", "web-a", "--show-secrets"]);
    assert!(!out.status.success(), "{}", both(&out));
    assert!(
        stderr(&out).contains("401") && stderr(&out).contains("show_secrets needs the API token"),
        "{}",
        both(&out)
    );
    let proxy_token = std::fs::read_to_string(&server.proxy_token).unwrap();
    let out = without_token(
        &server,
        &home,
        &[
            "proxy-config",
            "web-a",
            "--show-secrets",
            "--token",
            proxy_token.trim(),
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("this is the proxy token"),
        "{}",
        both(&out)
    );
    let out = server.cli(&["proxy-config", "web-a", "--show-secrets", "--json"]);
    assert!(out.status.success(), "{}", both(&out));

    // The token is found in WEFT_DATA_DIR, the server's data folder.
    let out = without_token(&server, &home, &["get", "1"]);
    assert!(!out.status.success(), "{}", both(&out));
    assert!(stderr(&out).contains("WEFT_DATA_DIR"), "{}", both(&out));
    let out = output(
        weft()
            .args(["get", "1", "--server", &server.url])
            .env("XDG_DATA_HOME", &home)
            .env("WEFT_DATA_DIR", &server.data),
    );
    assert!(out.status.success(), "{}", both(&out));
    assert_eq!(stdout(&out), v1);
}

#[test]
fn workers_belongs_to_the_commands_that_serve_and_the_demo_says_what_it_runs() {
    let help = |command: &str| {
        let out = output(weft().args([command, "--help"]));
        assert!(out.status.success(), "{}", both(&out));
        stdout(&out)
    };
    for serving in ["proxy", "config-server", "demo"] {
        assert!(
            help(serving).contains("--workers <N>"),
            "weft {serving} --help"
        );
    }
    for client in [
        "apply",
        "status",
        "push",
        "rollback",
        "stat",
        "history",
        "get",
        "diff",
        "proxy-config",
        "check",
    ] {
        assert!(!help(client).contains("--workers"), "weft {client} --help");
    }
    let demo = help("demo");
    let filters = "telemetry, fault, retry and router filters";
    assert!(demo.contains(filters), "{demo}");
    // The demo's mesh runs exactly those.
    let out = output(weft().args(["demo", "--print-config"]));
    let config = stdout(&out);
    let modules: Vec<&str> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("module: builtin:"))
        .collect();
    assert_eq!(
        modules,
        ["telemetry", "fault", "retry", "router"],
        "{config}"
    );
}
