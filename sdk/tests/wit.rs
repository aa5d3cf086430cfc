//! The WIT contract the SDK builds from is the workspace's, and every item of it is
//! documented: wit-bindgen copies those comments onto the generated types
//! (`Facts`, `HeaderError`, `Action`, ...), which are the SDK's public API, and the
//! crate's `missing_docs` cannot see into generated code.

use std::path::Path;

use wit_parser::{Docs, Resolve, TypeDefKind};

fn sdk_wit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("wit")
}

#[test]
fn the_sdks_wit_is_the_workspaces() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/filter.wit");
    // Outside the workspace (the packaged crate) there is only the SDK's copy.
    let Ok(canonical) = std::fs::read(&workspace) else {
        return;
    };
    let ours = std::fs::read(sdk_wit().join("filter.wit")).expect("sdk/wit/filter.wit");
    assert!(
        ours == canonical,
        "sdk/wit/filter.wit differs from wit/filter.wit"
    );
}

#[test]
fn every_item_of_the_contract_is_documented() {
    let mut resolve = Resolve::new();
    let (package, _) = resolve.push_path(sdk_wit()).expect("the WIT parses");
    let mut missing = Vec::new();
    let mut check = |what: String, docs: &Docs| {
        if docs.contents.as_deref().is_none_or(|d| d.trim().is_empty()) {
            missing.push(what);
        }
    };
    for (name, &id) in &resolve.packages[package].interfaces {
        let iface = &resolve.interfaces[id];
        check(format!("interface {name}"), &iface.docs);
        for (f, func) in &iface.functions {
            check(format!("{name}: func {f}"), &func.docs);
        }
        for (t, &ty) in &iface.types {
            let def = &resolve.types[ty];
            // A `use` names a type documented where it is defined.
            if matches!(def.kind, TypeDefKind::Type(_)) {
                continue;
            }
            check(format!("{name}: type {t}"), &def.docs);
            match &def.kind {
                TypeDefKind::Record(r) => (r.fields.iter())
                    .for_each(|f| check(format!("{name}: {t}.{}", f.name), &f.docs)),
                TypeDefKind::Variant(v) => (v.cases.iter())
                    .for_each(|c| check(format!("{name}: {t}::{}", c.name), &c.docs)),
                TypeDefKind::Enum(e) => (e.cases.iter())
                    .for_each(|c| check(format!("{name}: {t}::{}", c.name), &c.docs)),
                TypeDefKind::Flags(f) => (f.flags.iter())
                    .for_each(|c| check(format!("{name}: {t}::{}", c.name), &c.docs)),
                _ => {}
            }
        }
    }
    for (name, &id) in &resolve.packages[package].worlds {
        check(format!("world {name}"), &resolve.worlds[id].docs);
    }
    assert!(missing.is_empty(), "undocumented in the WIT: {missing:#?}");
}
