use super::*;

const DESK: &str = "spiffe://bank.example/ns/trading/sa/desk";
const AUDIT: &str = "spiffe://bank.example/ns/audit/sa/reader";

fn load(json: &str) -> Result<EncryptionPolicy, String> {
    weft_sdk::from_config(json)
}

fn error(json: &str) -> String {
    match load(json) {
        Ok(_) => panic!("accepted {json}"),
        Err(e) => e,
    }
}

fn decide(
    p: &EncryptionPolicy,
    caller: Option<&str>,
    method: &str,
    path: &str,
) -> Result<(), Denial> {
    p.policy.decide(caller, method, path)
}

#[test]
fn an_empty_config_passes_everything_and_asks_for_no_hook() {
    for json in ["{}", "null"] {
        let p = load(json).unwrap();
        let i = p.interest();
        assert!(!(i.request || i.response || i.done), "{json}");
        assert_eq!(decide(&p, None, "DELETE", "/admin"), Ok(()));
        assert_eq!(p.destination(Some("banking")), None);
        assert!(p.denied.is_none(), "nothing to count");
    }
}

#[test]
fn strict_mode_refuses_a_caller_without_an_identity() {
    let p = load(r#"{"mode": "strict"}"#).unwrap();
    assert_eq!(decide(&p, None, "GET", "/"), Err(Denial::MutualTlsRequired));
    assert_eq!(decide(&p, Some(DESK), "GET", "/"), Ok(()));
    // A DNS name from the certificate is proven too; only principals need SPIFFE.
    assert_eq!(decide(&p, Some("web.bank.example"), "GET", "/"), Ok(()));
    assert_eq!(Denial::MutualTlsRequired.message(), "mutual TLS required");
    assert_eq!(Denial::MutualTlsRequired.label(), "mutual_tls_required");
    assert!(p.interest().request);
}

#[test]
fn allow_rules_deny_what_matches_none() {
    let p = load(
        r#"{"rules": [{"action": "allow",
                       "principals": ["spiffe://bank.example/ns/trading/*"],
                       "paths": ["/orders", "/orders/*"], "methods": ["GET", "POST"]}]}"#,
    )
    .unwrap();
    for (path, method) in [
        ("/orders", "GET"),
        ("/orders/7", "POST"),
        ("/orders/", "get"),
    ] {
        assert_eq!(
            decide(&p, Some(DESK), method, path),
            Ok(()),
            "{method} {path}"
        );
    }
    for (caller, method, path) in [
        (Some(DESK), "DELETE", "/orders"),
        (Some(DESK), "GET", "/ordersx"),
        (Some(DESK), "GET", "/"),
        (Some(AUDIT), "GET", "/orders"),
        (
            Some("spiffe://bank.example/ns/trading-eu/sa/desk"),
            "GET",
            "/orders",
        ),
        // Permissive: no identity goes on to the rules, and matches no principal.
        (None, "GET", "/orders"),
    ] {
        assert_eq!(
            decide(&p, caller, method, path),
            Err(Denial::NoAllowMatched),
            "{caller:?} {method} {path}"
        );
    }
    assert_eq!(Denial::NoAllowMatched.message(), "caller not allowed");
}

#[test]
fn deny_rules_win_and_a_rule_without_principals_matches_every_caller() {
    let p = load(
        r#"{"rules": [
            {"action": "allow", "principals": ["*"]},
            {"action": "deny", "principals": ["spiffe://bank.example/ns/audit/*"], "methods": ["POST"]},
            {"action": "deny", "paths": ["/admin/*"]}
        ]}"#,
    )
    .unwrap();
    assert_eq!(decide(&p, Some(AUDIT), "GET", "/orders"), Ok(()));
    assert_eq!(
        decide(&p, Some(AUDIT), "POST", "/orders"),
        Err(Denial::DeniedBy(1))
    );
    assert_eq!(decide(&p, Some(DESK), "POST", "/orders"), Ok(()));
    assert_eq!(
        decide(&p, Some(DESK), "GET", "/admin/users"),
        Err(Denial::DeniedBy(2))
    );
    // `*` is any proven identity, so a caller without one matches no allow rule; the
    // deny rule without principals holds for it too.
    assert_eq!(decide(&p, None, "GET", "/"), Err(Denial::NoAllowMatched));
    assert_eq!(
        decide(&p, None, "GET", "/admin/x"),
        Err(Denial::DeniedBy(2))
    );
    // Deny rules alone refuse what they match and let the rest through.
    let p = load(
        r#"{"rules": [{"action": "deny", "principals": ["spiffe://bank.example/ns/audit/*"]}]}"#,
    )
    .unwrap();
    assert_eq!(
        decide(&p, Some(AUDIT), "GET", "/"),
        Err(Denial::DeniedBy(0))
    );
    assert_eq!(decide(&p, Some(DESK), "GET", "/"), Ok(()));
    assert_eq!(decide(&p, None, "GET", "/"), Ok(()));
}

