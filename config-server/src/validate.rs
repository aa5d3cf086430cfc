//! The checks a change must pass before it is stored: a version the server accepts
//! is one every selected proxy can load, because the server has loaded it itself.
//! Beside them, what is legal but likely a mistake: a group that selects no
//! connected proxy, a connected proxy no group selects (warnings, refused only when
//! asked to be strict). And the same loading without a server, for `weft check`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_config::{Config, ConfigError, ListenerConfig, MeshConfig, ModuleRef, Selector};
use weft_engine::{Engine, LoadError};
use weft_proxy::{FilterChain, ModuleStore, NoModules};

use crate::store::{State, Store};

/// Filter names are file names, URL segments and YAML values: keep them plain.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "invalid filter name {name:?}: use 1 to 63 characters of a-z, 0-9, '.', '_', '-', \
             starting with a letter or digit"
        ))
    }
}

/// The stored modules, plus one that is being pushed and not stored yet.
pub(crate) struct Modules<'a> {
    pub store: &'a Store,
    pub pending: Option<(&'a str, &'a Bytes)>,
}

impl ModuleStore for Modules<'_> {
    fn module(&self, sha256: &str) -> Option<Bytes> {
        if let Some((sha, bytes)) = self.pending
            && sha.eq_ignore_ascii_case(sha256)
        {
            return Some(bytes.clone());
        }
        match self.store.read_module(sha256) {
            Ok(found) => found.map(Bytes::from),
            Err(e) => {
                tracing::error!(sha256, "cannot read a stored module: {e}");
                None
            }
        }
    }
}

