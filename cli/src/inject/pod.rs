//! What `weft inject` adds to a pod: the `weft-proxy` sidecar, the `weft-init`
//! container that sends the pod's traffic through it, their volumes and the
//! annotations that say the pod is meshed. Adding takes away what an earlier
//! injection added first, so injecting twice gives what injecting once gives.

use super::yaml::Node;

/// The sidecar's container.
pub(crate) const PROXY: &str = "weft-proxy";
/// The init container that installs the traffic redirection.
pub(crate) const INIT: &str = "weft-init";
/// The annotation that opts a workload in or out.
pub(crate) const INJECT_ANNOTATION: &str = "weft.dev/inject";
/// The annotation naming the version of Weft that injected the pod.
const VERSION_ANNOTATION: &str = "weft.dev/proxy-version";
/// Names the service the proxy registers as (default: the pod's service account).
const SERVICE_ANNOTATION: &str = "weft.dev/service";
/// Inbound ports (comma-separated) that reach the application without the proxy.
const SKIP_INBOUND_ANNOTATION: &str = "weft.dev/skip-inbound-ports";
/// Destination ports (comma-separated) the application reaches without the proxy.
const SKIP_OUTBOUND_ANNOTATION: &str = "weft.dev/skip-outbound-ports";

/// The user the proxy runs as; `weft init` lets its traffic out unredirected.
const PROXY_UID: i64 = 1337;
const OUTBOUND_PORT: i64 = 15001;
const INBOUND_PORT: i64 = 15006;
const ADMIN_PORT: i64 = 9901;

/// The memory-backed volume with the proxy's state: its instance secret, last good
/// snapshot, workload certificate and key. Memory, so the key never touches a disk.
const IDENTITY_VOLUME: &str = "weft-identity";
const IDENTITY_MOUNT: &str = "/var/run/weft";
/// The mesh CA's certificate (ConfigMap `weft-ca`), for an https:// config server.
const CA_VOLUME: &str = "weft-ca";
const CA_MOUNT: &str = "/var/run/weft-ca";
/// `/run` of the init container: iptables takes its lock there, and the container's
/// own root file system is read-only.
const XTABLES_VOLUME: &str = "weft-xtables";
/// The Secret, in the workload's namespace, holding the config server's proxy token.
const TOKEN_SECRET: &str = "weft-proxy-token";

/// How the pods are injected.
pub(crate) struct Settings {
    /// The image of both containers.
    pub image: String,
    /// The config server the proxy subscribes to.
    pub config_server: String,
}

impl Settings {
    fn https(&self) -> bool {
        self.config_server.starts_with("https://")
    }
}

/// Inject a pod template (or a Pod): `pod` holds `metadata` and `spec`.
pub(crate) fn inject(pod: &mut Node, settings: &Settings) -> Result<(), String> {
    let annotations = pod.at(&["metadata", "annotations"]).cloned();
    let annotation = |key: &str| -> Result<Option<String>, String> {
        match annotations.as_ref().and_then(|a| a.get(key)) {
            None => Ok(None),
            Some(Node::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("the annotation {key} must be a string")),
        }
    };
    let ports = |key: &str| match annotation(key)? {
        Some(ports) => parse_ports(&ports).map_err(|e| format!("the annotation {key}: {e}")),
        None => Ok(Vec::new()),
    };
    let skip = [
        ports(SKIP_INBOUND_ANNOTATION)?,
        ports(SKIP_OUTBOUND_ANNOTATION)?,
    ];
    let service = annotation(SERVICE_ANNOTATION)?;
    let spec = pod
        .get_mut("spec")
        .filter(|s| matches!(s, Node::Map(_)))
        .ok_or("it has no pod spec")?;
    strip(spec)?;
    check_ports(spec)?;
    list(spec, "containers")?.insert(0, proxy(settings, service));
    // Last among the init containers: those of the workload run before the
    // redirection exists, with the network they were written for.
    list(spec, "initContainers")?.push(init(&skip, settings));
    let volumes = list(spec, "volumes")?;
    volumes.push(Node::map([
        ("name", Node::str(IDENTITY_VOLUME)),
        ("emptyDir", Node::map([("medium", Node::str("Memory"))])),
    ]));
    volumes.push(Node::map([
        ("name", Node::str(XTABLES_VOLUME)),
        ("emptyDir", Node::map([("medium", Node::str("Memory"))])),
    ]));
    if settings.https() {
        volumes.push(Node::map([
            ("name", Node::str(CA_VOLUME)),
            ("configMap", Node::map([("name", Node::str(CA_VOLUME))])),
        ]));
    }
    let metadata = pod
        .entry("metadata", || Node::Map(Vec::new()))
        .ok_or("it is not a mapping")?;
    let annotations = metadata
        .entry("annotations", || Node::Map(Vec::new()))
        .filter(|a| matches!(a, Node::Map(_)))
        .ok_or("metadata.annotations is not a mapping")?;
    annotations.set(INJECT_ANNOTATION, Node::str("enabled"));
    annotations.set(VERSION_ANNOTATION, Node::str(env!("CARGO_PKG_VERSION")));
    Ok(())
}

