use super::*;

fn load(json: &str) -> Result<Router, String> {
    weft_sdk::from_config(json)
}

fn error(json: &str) -> String {
    match load(json) {
        Ok(_) => panic!("accepted {json}"),
        Err(e) => e,
    }
}

#[test]
fn prefix_rewrites_keep_single_slashes_and_queries() {
    assert_eq!(
        rewrite_prefix("/old/page?x=1", "/old/", "/new/"),
        "/new/page?x=1"
    );
    assert_eq!(rewrite_prefix("/strip/inner", "/strip", "/"), "/inner");
    assert_eq!(rewrite_prefix("/strip", "/strip", "/"), "/");
    assert_eq!(rewrite_prefix("/strip?a=b", "/strip", "/"), "/?a=b");
    assert_eq!(rewrite_prefix("/strip/?a=b", "/strip/", "/"), "/?a=b");
    assert_eq!(rewrite_prefix("/api/v1", "/api", "/v2"), "/v2/v1");
    assert_eq!(rewrite_prefix("/api/v1", "/api/", "/v2"), "/v2/v1");
    assert_eq!(rewrite_prefix("/api?q", "/api", "/v2"), "/v2?q");
    assert_eq!(rewrite_prefix("/api/x", "/api/", "/v2/"), "/v2/x");
}

#[test]
fn query_params_decode() {
    assert_eq!(
        query_param(Some("a=1&debug=1"), "debug").as_deref(),
        Some("1")
    );
    assert_eq!(
        query_param(Some("name=a%20b+c"), "name").as_deref(),
        Some("a b c")
    );
    assert_eq!(query_param(Some("n%61me=x"), "name").as_deref(), Some("x"));
    assert_eq!(query_param(Some("x=100%"), "x").as_deref(), Some("100%"));
    assert_eq!(query_param(Some("x=%zz%4"), "x").as_deref(), Some("%zz%4"));
    assert_eq!(query_param(Some("x=%C3%A9"), "x").as_deref(), Some("é"));
    assert_eq!(query_param(Some("flag"), "flag").as_deref(), Some(""));
    assert_eq!(query_param(Some("a=1&&b=2"), "b").as_deref(), Some("2"));
    assert_eq!(query_param(Some("a=1"), "b"), None);
    assert_eq!(query_param(None, "x"), None);
    assert!(matches!(decode("plain"), Cow::Borrowed("plain")));
}

#[test]
fn good_configs_load() {
    let r = load(
        r#"{"routes":[
            {"match":{"path":{"regex":"^/u/[0-9]+$"},"method":"get"},"cluster":"a"},
            {"match":{"path":{"prefix":"/api"},"method":["POST","PUT"],
                      "headers":[{"name":"X-User","exact":"alice"},{"name":"x-any"}],
                      "query":[{"name":"debug","regex":"^[01]$"},{"name":"off","present":false}]},
             "split":[{"cluster":"v1","weight":80},{"cluster":"v2","weight":20}],
             "rewrite":{"prefix":"/","host":"backend.internal"}},
            {"cluster":"fallback"}
        ]}"#,
    )
    .unwrap();
    assert_eq!(r.compiled.len(), 3);
    assert_eq!(r.compiled[0].methods, ["GET"]);
    assert_eq!(
        r.compiled[1].headers[0].name, "x-user",
        "header names are lower-cased"
    );
    assert!(matches!(r.compiled[1].target, Target::Split(_, 100)));
    assert!(matches!(r.compiled[2].path, PathRule::Any));
}

