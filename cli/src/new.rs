//! `weft new filter NAME`: a filter crate of its own, ready to build with `cargo build
//! --target wasm32-wasip2` or `cargo component build`, with a unit test on the SDK's
//! test doubles, a test that runs the built component in the proxy's engine, a README
//! from build to `curl`, and a mesh config that puts it in front of a backend.
//!
//! The SDK (and the harness) come by default from the checkout this `weft` was built
//! from; `--sdk` names another checkout, a git repository or a registry version.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The files of a new filter crate, with `{{...}}` where names go.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../templates/filter/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../templates/filter/lib.rs.tmpl"),
    ),
    (
        "tests/harness.rs",
        include_str!("../templates/filter/harness.rs.tmpl"),
    ),
    (
        "README.md",
        include_str!("../templates/filter/README.md.tmpl"),
    ),
    (
        "mesh.yaml",
        include_str!("../templates/filter/mesh.yaml.tmpl"),
    ),
    (".gitignore", include_str!("../templates/filter/gitignore")),
];

/// `weft new`.
#[derive(clap::Args)]
pub(crate) struct NewArgs {
    #[command(subcommand)]
    what: NewCommand,
}

#[derive(clap::Subcommand)]
enum NewCommand {
    /// Make a filter crate: source, unit and harness tests, README and mesh config.
    /// It builds as it is with `cargo build --release --target wasm32-wasip2` and
    /// with `cargo component build --release`.
    Filter {
        /// The crate's name: lower-case letters, digits, `-` and `_`, starting with a
        /// letter (e.g. `header-tag`).
        name: String,
        /// The folder to make it in [default: ./NAME]; if it exists it must be empty.
        #[arg(long, value_name = "PATH")]
        dir: Option<PathBuf>,
        /// Where the SDK and the test harness come from: `path=DIR` (a Weft
        /// checkout's sdk/ folder), `git=URL` or `version=V` [default: path= the
        /// checkout this weft was built from].
        #[arg(long, value_name = "path=DIR|git=URL|version=V", value_parser = sdk_source)]
        sdk: Option<Sdk>,
    },
}

/// Where a new crate's `weft-sdk` and `weft-harness` come from.
#[derive(Clone, Debug)]
enum Sdk {
    /// A checkout's `sdk/` folder, with `harness/` beside it.
    Path(PathBuf),
    /// A git repository of Weft.
    Git(String),
    /// A version of a registry.
    Version(String),
}

pub(crate) fn run(args: &NewArgs) -> anyhow::Result<()> {
    match &args.what {
        NewCommand::Filter { name, dir, sdk } => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
            let sdk = match sdk {
                Some(sdk) => sdk.clone(),
                None => Sdk::Path(own_sdk()?),
            };
            filter(name, &dir, &sdk)?;
            println!("made filter crate {name} in {}", dir.display());
            eprintln!(
                "next: cd {} && cargo build --release --target wasm32-wasip2 && cargo test \
                 (README.md has the rest)",
                dir.display()
            );
            Ok(())
        }
    }
}

/// The `sdk/` folder of the checkout this binary was built from.
fn own_sdk() -> anyhow::Result<PathBuf> {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    let sdk = checkout.map(|c| c.join("sdk"));
    match sdk {
        Some(sdk) if sdk.join("Cargo.toml").exists() => Ok(sdk),
        _ => bail!(
            "this weft was built from {}, which has no sdk/ folder any more: name the SDK \
             with --sdk path=DIR, git=URL or version=V",
            env!("CARGO_MANIFEST_DIR")
        ),
    }
}

fn sdk_source(s: &str) -> Result<Sdk, String> {
    match s.split_once('=') {
        Some(("path", dir)) if !dir.is_empty() => Ok(Sdk::Path(PathBuf::from(dir))),
        Some(("git", url)) if !url.is_empty() => Ok(Sdk::Git(url.to_owned())),
        Some(("version", v)) if !v.is_empty() => Ok(Sdk::Version(v.to_owned())),
        _ => Err(format!("{s:?} is not path=DIR, git=URL or version=V")),
    }
}