/// Whether the pod already has the sidecar.
pub(crate) fn injected(pod: &Node) -> bool {
    match pod.at(&["spec", "containers"]) {
        Some(Node::Seq(containers)) => containers.iter().any(|c| named(c, PROXY)),
        _ => false,
    }
}

fn named(node: &Node, name: &str) -> bool {
    node.get("name").and_then(Node::as_str) == Some(name)
}

/// The list under `key` of the pod spec, made when missing.
fn list<'a>(spec: &'a mut Node, key: &str) -> Result<&'a mut Vec<Node>, String> {
    match spec.entry(key, || Node::Seq(Vec::new())) {
        Some(Node::Seq(items)) => Ok(items),
        _ => Err(format!("spec.{key} is not a list")),
    }
}

/// Take away what an earlier injection added, so that it is added once.
fn strip(spec: &mut Node) -> Result<(), String> {
    for (key, ours) in [
        ("containers", &[PROXY][..]),
        ("initContainers", &[INIT][..]),
        ("volumes", &[IDENTITY_VOLUME, CA_VOLUME, XTABLES_VOLUME][..]),
    ] {
        if spec.get(key).is_none() {
            continue;
        }
        list(spec, key)?.retain(|item| !ours.iter().any(|name| named(item, name)));
    }
    // An empty list the injection made is not left behind.
    for key in ["initContainers", "volumes"] {
        if spec.get(key) == Some(&Node::Seq(Vec::new())) {
            spec.remove(key);
        }
    }
    Ok(())
}

/// The proxy's ports must be free in the pod's network namespace.
fn check_ports(spec: &Node) -> Result<(), String> {
    let Some(Node::Seq(containers)) = spec.get("containers") else {
        return Err("spec.containers is not a list".into());
    };
    for container in containers {
        let Some(Node::Seq(ports)) = container.get("ports") else {
            continue;
        };
        for port in ports {
            let number = port.get("containerPort");
            let ours = [OUTBOUND_PORT, INBOUND_PORT, ADMIN_PORT];
            if let Some(Node::Int(n)) = number.filter(|n| ours.iter().any(|o| **n == Node::Int(*o)))
            {
                let name = container.get("name").and_then(Node::as_str).unwrap_or("?");
                return Err(format!(
                    "container {name:?} uses port {n}, which the proxy needs \
                     ({OUTBOUND_PORT} outbound, {INBOUND_PORT} inbound, {ADMIN_PORT} admin)"
                ));
            }
        }
    }
    Ok(())
}

/// `8081,8082`: port numbers, 1 to 65535.
fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{p:?} is not a port number (1 to 65535)")),
        })
        .collect()
}

fn strings(items: &[&str]) -> Node {
    Node::Seq(items.iter().map(|s| Node::str(*s)).collect())
}

/// An environment variable read from the pod by the downward API.
fn field_env(name: &str, field: &str) -> Node {
    Node::map([
        ("name", Node::str(name)),
        (
            "valueFrom",
            Node::map([("fieldRef", Node::map([("fieldPath", Node::str(field))]))]),
        ),
    ])
}

fn port(name: &str, number: i64) -> Node {
    Node::map([
        ("name", Node::str(name)),
        ("containerPort", Node::Int(number)),
        ("protocol", Node::str("TCP")),
    ])
}

fn probe(path: &str, period: i64) -> Node {
    Node::map([
        (
            "httpGet",
            Node::map([("path", Node::str(path)), ("port", Node::Int(ADMIN_PORT))]),
        ),
        ("periodSeconds", Node::Int(period)),
    ])
}

/// The sidecar: `weft proxy` fed by the config server, named after the pod.
fn proxy(settings: &Settings, service: Option<String>) -> Node {
    let state = format!("{IDENTITY_MOUNT}/state");
    let admin = format!("0.0.0.0:{ADMIN_PORT}");
    let mut args = vec![
        "proxy",
        "--config-server",
        &settings.config_server,
        "--node",
        "$(WEFT_POD_NAME)",
        "--service",
        "$(WEFT_SERVICE)",
        "--label",
        "namespace=$(WEFT_POD_NAMESPACE)",
        // Every address: kubelet probes /ready on the pod's IP.
        "--admin",
        &admin,
        "--state-dir",
        &state,
    ];
    let ca = format!("{CA_MOUNT}/ca.pem");
    if settings.https() {
        args.extend(["--ca", &ca]);
    }
    let mut mounts = vec![Node::map([
        ("name", Node::str(IDENTITY_VOLUME)),
        ("mountPath", Node::str(IDENTITY_MOUNT)),
    ])];
    if settings.https() {
        mounts.push(Node::map([
            ("name", Node::str(CA_VOLUME)),
            ("mountPath", Node::str(CA_MOUNT)),
            ("readOnly", Node::Bool(true)),
        ]));
    }
    Node::map([
        ("name", Node::str(PROXY)),
        ("image", Node::str(&settings.image)),
        ("imagePullPolicy", Node::str("IfNotPresent")),
        ("command", strings(&["weft"])),
        ("args", strings(&args)),
        ("env", proxy_env(service)),
        (
            "ports",
            Node::Seq(vec![
                port("weft-outbound", OUTBOUND_PORT),
                port("weft-inbound", INBOUND_PORT),
                port("weft-admin", ADMIN_PORT),
            ]),
        ),
        ("readinessProbe", probe("/ready", 2)),
        ("livenessProbe", probe("/live", 10)),
        (
            "resources",
            Node::map([(
                "requests",
                Node::map([("cpu", Node::str("100m")), ("memory", Node::str("64Mi"))]),
            )]),
        ),
        (
            "securityContext",
            security(false, PROXY_UID, Node::map([("drop", strings(&["ALL"]))])),
        ),
        ("volumeMounts", Node::Seq(mounts)),
    ])
}