/// Every `sha256:` of the groups' configurations (those the mesh pins, and those
/// resolved from the latest versions) must be a pushed version of that filter.
pub(crate) fn check_pins(configs: &[Config], state: &State) -> Result<(), ConfigError> {
    for config in configs {
        for (l, listener) in config.listeners.iter().enumerate() {
            for (j, f) in listener.filters.iter().enumerate() {
                let (Ok(ModuleRef::Pushed(name)), Some(sha)) =
                    (ModuleRef::parse(&f.module.value), &f.sha256)
                else {
                    continue;
                };
                if state.has_version(&name, &sha.value) {
                    continue;
                }
                let known: Vec<&str> = state
                    .filters
                    .get(&name)
                    .into_iter()
                    .flatten()
                    .map(|v| v.sha256.as_str())
                    .collect();
                let known = if known.is_empty() {
                    format!("no filter was pushed under the name {name:?}")
                } else {
                    format!("its versions are {}", known.join(", "))
                };
                return config.invalid(
                    &sha.referenced,
                    config.listener_key(l, &format!(".filters[{j}].sha256")),
                    format!(
                        "{} is not a pushed version of filter {name:?}: {known}",
                        sha.value
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Load every listener's filter chain of every group's configuration, as the
/// proxies will: each module is compiled and each filter's `init` sees its config.
/// The chains stay loaded until the end, so a module several listeners use is
/// compiled once.
pub(crate) fn load_chains(
    engine: &Engine,
    configs: &[Config],
    modules: &Modules<'_>,
) -> Result<(), String> {
    let mut loaded = Vec::new();
    for config in configs {
        for (l, listener) in config.listeners.iter().enumerate() {
            loaded.push(
                FilterChain::load(engine, config, l, listener, modules)
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    drop(loaded);
    Ok(())
}

/// A proxy as selection sees it: what it registered as, and whether it is connected.
/// Read from the registry's view of it (`GET /v1/proxies`), the shape the API keeps.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Member {
    pub node: String,
    pub service: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub connected: bool,
}

/// What a mesh config selects that is legal but likely a mistake, against the
/// proxies connected now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Warning {
    /// No connected proxy takes this group: its selector matches none, or only
    /// proxies an earlier group takes first.
    GroupSelectsNoProxy {
        group: usize,
        /// The selector as YAML, `{ service: carts }`.
        selector: String,
        message: String,
    },
    /// A connected proxy that no group selects: it gets no configuration.
    ProxyWithoutGroup {
        node: String,
        service: String,
        labels: BTreeMap<String, String>,
        message: String,
    },
}

impl Warning {
    pub fn message(&self) -> &str {
        match self {
            Self::GroupSelectsNoProxy { message, .. } | Self::ProxyWithoutGroup { message, .. } => {
                message
            }
        }
    }
}

/// The most distinct proxies (service and labels) a warning lists; a fleet of a
/// thousand would drown the message.
const LISTED: usize = 8;

/// The warnings of `mesh` against `members` (only connected ones count).
pub(crate) fn selection_warnings(mesh: &MeshConfig, members: &[Member]) -> Vec<Warning> {
    let connected: Vec<&Member> = members.iter().filter(|m| m.connected).collect();
    let taken: Vec<Option<usize>> = connected
        .iter()
        .map(|m| mesh.select(&m.service, &m.labels))
        .collect();
    let mut warnings = Vec::new();
    for (g, group) in mesh.proxies.iter().enumerate() {
        if taken.contains(&Some(g)) {
            continue;
        }
        let selector = selector_text(&group.select);
        // Matched, but an earlier group takes them: a proxy takes the first group
        // that selects it.
        let shadowed: Vec<String> = connected
            .iter()
            .zip(&taken)
            .filter(|(m, _)| group.select.matches(&m.service, &m.labels))
            .filter_map(|(m, t)| t.map(|first| format!("{} (group {first})", m.node)))
            .collect();
        let message = if !shadowed.is_empty() {
            format!(
                "group {g} (select: {selector}) selects no connected proxy: {} match it but \
                 take an earlier group, as a proxy takes the first group that selects it; \
                 move this group up or narrow the earlier one",
                listed(&shadowed)
            )
        } else {
            let hint = group
                .select
                .service
                .as_ref()
                .and_then(|s| close_service(&s.value, &connected))
                .map(|near| format!(" (did you mean service {near:?}?)"))
                .unwrap_or_default();
            format!(
                "group {g} (select: {selector}) selects no connected proxy{hint}; connected: {}",
                roster(&connected)
            )
        };
        warnings.push(Warning::GroupSelectsNoProxy {
            group: g,
            selector,
            message,
        });
    }
    let selectors: Vec<String> = (mesh.proxies.iter().enumerate())
        .map(|(g, group)| format!("group {g} {}", selector_text(&group.select)))
        .collect();
    for (m, t) in connected.iter().zip(&taken) {
        if t.is_some() {
            continue;
        }
        let groups = if selectors.is_empty() {
            "the mesh config has no group".to_owned()
        } else {
            format!("groups select {}", selectors.join(", "))
        };
        warnings.push(Warning::ProxyWithoutGroup {
            node: m.node.clone(),
            service: m.service.clone(),
            labels: m.labels.clone(),
            message: format!(
                "proxy {} ({}) is selected by no group, so it gets no configuration; {groups}",
                m.node,
                identity(m)
            ),
        });
    }
    warnings
}

/// A selector as it would be written in flow YAML.
pub(crate) fn selector_text(select: &Selector) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &select.service {
        parts.push(format!("service: {}", s.value));
    }
    if !select.labels.is_empty() {
        let labels: Vec<String> = (select.labels.iter())
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        parts.push(format!("labels: {{ {} }}", labels.join(", ")));
    }
    if parts.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", parts.join(", "))
    }
}

/// `service web, labels zone=a`.
fn identity(m: &Member) -> String {
    if m.labels.is_empty() {
        return format!("service {}, no labels", m.service);
    }
    let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("service {}, labels {}", m.service, labels.join(","))
}

/// The connected proxies, one entry per distinct service and labels.
fn roster(connected: &[&Member]) -> String {
    if connected.is_empty() {
        return "none".to_owned();
    }
    let mut kinds: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for m in connected {
        kinds.entry(identity(m)).or_default().push(&m.node);
    }
    let entries: Vec<String> = kinds
        .into_iter()
        .map(|(who, nodes)| match nodes.as_slice() {
            [one] => format!("{one} ({who})"),
            many => format!("{} proxies ({who})", many.len()),
        })
        .collect();
    listed(&entries)
}

fn listed(items: &[String]) -> String {
    if items.len() <= LISTED {
        return items.join("; ");
    }
    format!(
        "{}; and {} more",
        items[..LISTED].join("; "),
        items.len() - LISTED
    )
}

/// A connected service within two edits of `wanted`, the likely intent of a typo.
fn close_service<'a>(wanted: &str, connected: &[&'a Member]) -> Option<&'a str> {
    connected
        .iter()
        .map(|m| m.service.as_str())
        .filter(|s| *s != wanted)
        .map(|s| (edits(wanted, s), s))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, s)| s)
}

