//! `weft inject`: a Kubernetes manifest with the Weft sidecar added to each pod it
//! describes, as `linkerd inject` and `istioctl kube-inject` do, offline.
//!
//! 1. Read the manifest (YAML, one or more documents) from a file or standard input.
//! 2. For each Pod and each workload with a pod template (Deployment, StatefulSet,
//!    DaemonSet, ReplicaSet, ReplicationController, and the items of a List), add to
//!    the pod the `weft-proxy` sidecar, the `weft-init` container, their volumes and
//!    the `weft.dev/*` annotations ([`pod`] says what each holds and why).
//! 3. Leave every other document and key as it was, and write the manifest out.
//!
//! Injecting an injected manifest gives the same manifest (with `--image` or
//! `--config-server` changed, the new ones). `weft.dev/inject: disabled` on a workload
//! or its pod template leaves it alone. What was done to each object is said on
//! standard error, one line each.

mod pod;
mod yaml;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use yaml::Node;

/// `weft inject`.
#[derive(clap::Args)]
pub(crate) struct InjectArgs {
    /// The manifest (YAML; documents separated by `---`); `-` reads standard input.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        required_unless_present = "path"
    )]
    file: Option<PathBuf>,
    /// The manifest, given without -f.
    #[arg(value_name = "FILE", conflicts_with = "file")]
    path: Option<PathBuf>,
    /// Write the injected manifest here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The image of the sidecar and of the init container (built from the
    /// repository's Dockerfile).
    #[arg(long, default_value = concat!("weft:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// The config server the proxies subscribe to. Over https:// they verify it with
    /// the mesh CA's certificate, from the ConfigMap `weft-ca` of their namespace.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://weft-config-server.weft-system.svc:7070"
    )]
    config_server: String,
}

/// What became of one object.
enum Outcome {
    Injected,
    /// Injected before, with the same settings: nothing changed.
    Unchanged,
    /// Left as it was, and why.
    Skipped(String),
}

pub(crate) fn run(args: &InjectArgs) -> anyhow::Result<()> {
    let Some(input) = args.file.as_ref().or(args.path.as_ref()) else {
        bail!("give the manifest with -f FILE (or -f - for standard input)");
    };
    if !["http://", "https://"]
        .iter()
        .any(|s| args.config_server.starts_with(s))
    {
        bail!(
            "--config-server {:?} must start with http:// or https://",
            args.config_server
        );
    }
    let (name, text) = read(input)?;
    let settings = pod::Settings {
        image: args.image.clone(),
        config_server: args.config_server.clone(),
    };
    let out = inject_text(&text, &name, &settings)?;
    match &args.output {
        Some(path) if path != Path::new("-") => {
            std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?
        }
        _ => std::io::stdout()
            .write_all(out.as_bytes())
            .context("writing to standard output")?,
    }
    Ok(())
}

/// The manifest's name for messages, and its text.
fn read(input: &Path) -> anyhow::Result<(String, String)> {
    if input == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the manifest from standard input")?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let name = input.display().to_string();
    let text = std::fs::read_to_string(input).with_context(|| format!("reading {name}"))?;
    Ok((name, text))
}

/// Inject every object of a manifest; say on standard error what became of each.
fn inject_text(text: &str, file: &str, settings: &pod::Settings) -> anyhow::Result<String> {
    // Read as Kubernetes reads it (YAML 1.1): `defaultMode: 0644` is octal, 420,
    // and must be written back so, not as 644.
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    let parsed = serde_saphyr::from_multiple_with_options(text, options);
    let mut docs: Vec<Node> = parsed.map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        anyhow::anyhow!("{file}:{line}:{column}: {}", yaml_message(&e))
    })?;
    let mut out = String::new();
    for (i, doc) in docs.iter_mut().enumerate() {
        inject_object(doc, settings, &mut |what, outcome| {
            let line = match outcome {
                Outcome::Injected => format!("{what} injected"),
                Outcome::Unchanged => format!("{what} unchanged (already injected)"),
                Outcome::Skipped(why) => format!("{what} skipped: {why}"),
            };
            eprintln!("{line}");
        })
        .map_err(|e| anyhow::anyhow!("{file}: document {}: {e}", i + 1))?;
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(doc).context("writing YAML")?);
    }
    Ok(out)
}

