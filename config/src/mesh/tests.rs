//! The mesh's `identity` section and the SPIFFE ID each proxy is given.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{MeshConfig, MeshIdentity};

const MESH: &str = "\
identity:
  trust_domain: bank.example
  certificate_ttl: 1h
proxies:
  - select: { service: trading }
    identity: spiffe://bank.example/ns/markets/sa/desk
  - select: {}
";

fn mesh(text: &str) -> MeshConfig {
    MeshConfig::parse(text, "mesh.yaml").expect("the mesh parses")
}

/// The error parsing or validating `text` gives.
fn invalid(text: &str) -> String {
    MeshConfig::parse(text, "mesh.yaml")
        .and_then(|m| m.validate(&BTreeMap::new()))
        .expect_err("the mesh is refused")
        .to_string()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_proxy_is_its_groups_identity_else_one_made_from_namespace_and_service() {
    let m = mesh(MESH);
    m.validate(&BTreeMap::new()).unwrap();
    assert_eq!(m.trust_domain(), "bank.example");
    assert_eq!(m.certificate_ttl(), Duration::from_secs(3600));
    let none = labels(&[]);
    let group = m.select("trading", &none);
    assert_eq!(
        m.identity(group, "trading", &none).unwrap(),
        "spiffe://bank.example/ns/markets/sa/desk"
    );
    let ns = labels(&[("namespace", "retail"), ("zone", "a")]);
    assert_eq!(
        m.identity(m.select("banking", &ns), "banking", &ns)
            .unwrap(),
        "spiffe://bank.example/ns/retail/sa/banking"
    );
    assert_eq!(
        m.identity(None, "banking", &none).unwrap(),
        "spiffe://bank.example/ns/default/sa/banking"
    );
}

#[test]
fn without_an_identity_section_the_defaults_apply() {
    let m = mesh("proxies:\n  - select: {}\n");
    m.validate(&BTreeMap::new()).unwrap();
    assert!(m.identity.is_none());
    assert_eq!(m.trust_domain(), MeshIdentity::DEFAULT_TRUST_DOMAIN);
    assert_eq!(m.certificate_ttl(), MeshIdentity::DEFAULT_CERTIFICATE_TTL);
    assert_eq!(
        m.identity(Some(0), "web", &labels(&[])).unwrap(),
        "spiffe://weft.local/ns/default/sa/web"
    );
    // An empty section takes the defaults too.
    let m = mesh("identity: {}\nproxies:\n  - select: {}\n");
    m.validate(&BTreeMap::new()).unwrap();
    assert_eq!(m.trust_domain(), "weft.local");
    assert_eq!(m.certificate_ttl(), Duration::from_secs(24 * 3600));
}

#[test]
fn a_name_that_is_not_one_path_segment_makes_no_identity() {
    let m = mesh("proxies:\n  - select: {}\n");
    for (service, ns) in [
        ("a b", "default"),
        ("web", "a/b"),
        ("web/x", "default"),
        ("web", ""),
    ] {
        let e = m
            .identity(Some(0), service, &labels(&[("namespace", ns)]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is not a SPIFFE ID") && e.contains("give the proxy's group an `identity`"),
            "{service} {ns}: {e}"
        );
    }
}

#[test]
fn identity_errors_name_the_file_line_and_key() {
    let e = invalid(&MESH.replace("bank.example\n", "Bank.Example\n"));
    assert!(
        e.starts_with(
            "mesh.yaml:2:17: identity.trust_domain: \"Bank.Example\" is not a trust domain"
        ),
        "{e}"
    );
    let e = invalid(&MESH.replace("1h", "1s"));
    assert!(
        e.starts_with("mesh.yaml:3:20: identity.certificate_ttl: 1s is not within 5s to 30 days"),
        "{e}"
    );
    let e = invalid(&MESH.replace("1h", "31d"));
    assert!(e.contains("identity.certificate_ttl"), "{e}");
    let e = invalid(&MESH.replace("1h", "an hour"));
    assert!(e.starts_with("mesh.yaml:3:"), "{e}");
    let e = invalid(&MESH.replace("spiffe://bank.example/ns/markets/sa/desk", "bank/desk"));
    assert!(
        e.starts_with("mesh.yaml:6:15: proxies[0].identity: \"bank/desk\" is not a SPIFFE ID"),
        "{e}"
    );
    let e = invalid(&MESH.replace("spiffe://bank.example/ns", "spiffe://other.example/ns"));
    assert!(
        e.starts_with("mesh.yaml:6:15: proxies[0].identity: ")
            && e.contains("not in the mesh's trust domain \"bank.example\""),
        "{e}"
    );
    // Without a section, a group's identity is in the default trust domain.
    let e = invalid("proxies:\n  - select: {}\n    identity: spiffe://bank.example/a\n");
    assert!(e.contains("\"weft.local\""), "{e}");
    let e = invalid("identity: { trust_domain: a, ttl: 1h }\nproxies: []\n");
    assert!(e.contains("unknown field") && e.contains("ttl"), "{e}");
}
