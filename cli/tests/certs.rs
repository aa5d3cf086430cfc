//! `weft certs` as a user runs it, its certificates read back by OpenSSL.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use weft_testkit::{TempDir, output};

mod support;

use support::weft;

/// `weft certs` with `args` into `dir`; it must succeed. Returns what it printed.
fn certs(dir: &Path, args: &[&str]) -> String {
    let out = output(weft().arg("certs").arg("--out").arg(dir).args(args));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "weft certs {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `openssl ARGS`, which must succeed. No OpenSSL is a failure, not a skip: these
/// checks are the point of the test.
fn openssl(args: &[&str], file: &Path) -> String {
    let run: std::io::Result<Output> = Command::new("openssl").args(args).arg(file).output();
    let out = run.unwrap_or_else(|e| {
        panic!("this test reads certificates with the openssl command, which cannot run ({e}): apt-get install openssl")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "openssl {args:?} {}: {stdout}{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn certs_makes_a_ca_and_workload_certificates_openssl_accepts() {
    let dir = TempDir::new();
    let out = dir.0.join("certs");
    let printed = certs(
        &out,
        &[
            "--trust-domain",
            "bank.example",
            "--workload",
            "trading",
            "--workload",
            "banking",
            "--dns",
            "localhost,127.0.0.1",
            "--ttl",
            "1h",
        ],
    );
    assert!(printed.contains("made a CA"), "{printed}");
    for (file, private) in [
        ("ca.pem", false),
        ("ca-key.pem", true),
        ("trading.pem", false),
        ("trading-key.pem", true),
        ("banking.pem", false),
        ("banking-key.pem", true),
        ("bundle.pem", false),
    ] {
        let path = out.join(file);
        assert!(
            printed.contains(&path.display().to_string()),
            "{file} in {printed}"
        );
        let want = if private { 0o600 } else { 0o644 };
        assert_eq!(mode(&path), want, "{file}");
    }
    for workload in ["trading", "banking"] {
        let chain = out.join(format!("{workload}.pem"));
        let text = openssl(&["x509", "-noout", "-text", "-in"], &chain);
        let id = format!("URI:spiffe://bank.example/ns/default/sa/{workload}");
        assert!(text.contains(&id), "{text}");
        assert!(
            text.contains("DNS:localhost") && text.contains("IP Address:127.0.0.1"),
            "{text}"
        );
        assert!(
            text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
            "{text}"
        );
        assert!(
            text.contains("CA:FALSE") && text.contains("Digital Signature"),
            "{text}"
        );
        let verified = openssl(
            &[
                "verify",
                "-CAfile",
                &out.join("bundle.pem").display().to_string(),
            ],
            &chain,
        );
        assert!(verified.trim_end().ends_with(": OK"), "{verified}");
        // The key is the certificate's.
        let key_pub = openssl(
            &["pkey", "-pubout", "-in"],
            &out.join(format!("{workload}-key.pem")),
        );
        let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in"], &chain);
        assert_eq!(key_pub, cert_pub, "{workload}");
    }
    let ca = openssl(&["x509", "-noout", "-text", "-in"], &out.join("ca.pem"));
    assert!(
        ca.contains("CA:TRUE") && ca.contains("Certificate Sign"),
        "{ca}"
    );
}

#[test]
fn a_second_run_keeps_the_ca_and_adds_workloads() {
    let dir = TempDir::new();
    let out = dir.0.join("certs");
    certs(&out, &["--workload", "web"]);
    let ca = std::fs::read(out.join("ca.pem")).unwrap();
    let key = std::fs::read(out.join("ca-key.pem")).unwrap();
    let printed = certs(&out, &["--workload", "db", "--namespace", "data"]);
    assert!(printed.contains("using the CA in"), "{printed}");
    assert_eq!(std::fs::read(out.join("ca.pem")).unwrap(), ca);
    assert_eq!(std::fs::read(out.join("ca-key.pem")).unwrap(), key);
    let bundle = out.join("bundle.pem").display().to_string();
    for workload in ["web", "db"] {
        let chain = out.join(format!("{workload}.pem"));
        openssl(&["verify", "-CAfile", &bundle], &chain);
    }
    let text = openssl(&["x509", "-noout", "-text", "-in"], &out.join("db.pem"));
    assert!(
        text.contains("URI:spiffe://weft.local/ns/data/sa/db"),
        "{text}"
    );
    assert!(!text.contains("DNS:"), "no host names unless asked: {text}");
}

#[test]
fn names_that_make_no_spiffe_id_or_clash_with_the_cas_files_are_refused() {
    let dir = TempDir::new();
    let out = dir.0.join("certs");
    for (args, says) in [
        (&["--workload", "a/b"][..], "may not hold '/'"),
        (
            &["--workload", "ca"][..],
            "taken by the CA's or the bundle's files",
        ),
        (
            &["--workload", "web", "--workload", "web"][..],
            "given twice",
        ),
        (
            &["--trust-domain", "Bank", "--workload", "web"][..],
            "is not a SPIFFE ID",
        ),
        (&["--workload", "web", "--ttl", "0s"][..], "--ttl"),
    ] {
        let run = output(weft().arg("certs").arg("--out").arg(&out).args(args));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
    assert!(
        !out.join("ca-key.pem").exists(),
        "nothing is made for a refused command"
    );
}