/// The parser's message without its own position (we give it as file:line:column)
/// and without the source snippet.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let text = text.lines().next().unwrap_or_default();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let text = match text.split_once(": ") {
        Some((at, rest)) if at.starts_with("line ") => rest,
        _ => text,
    };
    match text.rsplit_once(" at line ") {
        Some((message, _)) => message.to_owned(),
        None => text.to_owned(),
    }
}

/// Inject one object (the items of a List each), telling `report` what became of it.
fn inject_object(
    doc: &mut Node,
    settings: &pod::Settings,
    report: &mut dyn FnMut(&str, Outcome),
) -> Result<(), String> {
    let kind = doc.get("kind").and_then(Node::as_str).map(str::to_owned);
    let Some(kind) = kind.filter(|_| doc.get("apiVersion").is_some()) else {
        return Err("not a Kubernetes object (a mapping with apiVersion and kind)".into());
    };
    let name = doc
        .at(&["metadata", "name"])
        .and_then(Node::as_str)
        .or_else(|| doc.at(&["metadata", "generateName"]).and_then(Node::as_str))
        .unwrap_or("");
    let what = format!("{} {name:?}", kind.to_lowercase());
    let template: &[&str] = match kind.as_str() {
        "List" => {
            let Some(Node::Seq(items)) = doc.get_mut("items") else {
                return Err(format!("{what}: items is not a list"));
            };
            for item in items {
                inject_object(item, settings, report)?;
            }
            return Ok(());
        }
        "Pod" => &[],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" => {
            &["spec", "template"]
        }
        "Job" | "CronJob" => {
            report(
                &what,
                Outcome::Skipped(
                    "a sidecar in containers would keep running after the job's own \
                     containers end, so the job would never complete"
                        .into(),
                ),
            );
            return Ok(());
        }
        _ => {
            report(
                &what,
                Outcome::Skipped(format!("a {kind} has no pods to inject")),
            );
            return Ok(());
        }
    };
    let outcome = inject_workload(doc, template, settings).map_err(|e| format!("{what}: {e}"))?;
    report(&what, outcome);
    Ok(())
}

/// Inject the pod at `template` (empty: the object is the pod) of a workload.
fn inject_workload(
    doc: &mut Node,
    template: &[&str],
    settings: &pod::Settings,
) -> Result<Outcome, String> {
    if let Some(why) = opted_out(doc)? {
        return Ok(Outcome::Skipped(why));
    }
    let before = doc.clone();
    let pod = template
        .iter()
        .try_fold(&mut *doc, |node, key| node.get_mut(key))
        .filter(|p| matches!(p, Node::Map(_)))
        .ok_or_else(|| format!("it has no pod template ({})", template.join(".")))?;
    if let Some(why) = opted_out(pod)? {
        return Ok(Outcome::Skipped(why));
    }
    if pod.at(&["spec", "hostNetwork"]) == Some(&Node::Bool(true)) {
        return Ok(Outcome::Skipped(
            "it uses the host's network, whose traffic weft init must not redirect".into(),
        ));
    }
    let was_injected = pod::injected(pod);
    pod::inject(pod, settings)?;
    Ok(if was_injected && *doc == before {
        Outcome::Unchanged
    } else {
        Outcome::Injected
    })
}

/// Why an object's `weft.dev/inject` annotation keeps it out of the mesh, if it does.
fn opted_out(object: &Node) -> Result<Option<String>, String> {
    let key = pod::INJECT_ANNOTATION;
    match object.at(&["metadata", "annotations", key]) {
        None => Ok(None),
        Some(Node::Str(v)) if v == "enabled" => Ok(None),
        Some(Node::Str(v)) if v == "disabled" => Ok(Some(format!("{key}: disabled"))),
        Some(other) => {
            let shown = serde_saphyr::to_string(other).unwrap_or_default();
            Err(format!(
                "{key}: {} is neither \"enabled\" nor \"disabled\"",
                shown.trim()
            ))
        }
    }
}