#[test]
fn paths_are_exact_or_a_prefix() {
    assert_eq!(
        PathPattern::parse("/a"),
        Ok(PathPattern::Exact("/a".into()))
    );
    assert_eq!(
        PathPattern::parse("/a/*"),
        Ok(PathPattern::Prefix("/a/".into()))
    );
    assert_eq!(
        PathPattern::parse("/*"),
        Ok(PathPattern::Prefix("/".into()))
    );
    for bad in ["a", "", "/a*", "/a/*/b", "/*/b", "/a?x=1", "/a#f"] {
        assert!(PathPattern::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn destinations_match_the_host_without_port_or_case() {
    let p = load(
        r#"{"destinations": [
            {"host": "Banking", "identity": "spiffe://bank.example/ns/banking/sa/banking"},
            {"host": "[::1]", "identity": "*"},
            {"host": "ledger.bank.example.", "identity": "spiffe://bank.example/ns/ledger/*"}
        ]}"#,
    )
    .unwrap();
    let banking = Some("spiffe://bank.example/ns/banking/sa/banking");
    for authority in ["banking", "BANKING:8080", "banking.", "banking.:80"] {
        assert_eq!(p.destination(Some(authority)), banking, "{authority}");
    }
    assert_eq!(p.destination(Some("[::1]:8443")), Some("*"));
    assert_eq!(
        p.destination(Some("ledger.bank.example")),
        Some("spiffe://bank.example/ns/ledger/*")
    );
    for other in [
        Some("bankingx"),
        Some("banking.bank.example"),
        Some(""),
        None,
    ] {
        assert_eq!(p.destination(other), None, "{other:?}");
    }
    // Destinations alone: a hook, no caller identity needed, nothing to count.
    assert!(p.interest().request);
    assert!(!p.policy.enforces() && p.denied.is_none());
}

#[test]
fn xfcc_is_envoys_form() {
    assert_eq!(
        xfcc(Some("spiffe://bank.example/ns/bank/sa/banking"), DESK),
        "By=spiffe://bank.example/ns/bank/sa/banking;URI=spiffe://bank.example/ns/trading/sa/desk"
    );
    assert_eq!(xfcc(None, DESK), format!("URI={DESK}"));
    // What the syntax gives a meaning is quoted.
    assert_eq!(xfcc(None, r#"a;b="c"\"#), r#"URI="a;b=\"c\"\\""#);
    let p = load(r#"{"forward_identity": {"header": "X-Forwarded-Client-Cert"}}"#).unwrap();
    assert_eq!(p.forward.as_deref(), Some("x-forwarded-client-cert"));
    let interest = p.interest();
    assert!(interest.request);
    assert_eq!(interest.request_headers, ["x-forwarded-client-cert"]);
}

#[test]
fn bad_configs_name_the_key() {
    let cases = [
        (r#"{"mode": "lenient"}"#, "mode"),
        (
            r#"{"rules": [{"principals": ["*"]}]}"#,
            "missing field `action`",
        ),
        (r#"{"rules": [{"action": "permit"}]}"#, "permit"),
        (
            r#"{"rules": [{"action": "allow", "principals": ["spiffe://Bank/x"]}]}"#,
            "rules[0].principals[0]: \"spiffe://Bank/x\" is not a SPIFFE ID or pattern",
        ),
        (
            r#"{"rules": [{"action": "allow"}, {"action": "deny", "principals": []}]}"#,
            "rules[1].principals: empty",
        ),
        (
            r#"{"rules": [{"action": "allow", "paths": ["/a", "orders"]}]}"#,
            "rules[0].paths[1]: \"orders\" does not start with `/`",
        ),
        (
            r#"{"rules": [{"action": "allow", "methods": ["GET", "GE T"]}]}"#,
            "rules[0].methods[1]",
        ),
        (
            r#"{"rules": [{"action": "allow", "principal": ["*"]}]}"#,
            "unknown field `principal`",
        ),
        (
            r#"{"destinations": [{"host": "banking:8080", "identity": "*"}]}"#,
            "destinations[0].host: \"banking:8080\": give the host without a port",
        ),
        (
            r#"{"destinations": [{"host": "bank ing", "identity": "*"}]}"#,
            "destinations[0].host",
        ),
        (
            r#"{"destinations": [{"host": "a", "identity": "*"}, {"host": "A.", "identity": "*"}]}"#,
            "destinations[1].host: \"A.\" is named already by destinations[0]",
        ),
        (
            r#"{"destinations": [{"host": "a", "identity": "spiffe://bank.example"}]}"#,
            "destinations[0].identity",
        ),
        (
            r#"{"destinations": [{"cluster": "banking", "identity": "*"}]}"#,
            "unknown field `cluster`",
        ),
        (
            r#"{"forward_identity": {"header": "content-length"}}"#,
            "forward_identity.header",
        ),
        (
            r#"{"forward_identity": {"header": ""}}"#,
            "forward_identity.header",
        ),
        (r#"{"forward_identity": {}}"#, "missing field `header`"),
        (r#"{"mod": "strict"}"#, "unknown field `mod`"),
    ];
    for (json, want) in cases {
        let e = error(json);
        assert!(e.contains(want), "{json}\n  gave {e}\n  want {want}");
    }
}

#[test]
fn log_lines_cut_identities_on_a_char_boundary() {
    let long = format!("{}é", "a".repeat(MAX_LOGGED - 1));
    assert_eq!(cut(&long, MAX_LOGGED).len(), MAX_LOGGED - 1);
    assert_eq!(cut(DESK, MAX_LOGGED), DESK);
    assert_eq!(host_of("[::1]:80"), "::1");
    assert_eq!(host_of("a.b."), "a.b");
}
