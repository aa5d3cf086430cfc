//! A YAML document as a generic tree that keeps its keys in the order they were
//! written, read and written with `serde-saphyr` (the parser the rest of Weft reads
//! YAML with). `weft inject` edits a few keys of a manifest it does not otherwise
//! understand, so every other key must come back as it was, in its place; a sorted
//! map (`serde_json::Value`) would reorder every manifest it touched.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// One YAML node: a scalar, a sequence, or a mapping in its written order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A string node.
    pub(crate) fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    /// A mapping of string keys, in this order.
    pub(crate) fn map<const N: usize>(entries: [(&str, Node); N]) -> Node {
        Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Node::str(k), v))
                .collect(),
        )
    }

    /// The string this node holds, if it is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of `key` in a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at a path of keys.
    pub(crate) fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    /// The value of `key` in a mapping, mutable.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value of `key` in a mapping, added at the end (as `empty`) when missing
    /// or null; `None` when this node is not a mapping.
    pub(crate) fn entry(&mut self, key: &str, empty: impl FnOnce() -> Node) -> Option<&mut Node> {
        let Node::Map(entries) = self else {
            return None;
        };
        let at = match entries.iter().position(|(k, _)| k.as_str() == Some(key)) {
            Some(i) => {
                if entries[i].1 == Node::Null {
                    entries[i].1 = empty();
                }
                i
            }
            None => {
                entries.push((Node::str(key), empty()));
                entries.len() - 1
            }
        };
        Some(&mut entries[at].1)
    }

    /// Set `key` of a mapping to `value`, in its place if it is there, else at the end.
    pub(crate) fn set(&mut self, key: &str, value: Node) {
        if let Some(slot) = self.entry(key, || Node::Null) {
            *slot = value;
        }
    }

    /// Remove `key` from a mapping.
    pub(crate) fn remove(&mut self, key: &str) {
        if let Node::Map(entries) = self {
            entries.retain(|(k, _)| k.as_str() != Some(key));
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Int(i) => s.serialize_i64(*i),
            Node::UInt(u) => s.serialize_u64(*u),
            Node::Float(f) => s.serialize_f64(*f),
            Node::Str(v) => s.serialize_str(v),
            Node::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::UInt(v), Node::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::str(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        // A `!!binary` scalar: manifests carry binary data as base64 strings
        // instead, so one that is not text has no place in them.
        match std::str::from_utf8(v) {
            Ok(s) => Ok(Node::str(s)),
            Err(_) => Err(E::custom("a binary scalar that is not UTF-8 text")),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_order_and_values_their_types() {
        let text = "zeta: 1\nalpha:\n  - \"8080\"\n  - 8080\n  - true\n  - null\n  - 0.5\nmid: {b: x, a: y}\n";
        let node: Node = serde_saphyr::from_str(text).unwrap();
        let out = serde_saphyr::to_string(&node).unwrap();
        let back: Node = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(back, node);
        let keys: Vec<_> = out.lines().filter(|l| !l.starts_with([' ', '-'])).collect();
        assert_eq!(keys, ["zeta: 1", "alpha:", "mid:"], "{out}");
        assert_eq!(
            node.at(&["alpha"]).and_then(|a| match a {
                Node::Seq(items) => items.first().cloned(),
                _ => None,
            }),
            Some(Node::str("8080"))
        );
    }

    #[test]
    fn entry_adds_missing_keys_at_the_end_and_fills_nulls() {
        let mut node: Node = serde_saphyr::from_str("a: 1\nb: null\n").unwrap();
        node.entry("b", || Node::Seq(vec![]));
        node.entry("c", || Node::Int(3));
        node.set("a", Node::Int(2));
        assert_eq!(
            node,
            Node::map([
                ("a", Node::Int(2)),
                ("b", Node::Seq(vec![])),
                ("c", Node::Int(3))
            ])
        );
        node.remove("b");
        assert!(node.get("b").is_none());
    }
}
