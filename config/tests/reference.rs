//! The configuration reference, `docs/configuration.md`, names every key the models
//! read, and no key they do not.
//!
//! 1. The keys are read from the models themselves: [`Tracer`] is a deserializer that
//!    answers every `deserialize_struct` by visiting each of its fields in turn, so
//!    serde's derived code walks the whole model and the tracer writes down every
//!    field's dotted path (`listeners[].tls.mode`) and every enum's variants.
//! 2. The reference is read as its table rows: a row starting with `` `key` `` under
//!    `## The proxy file` or `## The mesh file`.
//! 3. Each key must have its row, each row its key, and an enum's row must name each
//!    of its variants.
//!
//! What a trace cannot see is listed in [`UNTRACED`] with the reason, and grafted in
//! by hand.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;

use serde::Deserialize;
use serde::de::value::{MapDeserializer, StrDeserializer};
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use weft_config::{Config, DnsEndpoint, MeshConfig, WeightedEndpoint};

/// The reference, from this crate's folder.
const REFERENCE: &str = include_str!("../../docs/configuration.md");

/// Parts of the models a trace cannot walk, and why; the test traces their types
/// apart and puts their keys where they belong.
const UNTRACED: &[(&str, &str)] = &[
    (
        "clusters[].endpoints[]",
        "EndpointConfig is `untagged`: serde buffers the value and tries each variant \
         off the tracer, so the keys of its map forms (WeightedEndpoint, DnsEndpoint) \
         are traced on their own",
    ),
    (
        "listeners[].filters[].config",
        "FilterSettings takes any YAML value: its keys are the filter's own (the \
         built-in filters' are in docs/builtin-filters.md)",
    ),
];

/// Mesh keys that are the proxy file's keys under another path: the mesh uses the
/// same types there, so their rows live once, in the proxy file's section.
const MESH_ALIASES: &[(&str, &str)] = &[
    ("proxies[].listeners", "listeners"),
    ("proxies[].access_log", "access_log"),
    ("proxies[].shutdown", "shutdown"),
    ("clusters", "clusters"),
    ("dns", "dns"),
    ("tracing", "tracing"),
    ("access_log", "access_log"),
    ("shutdown", "shutdown"),
];

/// serde-saphyr's `Spanned<T>` asks for a newtype of this name and, given a map whose
/// first key is [`SPANNED_MARKER`], reads `value`, `referenced` and `defined` from
/// it. Both names are serde-saphyr's private contract with itself (2.1, pinned in
/// Cargo.lock); if they change, the trace stops under every `Spanned` field and the
/// reference check fails loudly rather than passing.
const SPANNED_NEWTYPE: &str = "__yaml_spanned";
const SPANNED_MARKER: &str = "__serde_saphyr_private_spanned";

/// What the trace learned: every key, and the variants of each enum key.
#[derive(Default)]
struct Trace {
    keys: BTreeSet<String>,
    variants: BTreeMap<String, Vec<&'static str>>,
}

type Shared = Rc<RefCell<Trace>>;

#[derive(Debug)]
struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// Every integer is 1: within every integer type, and a valid count or weight.
macro_rules! numbers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
            v.visit_u64(1)
        }
    )*};
}

/// A deserializer that walks a model: each struct field is visited at its path, each
/// list has one element (`[]`), each enum takes its first variant, and every leaf gets
/// a value its type accepts (`1s` for text, which durations need; `1` for `any`,
/// which sizes, untagged enums and free-form settings take).
struct Tracer {
    path: String,
    trace: Shared,
}

impl Tracer {
    fn at(&self, step: &str) -> Tracer {
        let path = match (self.path.is_empty(), step.starts_with('[')) {
            (true, _) | (false, true) => format!("{}{step}", self.path),
            (false, false) => format!("{}.{step}", self.path),
        };
        Tracer {
            path,
            trace: Rc::clone(&self.trace),
        }
    }
}