/// Levenshtein distance, by characters.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// What [`check_mesh_offline`] found in a mesh file.
#[derive(Debug)]
pub struct MeshCheck {
    /// Per group, in file order: its configuration error, if it has one. A group
    /// with an error has no filters checked.
    pub groups: Vec<Result<(), String>>,
    /// Every filter of every group that validates, in file order.
    pub filters: Vec<CheckedFilter>,
}

/// One filter of a mesh file, and how it fared.
#[derive(Debug)]
pub struct CheckedFilter {
    /// `file:line:column` of its `module`.
    pub location: String,
    /// Its key, e.g. `proxies[0].listeners[1].filters[2]`.
    pub key: String,
    /// Its name in the chain.
    pub name: String,
    /// Its `module`, as written.
    pub module: String,
    /// How it fared.
    pub outcome: FilterOutcome,
}

/// How a filter fared in an offline check.
#[derive(Debug, PartialEq, Eq)]
pub enum FilterOutcome {
    /// It loaded with its config, and every cluster it names is in the mesh.
    Loaded,
    /// A pushed filter (`filter:NAME`): only a server that has it can load it.
    Pushed,
    /// It did not load: `file:line:column: key: why`.
    Failed(String),
}

/// Why a mesh file could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The YAML does not parse or does not fit the schema.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The filter engine could not start.
    #[error("filter engine: {0}")]
    Engine(#[from] LoadError),
}

/// Check a mesh file without a config server, as far as that can go: it parses,
/// every group's configuration validates (with each pushed `filter:NAME` taken as
/// pushed), and every built-in filter loads with its config, which also checks the
/// clusters it routes to. Pushed filters are listed, not loaded: only the server
/// has them (`PUT /v1/mesh?dry_run=true` checks them there).
///
/// Every filter is loaded on its own, so that one that fails does not hide the
/// others.
pub fn check_mesh_offline(text: &str, file: &str) -> Result<MeshCheck, CheckError> {
    let mesh = MeshConfig::parse(text, file)?;
    // Any valid sha256 stands for a pushed filter's version here: nothing loads it.
    let stand_in = "0".repeat(64);
    let pushed: BTreeMap<String, String> = (mesh.proxies.iter())
        .flat_map(|g| &g.listeners)
        .flat_map(|l| &l.filters)
        .filter_map(|f| match ModuleRef::parse(&f.module.value) {
            Ok(ModuleRef::Pushed(name)) => Some((name, stand_in.clone())),
            _ => None,
        })
        .collect();
    let engine = Engine::new()?;
    let mut groups = Vec::new();
    let mut filters = Vec::new();
    for g in 0..mesh.proxies.len() {
        let config = match mesh.proxy_config(g, &pushed) {
            Ok(c) => c,
            Err(e) => {
                groups.push(Err(e.to_string()));
                continue;
            }
        };
        groups.push(Ok(()));
        for (l, listener) in config.listeners.iter().enumerate() {
            for (j, f) in listener.filters.iter().enumerate() {
                filters.push(CheckedFilter {
                    location: config.locate(&f.module.referenced),
                    key: config.listener_key(l, &format!(".filters[{j}]")),
                    name: f.name.value.clone(),
                    module: f.module.value.clone(),
                    outcome: load_one(&engine, &config, l, listener, j),
                });
            }
        }
    }
    Ok(MeshCheck { groups, filters })
}

