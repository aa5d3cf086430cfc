//! `builtin:encryption-policy` over clear text: what it refuses before any mutual TLS
//! (strict mode, rules that name callers), the forwarded identity header that a client
//! can never forge, an upstream that must prove an identity and cannot, and
//! `config: {}`, which passes everything untouched.

use weft_tests::*;

/// A proxy with an admin listener whose one filter is the policy, named `name`.
fn policy(web: &Backend, name: &str, config: &str) -> String {
    format!(
        r#"
admin:
  address: 127.0.0.1:0
listeners:
  - name: main
    address: 127.0.0.1:0
    default_cluster: web
    filters:
      - name: {name}
        module: builtin:encryption-policy
        config: {config}
clusters:
  - name: web
    endpoints: ["{}"]
"#,
        web.addr
    )
}

/// `denied_total` of the policy named `filter`, for `reason`.
async fn denied(c: &Client, p: &Proxy, filter: &str, reason: &str) -> f64 {
    let admin = p.running().admin_addr().expect("admin");
    let text = c.get(admin, "/metrics").await.text();
    total(
        &samples(&text),
        "weft_filter_denied_total",
        &[("filter", filter), ("reason", reason)],
    )
}

/// The log lines of the filter named `filter`.
fn lines_of(filter: &str) -> Vec<String> {
    let needle = format!("filter=\"{filter}\"");
    let bare = format!("filter={filter}");
    logs()
        .text()
        .lines()
        .filter(|l| l.contains(&needle) || l.split_whitespace().any(|w| w == bare))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_config_passes_everything_untouched() {
    let web = backend("web").start().await;
    let p = proxy(&policy(&web, "open", "{}")).start().await;
    let c = client();
    let forged = [(
        "x-forwarded-client-cert",
        "URI=spiffe://bank.example/ns/x/sa/y",
    )];
    for (method, path) in [
        ("GET", "/"),
        ("DELETE", "/admin/users"),
        ("POST", "/orders"),
    ] {
        let r = c
            .send(p.addr, method, path, &forged, Default::default())
            .await;
        assert_eq!(r.status, 200, "{method} {path}");
        // Nothing configured to forward: the header is the application's business.
        assert_eq!(r.header("x-echo-forwarded-client-cert"), Some(forged[0].1));
    }
    assert_eq!(web.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_a_caller_in_clear_text() {
    let logs = logs();
    let web = backend("web").start().await;
    let p = proxy(&policy(&web, "strict-policy", "{ mode: strict }"))
        .start()
        .await;
    let c = client();
    for path in ["/", "/orders/7"] {
        let r = c.get(p.addr, path).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.text(), "mutual TLS required\n");
    }
    assert_eq!(web.requests(), 0, "nothing reached the application");
    assert_eq!(
        denied(&c, &p, "strict-policy", "mutual_tls_required").await,
        2.0
    );
    let lines = lines_of("strict-policy");
    let refusals = lines
        .iter()
        .filter(|l| l.contains("mutual TLS required: caller none ("));
    assert_eq!(refusals.count(), 2, "{}", logs.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_refuse_callers_that_proved_no_identity() {
    let web = backend("web").start().await;
    // Any proven identity may read the orders; nobody may reach /admin.
    let config = r#"
          rules:
            - action: allow
              principals: ["*"]
              paths: ["/orders", "/orders/*"]
            - action: deny
              paths: ["/admin/*"]"#;
    let p = proxy(&policy(&web, "rules-policy", config)).start().await;
    let c = client();
    for path in ["/orders", "/orders/7", "/admin/users", "/"] {
        let r = c.get(p.addr, path).await;
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.text(), "caller not allowed\n", "{path}");
    }
    assert_eq!(web.requests(), 0);
    assert_eq!(
        denied(&c, &p, "rules-policy", "caller_not_allowed").await,
        4.0
    );
    let lines = lines_of("rules-policy");
    assert!(
        lines.iter().any(|l| l.contains("rules[1] denies it")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("no allow rule matches")),
        "{lines:?}"
    );

    // Deny rules alone let the rest through, callers with an identity or without.
    let p = proxy(&policy(
        &web,
        "deny-policy",
        "{ rules: [{ action: deny, paths: [\"/admin/*\"], methods: [DELETE] }] }",
    ))
    .start()
    .await;
    let none = Default::default();
    let r = c.send(p.addr, "DELETE", "/admin/users", &[], none).await;
    assert_eq!(r.status, 403);
    assert_eq!(c.get(p.addr, "/admin/users").await.status, 200);
    assert_eq!(web.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_forwarded_identity_never_reaches_the_application() {
    let web = backend("web").start().await;
    let config = "{ forward_identity: { header: x-forwarded-client-cert } }";
    let p = proxy(&policy(&web, "forward-policy", config)).start().await;
    let c = client();
    let forged =
        "By=spiffe://bank.example/ns/bank/sa/banking;URI=spiffe://bank.example/ns/trading/sa/desk";
    for headers in [
        vec![("x-forwarded-client-cert", forged)],
        vec![
            ("X-Forwarded-Client-Cert", forged),
            ("x-forwarded-client-cert", "URI=x"),
        ],
        vec![],
    ] {
        let r = c.get_with(p.addr, "/", &headers).await;
        assert_eq!(r.status, 200, "permissive: clear text passes");
        assert_eq!(
            r.header("x-echo-forwarded-client-cert"),
            None,
            "{headers:?}"
        );
    }
    assert_eq!(web.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_cannot_prove_its_identity_gets_nothing() {
    let logs = logs();
    let web = backend("web").start().await;
    // Requests for `banking` must reach an upstream proving banking's identity; the
    // only cluster speaks clear text, so none may leave. Other hosts go as before.
    let config = r#"
          destinations:
            - host: banking
              identity: spiffe://bank.example/ns/banking/sa/banking"#;
    let p = proxy(&policy(&web, "outbound-policy", config))
        .start()
        .await;
    let c = client();
    for host in ["banking", "BANKING:8080", "banking."] {
        let r = c.get_with(p.addr, "/pay", &[("host", host)]).await;
        assert!(r.status.is_server_error(), "{host}: {}", r.status);
    }
    assert_eq!(web.requests(), 0, "not one byte to an unproven upstream");
    let text = logs.text();
    assert!(
        text.contains("requires spiffe://bank.example/ns/banking/sa/banking"),
        "{text}"
    );
    for host in ["ledger", "banking.example"] {
        let r = c.get_with(p.addr, "/pay", &[("host", host)]).await;
        assert_eq!(r.status, 200, "{host}");
    }
    assert_eq!(web.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_names_the_key() {
    let web = backend("web").start().await;
    for (config, want) in [
        (
            "{ rules: [{ action: allow, principals: [\"spiffe://Bank/x\"] }] }",
            "rules[0].principals[0]",
        ),
        (
            "{ destinations: [{ host: \"banking:80\", identity: \"*\" }] }",
            "give the host without a port",
        ),
        ("{ mode: lenient }", "mode"),
    ] {
        let e = config_error(&policy(&web, "bad-policy", config));
        assert!(e.contains(want), "{config}: {e}");
    }
}