impl<'de> Deserializer<'de> for Tracer {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_str("1")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_bool(false)
    }

    numbers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_f64(1.0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_f64(1.0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_str("1s")
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_str("1s")
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_some(self)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, TraceError> {
        if name == SPANNED_NEWTYPE {
            return v.visit_newtype_struct(SpannedTracer(self));
        }
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_seq(OneElement(Some(self.at("[]"))))
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        // A map's keys are the user's (labels): the map is one key, with no keys
        // below it.
        v.visit_map(MapDeserializer::new(std::iter::empty::<(&str, &str)>()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        let mut trace = self.trace.borrow_mut();
        for field in fields {
            trace.keys.insert(self.at(field).path);
        }
        drop(trace);
        v.visit_map(Fields {
            tracer: self,
            fields: fields.iter(),
            current: None,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        let first = variants.first().copied().unwrap_or_default();
        let mut trace = self.trace.borrow_mut();
        trace.variants.insert(self.path.clone(), variants.to_vec());
        drop(trace);
        let variant: StrDeserializer<'_, TraceError> = first.into_deserializer();
        v.visit_enum(variant)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_unit()
    }

    // None of these is in a model; `any` answers text, which fails loudly if one
    // appears where text does not fit.
    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit_struct tuple tuple_struct identifier
    }
}

/// A list of one element, traced at `path[]`.
struct OneElement(Option<Tracer>);

impl<'de> SeqAccess<'de> for OneElement {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        self.0.take().map(|t| seed.deserialize(t)).transpose()
    }
}

/// A struct's fields, each given once, with its value traced at its path.
struct Fields {
    tracer: Tracer,
    fields: std::slice::Iter<'static, &'static str>,
    current: Option<&'static str>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        self.current = self.fields.next().copied();
        let Some(field) = self.current else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, TraceError> = field.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let field = self.current.unwrap_or_default();
        seed.deserialize(self.tracer.at(field))
    }
}

/// What `Spanned<T>` reads: serde-saphyr's marked map, whose `value` is traced at the
/// field's own path.
struct SpannedTracer(Tracer);

impl<'de> Deserializer<'de> for SpannedTracer {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_map(SpannedParts {
            tracer: Some(self.0),
            step: 0,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
        enum identifier ignored_any
    }
}

struct SpannedParts {
    tracer: Option<Tracer>,
    step: usize,
}

const SPANNED_KEYS: [&str; 4] = [SPANNED_MARKER, "value", "referenced", "defined"];

impl<'de> MapAccess<'de> for SpannedParts {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        let Some(key) = SPANNED_KEYS.get(self.step) else {
            return Ok(None);
        };
        self.step += 1;
        let key: StrDeserializer<'_, TraceError> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        match (self.step, self.tracer.take()) {
            (2, Some(tracer)) => seed.deserialize(tracer),
            (2, None) => Err(de::Error::custom("value read twice")),
            (1, tracer) => {
                self.tracer = tracer;
                seed.deserialize(().into_deserializer())
            }
            (_, tracer) => {
                self.tracer = tracer;
                // A `Location`: line and column (span and source have defaults).
                let place = [("line", 0u32), ("column", 0u32)];
                seed.deserialize(MapDeserializer::new(place.into_iter()))
            }
        }
    }
}

/// Every key of `T`, traced from `root` (empty: the file's top level).
fn trace<'de, T: Deserialize<'de>>(root: &str) -> Trace {
    let shared = Shared::default();
    let tracer = Tracer {
        path: root.to_owned(),
        trace: Rc::clone(&shared),
    };
    if let Err(e) = T::deserialize(tracer) {
        panic!(
            "tracing {} at {root:?} failed: {e}",
            std::any::type_name::<T>()
        );
    }
    shared.take()
}

/// Every key of the proxy file, with the untraced parts grafted in.
fn proxy_keys() -> Trace {
    let mut all = trace::<Config>("");
    for part in [
        trace::<WeightedEndpoint>("clusters[].endpoints[]"),
        trace::<DnsEndpoint>("clusters[].endpoints[]"),
    ] {
        all.keys.extend(part.keys);
        all.variants.extend(part.variants);
    }
    all.keys
        .extend(UNTRACED.iter().map(|(key, _)| (*key).to_owned()));
    all
}

/// The reference's rows: key and the row's whole text, by section.
fn rows(section: &str) -> BTreeMap<String, String> {
    let heading = format!("## {section}");
    let mut inside = false;
    let mut rows = BTreeMap::new();
    for line in REFERENCE.lines() {
        if line.starts_with("## ") {
            inside = line.trim_end() == heading;
            continue;
        }
        let Some(rest) = line.strip_prefix("| `").filter(|_| inside) else {
            continue;
        };
        if let Some((key, _)) = rest.split_once('`') {
            let previous = rows.insert(key.to_owned(), line.to_owned());
            assert!(previous.is_none(), "{section}: `{key}` has two rows");
        }
    }
    assert!(
        !rows.is_empty(),
        "docs/configuration.md has no rows under `{heading}`"
    );
    rows
}

/// What is wrong between a trace and the rows that document it; `elsewhere` says a
/// key is documented in another section.
fn compare(
    what: &str,
    traced: &Trace,
    rows: &BTreeMap<String, String>,
    elsewhere: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for key in &traced.keys {
        if !rows.contains_key(key) && !elsewhere(key) {
            wrong.push(format!(
                "{what}: `{key}` is read by the model but has no row"
            ));
        }
    }
    for key in rows.keys() {
        if !traced.keys.contains(key) {
            wrong.push(format!(
                "{what}: the row `{key}` names no key the model reads"
            ));
        }
    }
    for (key, variants) in &traced.variants {
        let Some(row) = rows.get(key) else { continue };
        for v in variants {
            if !row.contains(&format!("`{v}`")) {
                wrong.push(format!(
                    "{what}: the row `{key}` does not name the value `{v}`"
                ));
            }
        }
    }
    wrong
}

#[test]
fn the_proxy_file_reference_names_every_key() {
    let traced = proxy_keys();
    // The trace reached the depths: through Spanned, Option, Vec and enums.
    for deep in [
        "listeners[].tls.certificates[].server_names",
        "listeners[].filters[].metrics.expire_after",
        "clusters[].endpoints[].dns",
    ] {
        assert!(traced.keys.contains(deep), "the trace missed {deep}");
    }
    let wrong = compare("the proxy file", &traced, &rows("The proxy file"), |_| {
        false
    });
    assert!(
        wrong.is_empty(),
        "docs/configuration.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_mesh_file_reference_names_every_key() {
    let mut traced = trace::<MeshConfig>("");
    // The mesh's clusters are the proxy file's, endpoints and all.
    for part in [
        trace::<WeightedEndpoint>("clusters[].endpoints[]"),
        trace::<DnsEndpoint>("clusters[].endpoints[]"),
    ] {
        traced.keys.extend(part.keys);
    }
    traced.keys.insert("clusters[].endpoints[]".to_owned());
    let proxy = proxy_keys();
    let proxy_rows = rows("The proxy file");
    // A key under an alias is documented by the proxy file's row for the same key.
    let aliased = |key: &str| {
        MESH_ALIASES.iter().any(|(mesh, proxy_path)| {
            key.strip_prefix(mesh)
                .filter(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                .is_some_and(|rest| {
                    let same = format!("{proxy_path}{rest}");
                    proxy.keys.contains(&same) && proxy_rows.contains_key(&same)
                })
        })
    };
    let wrong = compare("the mesh file", &traced, &rows("The mesh file"), aliased);
    assert!(
        wrong.is_empty(),
        "docs/configuration.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn untraced_parts_are_in_the_reference() {
    let proxy_rows = rows("The proxy file");
    for (key, why) in UNTRACED {
        assert!(
            proxy_rows.contains_key(*key),
            "`{key}` (not traced: {why}) needs its row"
        );
    }
}