#[test]
fn bad_configs_name_the_route_and_the_problem() {
    let cases = [
        (r#"{"routes":[{}]}"#, "routes[0]: give a cluster or a split"),
        (
            r#"{"routes":[{"cluster":"a","split":[{"cluster":"b","weight":1}]}]}"#,
            "routes[0]: give either cluster or split, not both",
        ),
        (
            r#"{"routes":[{"cluster":"a"},{"split":[{"cluster":"a","weight":0}]}]}"#,
            "routes[1].split: the weights add up to 0",
        ),
        (
            r#"{"routes":[{"match":{"path":{"exact":"/a"}},"cluster":"a","rewrite":{"prefix":"/"}}]}"#,
            "routes[0].rewrite.prefix: only a route with a match.path.prefix can rewrite it",
        ),
        (
            r#"{"routes":[{"match":{"path":{"regex":"(["}},"cluster":"a"}]}"#,
            "routes[0].match.path.regex: invalid regex",
        ),
        (
            r#"{"routes":[{"match":{"headers":[{"name":"x","exact":"a","present":true}]},"cluster":"a"}]}"#,
            "routes[0].match.headers[0]: give only one of exact, regex, present",
        ),
        (
            r#"{"routes":[{"match":{"query":[{"name":"x","regex":"+"}]},"cluster":"a"}]}"#,
            "routes[0].match.query[0].regex: invalid regex",
        ),
        (
            r#"{"routes":[{"match":{"path":{"prefix":"api"}},"cluster":"a"}]}"#,
            "must start with /",
        ),
        (r#"{"routes":[]}"#, "routes: give at least one route"),
        (
            r#"{"routes":[{"match":{"path":{"prefix":"/a","exact":"/a"}},"cluster":"a"}]}"#,
            "routes[0].match.path: give one of exact, prefix, regex",
        ),
        (
            r#"{"routes":[{"match":{"path":{}},"cluster":"a"}]}"#,
            "routes[0].match.path: give one of exact, prefix, regex",
        ),
    ];
    for (json, want) in cases {
        let e = error(json);
        assert!(e.contains(want), "{json}\n  gave {e}\n  want {want}");
    }
}

#[test]
fn serde_errors_name_the_route_too() {
    let e = error(r#"{"routes":[{"cluster":"a"},{"cluster":"a","extra":1}]}"#);
    assert!(
        e.contains("routes[1]") && e.contains("unknown field `extra`"),
        "{e}"
    );
    let e = error(r#"{"routes":[{"match":{"path":{"prefx":"/"}},"cluster":"a"}]}"#);
    assert!(
        e.contains("routes[0].match.path") && e.contains("prefx"),
        "{e}"
    );
    let e = error(r#"{"routes":[{"match":{"method":3},"cluster":"a"}]}"#);
    assert!(e.contains("a method or a list of methods"), "{e}");
    let e = error("null");
    assert!(e.contains("missing field `routes`"), "{e}");
}

#[test]
fn value_rules() {
    let exact = ValueRule {
        name: "x".into(),
        test: ValueTest::Exact("a".into()),
    };
    assert!(exact.matches(Some("a")));
    assert!(!exact.matches(Some("b")));
    assert!(!exact.matches(None));
    let absent = ValueRule {
        name: "x".into(),
        test: ValueTest::Present(false),
    };
    assert!(absent.matches(None));
    assert!(!absent.matches(Some("")));
}

#[test]
fn rewritten_hosts_and_prefixes_must_fit_a_request_head() {
    for good in [
        "web",
        "web.internal:8080",
        "10.0.0.1",
        "[::1]:80",
        "a_b-c.d",
    ] {
        assert_eq!(authority("h", good), Ok(()), "{good}");
    }
    for bad in [
        "a\r\nX-Injected: 1",
        "a\nb",
        "a\0b",
        "a b",
        "a/b",
        "user@host",
        "",
        "web:",
        "web:http",
        "::1",
        "[]:80",
    ] {
        assert!(authority("h", bad).is_err(), "{bad:?}");
    }
    let e = error(
        r#"{"routes":[{"cluster":"a","match":{"path":{"prefix":"/a"}},"rewrite":{"host":"a\r\nb: 1"}}]}"#,
    );
    assert!(e.starts_with("routes[0].rewrite.host: "), "{e}");
    let e = error(
        r#"{"routes":[{"cluster":"a","match":{"path":{"prefix":"/a"}},"rewrite":{"prefix":"/b c"}}]}"#,
    );
    assert!(e.starts_with("routes[0].rewrite.prefix: "), "{e}");
}

#[test]
fn every_cluster_a_route_names_is_declared_with_its_key() {
    let r = load(
        r#"{"routes":[
            {"match":{"path":{"prefix":"/a"}},"cluster":"shop"},
            {"match":{"path":{"prefix":"/b"}},"split":[{"cluster":"shop","weight":100},{"cluster":"shopv2","weight":0}]}
        ]}"#,
    )
    .unwrap();
    let named: Vec<(String, String)> = r.clusters().into_iter().map(|c| (c.name, c.key)).collect();
    assert_eq!(
        named,
        [
            ("shop".into(), "routes[0].cluster".into()),
            ("shop".into(), "routes[1].split[0].cluster".into()),
            ("shopv2".into(), "routes[1].split[1].cluster".into()),
        ]
    );
}

#[test]
fn no_match_is_a_404_unless_told_to_continue() {
    assert!(load(r#"{"routes":[{"cluster":"a"}]}"#).unwrap().no_match == NoMatch::NotFound);
    let r = load(r#"{"no_match":"continue","routes":[{"cluster":"a"}]}"#).unwrap();
    assert!(r.no_match == NoMatch::Continue);
    assert!(error(r#"{"no_match":"drop","routes":[{"cluster":"a"}]}"#).contains("no_match"));
}