/// Make the filter crate `name` in `dir`.
fn filter(name: &str, dir: &Path, sdk: &Sdk) -> anyhow::Result<()> {
    check_name(name).map_err(|why| anyhow::anyhow!("{name:?} cannot name a crate: {why}"))?;
    if dir.exists() {
        let mut entries = (std::fs::read_dir(dir))
            .with_context(|| format!("{} exists and cannot be read", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} exists and is not empty: nothing was written",
                dir.display()
            );
        }
    }
    let (sdk_line, harness_line, source) = dependencies(sdk)?;
    let crate_name = name.replace('-', "_");
    let vars = [
        ("{{name}}", name),
        ("{{crate}}", &crate_name),
        ("{{type}}", &type_name(name)),
        ("{{sdk}}", &sdk_line),
        ("{{harness}}", &harness_line),
        ("{{sdk_source}}", &source),
    ];
    for (file, template) in TEMPLATES {
        let text = vars
            .iter()
            .fold((*template).to_owned(), |t, (k, v)| t.replace(k, v));
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot make {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The `weft-sdk` and `weft-harness` dependency lines, and how the README says where
/// they come from.
fn dependencies(sdk: &Sdk) -> anyhow::Result<(String, String, String)> {
    Ok(match sdk {
        Sdk::Path(dir) => {
            // Absolute: the crate lives elsewhere.
            let sdk = std::fs::canonicalize(dir)
                .with_context(|| format!("--sdk path={}: no such folder", dir.display()))?;
            if !sdk.join("Cargo.toml").exists() {
                bail!("{} is not a crate folder (no Cargo.toml)", sdk.display());
            }
            let harness = (sdk.parent())
                .map(|p| p.join("harness"))
                .filter(|h| h.join("Cargo.toml").exists())
                .with_context(|| format!("no harness/ folder beside {}", sdk.display()))?;
            (
                format!(
                    "weft-sdk = {{ path = {} }}",
                    toml_str(&sdk.display().to_string())
                ),
                format!(
                    "weft-harness = {{ path = {} }}",
                    toml_str(&harness.display().to_string())
                ),
                format!("the Weft checkout at `{}`", sdk.display()),
            )
        }
        Sdk::Git(url) => (
            format!("weft-sdk = {{ git = {} }}", toml_str(url)),
            format!("weft-harness = {{ git = {} }}", toml_str(url)),
            format!("the git repository `{url}`"),
        ),
        Sdk::Version(v) => (
            format!("weft-sdk = {}", toml_str(v)),
            format!("weft-harness = {}", toml_str(v)),
            format!("version {v} of the registry"),
        ),
    })
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Cargo's rules for a crate name, kept a little stricter (lower case, a letter
/// first), so the name also makes the library's file name, a Rust type and a metric.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("it must be 1 to 64 characters long".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("it must start with a lower-case letter".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{c:?} is not allowed (lower-case letters, digits, '-' and '_')"
        ));
    }
    let ident = name.replace('-', "_");
    if KEYWORDS.contains(&ident.as_str()) {
        return Err("it is a Rust keyword".into());
    }
    if RESERVED.contains(&ident.as_str()) {
        return Err("Rust or Cargo keeps that name for itself".into());
    }
    Ok(())
}

/// Rust's keywords, strict and reserved, in every edition.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Names of the standard library's crates and of Cargo's own target folders.
const RESERVED: &[&str] = &[
    "alloc",
    "core",
    "std",
    "proc_macro",
    "test",
    "build",
    "deps",
    "examples",
    "incremental",
];

/// Names the filter's source already uses from the SDK's prelude.
const TAKEN: &[&str] = &[
    "Action",
    "BodyMode",
    "ClusterRef",
    "Context",
    "Counter",
    "Deserialize",
    "Filter",
    "Interest",
    "LocalResponse",
    "Request",
    "Response",
    "ResponseAction",
    "Summary",
];

/// The filter's type: the name in upper camel case (`header-tag` is `HeaderTag`),
/// with `My` before it when the SDK's prelude already has that name.
fn type_name(name: &str) -> String {
    let camel: String = (name.split(['-', '_']))
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    if TAKEN.contains(&camel.as_str()) {
        format!("My{camel}")
    } else {
        camel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_crate_rules() {
        for good in ["hello", "header-tag", "rate_limit2", "a"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "2fast",
            "-x",
            "Hello",
            "with space",
            "tag.v2",
            "fn",
            "test",
            "self",
        ] {
            assert!(check_name(bad).is_err(), "{bad} was taken");
        }
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn the_type_is_the_name_in_camel_case_and_never_a_prelude_name() {
        assert_eq!(type_name("header-tag"), "HeaderTag");
        assert_eq!(type_name("rate_limit2"), "RateLimit2");
        assert_eq!(type_name("filter"), "MyFilter");
        assert_eq!(type_name("request"), "MyRequest");
    }

    #[test]
    fn dependency_strings_are_toml_strings() {
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        let (sdk, harness, _) = dependencies(&Sdk::Version("0.1".into())).unwrap();
        assert_eq!(sdk, r#"weft-sdk = "0.1""#);
        assert_eq!(harness, r#"weft-harness = "0.1""#);
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = std::env::temp_dir().join(format!("weft-new-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        filter(
            "tag-it",
            &dir,
            &Sdk::Git("https://git.example/weft.git".into()),
        )
        .unwrap();
        for (file, _) in TEMPLATES {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(!text.contains("{{"), "{file} keeps a placeholder");
        }
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct TagIt {"));
        // A folder with something in it is never written over.
        let err = filter("tag-it", &dir, &Sdk::Version("0.1".into())).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