/// The proxy's environment: who it is, from the pod, and its token, from a Secret.
fn proxy_env(service: Option<String>) -> Node {
    let service = match service {
        Some(name) => Node::map([
            ("name", Node::str("WEFT_SERVICE")),
            ("value", Node::Str(name)),
        ]),
        None => field_env("WEFT_SERVICE", "spec.serviceAccountName"),
    };
    Node::Seq(vec![
        field_env("WEFT_POD_NAME", "metadata.name"),
        field_env("WEFT_POD_NAMESPACE", "metadata.namespace"),
        service,
        Node::map([
            ("name", Node::str("WEFT_PROXY_TOKEN")),
            (
                "valueFrom",
                Node::map([(
                    "secretKeyRef",
                    Node::map([
                        ("name", Node::str(TOKEN_SECRET)),
                        ("key", Node::str("token")),
                    ]),
                )]),
            ),
        ]),
        // Compiled filters beside the state; the root file system is read-only.
        Node::map([
            ("name", Node::str("WEFT_CACHE_DIR")),
            ("value", Node::Str(format!("{IDENTITY_MOUNT}/cache"))),
        ]),
        // A sidecar serves one pod: two threads, not one per core of the node.
        Node::map([
            ("name", Node::str("WEFT_WORKERS")),
            ("value", Node::str("2")),
        ]),
    ])
}

/// The init container: `weft init` installs the redirection, then exits.
/// `skip`: the inbound, then the outbound ports to leave uncaptured.
fn init(skip: &[Vec<u16>; 2], settings: &Settings) -> Node {
    let (uid, inbound, outbound) = (
        PROXY_UID.to_string(),
        INBOUND_PORT.to_string(),
        OUTBOUND_PORT.to_string(),
    );
    let mut args = vec![
        "init",
        "--proxy-uid",
        &uid,
        "--inbound-port",
        &inbound,
        "--outbound-port",
        &outbound,
    ];
    // The admin port is the proxy's own (kubelet's probes); the others the workload's.
    let join = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>();
    let skip_in = [vec![ADMIN_PORT.to_string()], join(&skip[0])]
        .concat()
        .join(",");
    let skip_out = join(&skip[1]).join(",");
    args.extend(["--exclude-inbound-ports", &skip_in]);
    if !skip_out.is_empty() {
        args.extend(["--exclude-outbound-ports", &skip_out]);
    }
    Node::map([
        ("name", Node::str(INIT)),
        ("image", Node::str(&settings.image)),
        ("imagePullPolicy", Node::str("IfNotPresent")),
        ("command", strings(&["weft"])),
        ("args", strings(&args)),
        (
            "resources",
            Node::map([(
                "requests",
                Node::map([("cpu", Node::str("10m")), ("memory", Node::str("16Mi"))]),
            )]),
        ),
        (
            "securityContext",
            // Root in the pod's network namespace only, with the two capabilities
            // iptables needs and nothing else.
            security(
                true,
                0,
                Node::map([
                    ("add", strings(&["NET_ADMIN", "NET_RAW"])),
                    ("drop", strings(&["ALL"])),
                ]),
            ),
        ),
        (
            "volumeMounts",
            Node::Seq(vec![Node::map([
                ("name", Node::str(XTABLES_VOLUME)),
                ("mountPath", Node::str("/run")),
            ])]),
        ),
    ])
}

fn security(root: bool, uid: i64, capabilities: Node) -> Node {
    Node::map([
        ("runAsUser", Node::Int(uid)),
        ("runAsGroup", Node::Int(uid)),
        ("runAsNonRoot", Node::Bool(!root)),
        ("privileged", Node::Bool(false)),
        ("allowPrivilegeEscalation", Node::Bool(false)),
        ("readOnlyRootFilesystem", Node::Bool(true)),
        ("capabilities", capabilities),
        (
            "seccompProfile",
            Node::map([("type", Node::str("RuntimeDefault"))]),
        ),
    ])
}
