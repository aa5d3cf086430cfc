//! Checked newtypes for durations (`250ms`, `30s`) and sizes (`16KiB`, `1MB`), read
//! as the filter SDK reads them: its `weft_sdk::units` lists every unit.

use serde::{Deserialize, Deserializer};

// The filter SDK's file itself, so that the proxy's YAML and every filter's `config`
// accept the same units. It is included rather than the SDK depended on: the SDK
// crate carries the filters' WIT bindings, which no host crate should build or link.
#[path = "../../sdk/src/units.rs"]
mod text;

pub use text::{
    UnitError, deserialize_duration, deserialize_optional_duration, deserialize_size,
    parse_duration, parse_size,
};

/// A duration written like `250ms`, `30s` or `1m` (every unit: [`parse_duration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_duration(d).map(Duration)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// A size in bytes written like `16KiB`, `1MB` or `4096` (every unit: [`parse_size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    /// As usize, saturating.
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_size(d).map(Size)
    }
}
