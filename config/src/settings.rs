//! A filter's `config`: the JSON the filter is given, and where in the file each of
//! its keys and items was written, so that a filter's complaint about
//! `routes[0].rewrite.host` points at that line, not at `config:`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{Location, Spanned};

/// A filter's configuration as read from YAML.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterSettings {
    json: Value,
    places: Places,
}

/// Where the parts of a value were written.
#[derive(Clone, Debug, Default, PartialEq)]
enum Places {
    #[default]
    Scalar,
    Map(Vec<(String, Location, Places)>),
    Seq(Vec<(Location, Places)>),
}

impl FilterSettings {
    /// The configuration as the JSON value the filter's `init` receives.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Where the value at `path` (`routes[0].rewrite.host`, as filters name keys in
    /// their errors) was written: that value's place, or its nearest enclosing one
    /// that exists; none when even the first step is not in the file.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut here = &self.places;
        let mut found = None;
        for step in steps(path) {
            let next = match (here, step) {
                (Places::Map(entries), Step::Key(key)) => entries
                    .iter()
                    .find(|(k, _, _)| k == key)
                    .map(|(_, at, places)| (*at, places)),
                (Places::Seq(items), Step::Index(i)) => {
                    items.get(i).map(|(at, places)| (*at, places))
                }
                _ => None,
            };
            match next {
                Some((at, places)) => {
                    found = Some(at);
                    here = places;
                }
                None => break,
            }
        }
        found
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The steps of `a.b[2].c`: keys `a`, `b`, index 2, key `c`.
fn steps(path: &str) -> impl Iterator<Item = Step<'_>> {
    path.split('.')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (key, rest) = part.split_at(part.find('[').unwrap_or(part.len()));
            let indexes = rest
                .split('[')
                .filter_map(|i| i.strip_suffix(']'))
                .map(|i| i.parse().map_or(Step::Key(i), Step::Index));
            (!key.is_empty())
                .then_some(Step::Key(key))
                .into_iter()
                .chain(indexes)
        })
}

impl<'de> Deserialize<'de> for FilterSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SettingsVisitor)
    }
}

struct SettingsVisitor;

fn scalar(json: Value) -> FilterSettings {
    FilterSettings {
        json,
        places: Places::Scalar,
    }
}

impl<'de> Visitor<'de> for SettingsVisitor {
    type Value = FilterSettings;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<FilterSettings, E> {
        Ok(scalar(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<FilterSettings, E> {
        Ok(scalar(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<FilterSettings, E> {
        Ok(scalar(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<FilterSettings, E> {
        Number::from_f64(v)
            .map(|n| scalar(Value::Number(n)))
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can carry")))
    }

    fn visit_str<E>(self, v: &str) -> Result<FilterSettings, E> {
        Ok(scalar(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<FilterSettings, E> {
        Ok(scalar(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<FilterSettings, E> {
        Ok(scalar(Value::Null))
    }

    fn visit_none<E>(self) -> Result<FilterSettings, E> {
        Ok(scalar(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<FilterSettings, D::Error> {
        FilterSettings::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FilterSettings, A::Error> {
        let (mut json, mut places) = (Vec::new(), Vec::new());
        while let Some(item) = seq.next_element::<Spanned<FilterSettings>>()? {
            json.push(item.value.json);
            places.push((item.referenced, item.value.places));
        }
        Ok(FilterSettings {
            json: Value::Array(json),
            places: Places::Seq(places),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FilterSettings, A::Error> {
        let (mut json, mut places) = (Map::new(), Vec::new());
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Spanned<FilterSettings>>()?;
            if json.insert(key.clone(), value.value.json).is_some() {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            places.push((key, value.referenced, value.value.places));
        }
        Ok(FilterSettings {
            json: Value::Object(json),
            places: Places::Map(places),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
config:
  routes:
    - match: { path: { prefix: / } }
      rewrite:
        host: x
    - cluster: b
  on: true
";

    #[derive(serde::Deserialize)]
    struct Holder {
        config: FilterSettings,
    }

    #[test]
    fn keys_are_found_where_they_were_written() {
        let s = serde_saphyr::from_str::<Holder>(YAML).unwrap().config;
        assert_eq!(s.json()["routes"][0]["rewrite"]["host"], "x");
        assert_eq!(s.json()["on"], true);
        let at = |path: &str| s.locate(path).map(|l| (l.line(), l.column()));
        assert_eq!(at("routes[0].rewrite.host"), Some((5, 15)));
        assert_eq!(at("routes[1].cluster"), Some((6, 16)));
        assert_eq!(at("on"), Some((7, 7)));
        // A key the file lacks: its nearest enclosing value.
        assert_eq!(at("routes[0].rewrite.port"), at("routes[0].rewrite"));
        assert_eq!(at("routes[7]"), at("routes"));
        assert_eq!(at("nothing"), None);
        assert_eq!(at("."), None);
    }

    #[test]
    fn paths_split_into_steps() {
        let got: Vec<Step<'_>> = steps("a.b[2][3].c").collect();
        assert_eq!(
            got,
            [
                Step::Key("a"),
                Step::Key("b"),
                Step::Index(2),
                Step::Index(3),
                Step::Key("c")
            ]
        );
        assert_eq!(steps("[1]").collect::<Vec<_>>(), [Step::Index(1)]);
    }
}