/// Load filter `j` of listener `l` alone, in a chain of its own.
fn load_one(
    engine: &Engine,
    config: &Config,
    l: usize,
    listener: &ListenerConfig,
    j: usize,
) -> FilterOutcome {
    let f = &listener.filters[j];
    if let ModuleRef::Pushed(_) = config.module_source(f) {
        return FilterOutcome::Pushed;
    }
    let alone = ListenerConfig {
        filters: vec![f.clone()],
        ..listener.clone()
    };
    match FilterChain::load(engine, config, l, &alone, &NoModules) {
        Ok(_) => FilterOutcome::Loaded,
        Err(mut e) => {
            // Alone in its chain it is filters[0]; the file has it at j.
            let at = config.listener_key(l, &format!(".filters[{j}]"));
            e.key = e
                .key
                .replacen(&config.listener_key(l, ".filters[0]"), &at, 1);
            FilterOutcome::Failed(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_names() {
        for ok in ["a", "auth", "rate-limit.v2", "0day", "a_b", &"x".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "A", "a/b", "a b", "é", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pins_must_name_pushed_versions() {
        let sha = "ab".repeat(32);
        let mesh = MeshConfig::parse(
            &format!(
                "proxies:\n  - select: {{}}\n    listeners:\n      - name: in\n        \
                 address: 127.0.0.1:0\n        filters:\n          - name: a\n            \
                 module: filter:a\n            sha256: {sha}\n"
            ),
            "mesh.yaml",
        )
        .unwrap();
        let configs = mesh.validate(&Default::default()).unwrap();
        let mut state = State::default();
        let err = check_pins(&configs, &state).unwrap_err().to_string();
        assert!(
            err.starts_with("mesh.yaml:9:21: proxies[0].listeners[0].filters[0].sha256: "),
            "{err}"
        );
        assert!(err.contains("no filter was pushed"), "{err}");
        state.filters.insert(
            "a".into(),
            vec![crate::store::FilterVersion {
                sha256: sha,
                size: 1,
                pushed: String::new(),
            }],
        );
        check_pins(&configs, &state).unwrap();
    }

    fn member(node: &str, service: &str, labels: &[(&str, &str)]) -> Member {
        Member {
            node: node.into(),
            service: service.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            connected: true,
        }
    }

    fn groups(selectors: &[&str]) -> MeshConfig {
        let mut yaml = String::from("proxies:\n");
        for s in selectors {
            yaml.push_str(&format!("  - select: {s}\n"));
        }
        MeshConfig::parse(&yaml, "mesh.yaml").unwrap()
    }

    #[test]
    fn a_group_that_selects_no_connected_proxy_is_named_with_the_proxies_there_are() {
        let mesh = groups(&["{ service: carts }", "{ service: web }"]);
        let fleet = [
            member("cart-1", "cart", &[("zone", "a")]),
            member("web-1", "web", &[]),
            member("web-2", "web", &[]),
        ];
        let w = selection_warnings(&mesh, &fleet);
        assert_eq!(w.len(), 2, "{w:#?}");
        let Warning::GroupSelectsNoProxy {
            group,
            selector,
            message,
        } = &w[0]
        else {
            panic!("{w:?}")
        };
        assert_eq!((*group, selector.as_str()), (0, "{ service: carts }"));
        assert_eq!(
            message,
            "group 0 (select: { service: carts }) selects no connected proxy (did you mean \
             service \"cart\"?); connected: cart-1 (service cart, labels zone=a); 2 \
             proxies (service web, no labels)"
        );
        // And the proxy the typo leaves out is named too.
        assert!(
            matches!(&w[1], Warning::ProxyWithoutGroup { node, .. } if node == "cart-1"),
            "{w:?}"
        );
    }

    #[test]
    fn a_proxy_no_group_selects_is_named() {
        let mesh = groups(&["{ service: web, labels: { zone: a } }"]);
        let fleet = [
            member("web-1", "web", &[("zone", "a")]),
            member("web-2", "web", &[("zone", "b")]),
        ];
        let w = selection_warnings(&mesh, &fleet);
        assert_eq!(
            w,
            [Warning::ProxyWithoutGroup {
                node: "web-2".into(),
                service: "web".into(),
                labels: BTreeMap::from([("zone".into(), "b".into())]),
                message: "proxy web-2 (service web, labels zone=b) is selected by no group, \
                          so it gets no configuration; groups select group 0 \
                          { service: web, labels: { zone: a } }"
                    .into(),
            }]
        );
    }

    #[test]
    fn a_group_shadowed_by_an_earlier_one_is_named_with_the_group_that_wins() {
        let mesh = groups(&["{}", "{ service: web }"]);
        let w = selection_warnings(&mesh, &[member("web-1", "web", &[])]);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].message()
                .contains("web-1 (group 0) match it but take an earlier group"),
            "{}",
            w[0].message()
        );
    }

    #[test]
    fn disconnected_proxies_do_not_count_and_none_connected_is_said() {
        let mesh = groups(&["{ service: web }"]);
        let mut gone = member("web-1", "web", &[]);
        gone.connected = false;
        let w = selection_warnings(&mesh, &[gone]);
        assert_eq!(w.len(), 1);
        assert!(w[0].message().ends_with("connected: none"), "{w:?}");
        // Every group takes a connected proxy and every proxy a group: nothing to say.
        let mesh = groups(&["{ service: web }", "{ service: cart }"]);
        let fleet = [member("w", "web", &[]), member("c", "cart", &[])];
        assert_eq!(selection_warnings(&mesh, &fleet), []);
    }

    #[test]
    fn long_rosters_are_cut() {
        let mesh = groups(&["{ service: nothing-like-them }"]);
        let fleet: Vec<Member> = (0..20)
            .map(|i| member(&format!("p{i}"), &format!("svc-{i}"), &[]))
            .collect();
        let w = selection_warnings(&mesh, &fleet);
        assert!(
            w[0].message().ends_with("; and 12 more"),
            "{}",
            w[0].message()
        );
    }

    #[test]
    fn edit_distance() {
        assert_eq!(edits("carts", "cart"), 1);
        assert_eq!(edits("cart", "crat"), 2);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("web", "web"), 0);
    }

    const CHECKED: &str = "\
clusters:
  - name: web
    endpoints: [\"127.0.0.1:9\"]
proxies:
  - select: { service: web }
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        filters:
          - name: auth
            module: filter:auth
          - name: router
            module: builtin:router
            config:
              routes:
                - match: { path: { prefix: / } }
                  cluster: nowhere
          - name: fault
            module: builtin:fault
            config: { abort: { status: 503, header: { name: x-fault, value: abort } } }
  - select: { service: cart }
    listeners:
      - name: inbound
        address: 127.0.0.1:0
        default_cluster: nope
";

    #[test]
    fn an_offline_check_loads_every_builtin_alone_and_lists_pushed_filters() {
        let check = check_mesh_offline(CHECKED, "mesh.yaml").unwrap();
        assert_eq!(check.groups.len(), 2);
        assert!(check.groups[0].is_ok());
        let second = check.groups[1].as_ref().unwrap_err();
        assert!(
            second.starts_with("mesh.yaml:25:26: proxies[1].listeners[0].default_cluster: "),
            "{second}"
        );
        let outcomes: Vec<(&str, &FilterOutcome)> = (check.filters.iter())
            .map(|f| (f.key.as_str(), &f.outcome))
            .collect();
        assert_eq!(outcomes.len(), 3, "{outcomes:?}");
        assert_eq!(
            outcomes[0],
            ("proxies[0].listeners[0].filters[0]", &FilterOutcome::Pushed)
        );
        // The router fails where the file names the missing cluster, at its own
        // index although it loaded alone.
        let FilterOutcome::Failed(why) = outcomes[1].1 else {
            panic!("{outcomes:?}")
        };
        assert!(
            why.starts_with(
                "mesh.yaml:17:28: proxies[0].listeners[0].filters[1].config.routes[0].cluster: "
            ) && why.contains("\"nowhere\""),
            "{why}"
        );
        assert_eq!(
            outcomes[2],
            ("proxies[0].listeners[0].filters[2]", &FilterOutcome::Loaded)
        );
        assert_eq!(check.filters[2].location, "mesh.yaml:19:21");
        assert_eq!(check.filters[2].module, "builtin:fault");

        let err = check_mesh_offline("proxies: [", "bad.yaml").unwrap_err();
        assert!(err.to_string().starts_with("bad.yaml:"), "{err}");
    }
}
