//! Durations and sizes as configurations write them: `250ms`, `1h 30m`, `64KiB`, `1.5MB`.
//!
//! This is the one reading of both for the proxy's own YAML and for every filter's
//! `config`, so a value that works in one place works in all of them.
//!
//! 1. Call [`parse_duration`] or [`parse_size`] on the text, or name
//!    [`deserialize_duration`], [`deserialize_optional_duration`] or
//!    [`deserialize_size`] in a field's `#[serde(deserialize_with = "...")]`.
//! 2. A value that does not parse gives a [`UnitError`] that quotes it, says what is
//!    wrong, and shows how to write it.
//!
//! ```
//! use std::time::Duration;
// The crate's own name, since weft-config includes this file too (as `weft_config::units`).
#![doc = concat!("use ", env!("CARGO_CRATE_NAME"), "::units::{parse_duration, parse_size, UnitError};")]
//!
//! assert_eq!(parse_duration("1m 30s")?, Duration::from_secs(90));
//! assert_eq!(parse_size("64KiB")?, 65_536);
//! # Ok::<(), UnitError>(())
//! ```
//!
//! # Durations
//!
//! One or more terms, each a number and a unit, with or without spaces between them:
//! `250ms`, `1.5s`, `1h 30m`, `1m30s`. Every term needs a unit; units are case
//! sensitive (`m` is a minute, `M` a month).
//!
//! | unit        | spellings                               |
//! |-------------|-----------------------------------------|
//! | nanosecond  | `ns`, `nsec`, `nanos`                   |
//! | microsecond | `us`, `µs`, `usec`                      |
//! | millisecond | `ms`, `msec`, `millis`                  |
//! | second      | `s`, `sec`, `secs`, `second`, `seconds` |
//! | minute      | `m`, `min`, `mins`, `minute`, `minutes` |
//! | hour        | `h`, `hr`, `hrs`, `hour`, `hours`       |
//! | day         | `d`, `day`, `days`                      |
//! | week        | `w`, `wk`, `wks`, `week`, `weeks`       |
//! | month       | `M`, `month`, `months` (30.44 days)     |
//! | year        | `y`, `yr`, `yrs`, `year`, `years` (365.25 days) |
//!
//! A decimal fraction must come out as a whole number of nanoseconds (`1.5ns` is
//! refused), and the total must fit in about 584 billion years.
//!
//! # Sizes
//!
//! A whole number of bytes (`4096`, written as a number or as text), or a number and a
//! unit, with or without a space between them: `64KiB`, `1.5 MB`. Units ignore case.
//! Decimal units are powers of 1000 and binary units (with an `i`) powers of 1024, so
//! `1MB` is 1,000,000 bytes and `1MiB` is 1,048,576:
//!
//! | unit | decimal (×1000ⁿ)  | binary (×1024ⁿ)    |
//! |------|-------------------|--------------------|
//! | byte | `B`               |                    |
//! | kilo | `K`, `KB`         | `Ki`, `KiB`        |
//! | mega | `M`, `MB`         | `Mi`, `MiB`        |
//! | giga | `G`, `GB`         | `Gi`, `GiB`        |
//! | tera | `T`, `TB`         | `Ti`, `TiB`        |
//! | peta | `P`, `PB`         | `Pi`, `PiB`        |
//! | exa  | `E`, `EB`         | `Ei`, `EiB`        |
//!
//! A fraction of a byte is dropped (`1.5B` is 1 byte); a size must fit in 64 bits.
//!
//! In both, a number may have at most 20 decimal places, and space around the value
//! is ignored.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// Why a duration or a size could not be read; its message quotes the text, says what
/// is wrong and shows how to write one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitError {
    kind: Kind,
    input: String,
    reason: Reason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Duration,
    Size,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Reason {
    Empty,
    NumberExpected(String),
    UnitExpected(String),
    UnknownUnit(String),
    TooManyDecimals,
    TooLarge,
    FinerThanNanosecond,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, example, units) = match self.kind {
            Kind::Duration => (
                "duration",
                "250ms, 30s or 1h 30m",
                "ns, us, ms, s, m, h, d, w, M, y and their longer names",
            ),
            Kind::Size => (
                "size",
                "4096, 64KiB or 1MB",
                "B; KB, MB, GB, TB, PB, EB (×1000); KiB, MiB, GiB, TiB, PiB, EiB (×1024)",
            ),
        };
        write!(f, "invalid {what} {:?}: ", self.input)?;
        match &self.reason {
            Reason::Empty => f.write_str("it is empty")?,
            Reason::NumberExpected(at) => write!(f, "expected a number at {at:?}")?,
            Reason::UnitExpected(at) if at.is_empty() => f.write_str("a unit is missing")?,
            Reason::UnitExpected(at) => write!(f, "expected a unit at {at:?}")?,
            Reason::UnknownUnit(unit) => write!(f, "unknown unit {unit:?} (units: {units})")?,
            Reason::TooManyDecimals => f.write_str("more than 20 decimal places")?,
            Reason::TooLarge => f.write_str("too large")?,
            Reason::FinerThanNanosecond => f.write_str("finer than a nanosecond")?,
        }
        write!(f, "; write e.g. {example}")
    }
}

impl std::error::Error for UnitError {}

/// Nanoseconds in each duration unit, under each of its spellings.
const DURATION_UNITS: [(&[&str], u128); 10] = [
    (&["ns", "nsec", "nanos"], 1),
    (&["us", "µs", "usec"], 1_000),
    (&["ms", "msec", "millis"], 1_000_000),
    (&["s", "sec", "secs", "second", "seconds"], NANOS_PER_SEC),
    (
        &["m", "min", "mins", "minute", "minutes"],
        60 * NANOS_PER_SEC,
    ),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600 * NANOS_PER_SEC),
    (&["d", "day", "days"], 86_400 * NANOS_PER_SEC),
    (
        &["w", "wk", "wks", "week", "weeks"],
        7 * 86_400 * NANOS_PER_SEC,
    ),
    (&["M", "month", "months"], 2_630_016 * NANOS_PER_SEC),
    (
        &["y", "yr", "yrs", "year", "years"],
        31_557_600 * NANOS_PER_SEC,
    ),
];

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Bytes in each size unit, under each of its spellings (compared ignoring case).
const SIZE_UNITS: [(&[&str], u64); 13] = [
    (&["b"], 1),
    (&["k", "kb"], 1_000),
    (&["m", "mb"], 1_000_000),
    (&["g", "gb"], 1_000_000_000),
    (&["t", "tb"], 1_000_000_000_000),
    (&["p", "pb"], 1_000_000_000_000_000),
    (&["e", "eb"], 1_000_000_000_000_000_000),
    (&["ki", "kib"], 1 << 10),
    (&["mi", "mib"], 1 << 20),
    (&["gi", "gib"], 1 << 30),
    (&["ti", "tib"], 1 << 40),
    (&["pi", "pib"], 1 << 50),
    (&["ei", "eib"], 1 << 60),
];

/// More would overflow the arithmetic below, and no unit is that fine.
const MAX_DECIMALS: u32 = 20;

/// A number as written, kept exact: `whole` plus `numerator / 10^decimals`.
struct Number {
    whole: u64,
    numerator: u128,
    decimals: u32,
}

impl Number {
    /// The number times `factor`, and whether that is a whole number. Cannot
    /// overflow: every factor is below 2^64 and the fraction below 10^20.
    fn times(&self, factor: u128) -> (u128, bool) {
        let scale = 10u128.pow(self.decimals);
        let fraction = self.numerator * factor;
        (
            u128::from(self.whole) * factor + fraction / scale,
            fraction.is_multiple_of(scale),
        )
    }
}

/// Read a number (`12`, `1.5`, `.5`, `1.`) from the front of `text`; give it and what
/// follows it.
fn read_number(text: &str) -> Result<(Number, &str), Reason> {
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let whole_len = digits(text);
    let (whole, rest) = text.split_at(whole_len);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after) => after.split_at(digits(after)),
        None => ("", rest),
    };
    if whole.is_empty() && fraction.is_empty() {
        return Err(Reason::NumberExpected(text.to_owned()));
    }
    let fraction = fraction.trim_end_matches('0');
    let decimals = u32::try_from(fraction.len()).unwrap_or(u32::MAX);
    if decimals > MAX_DECIMALS {
        return Err(Reason::TooManyDecimals);
    }
    let number = Number {
        whole: if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| Reason::TooLarge)?
        },
        numerator: if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| Reason::TooManyDecimals)?
        },
        decimals,
    };
    Ok((number, rest))
}

/// Parse a duration such as `250ms`, `30s` or `1h 30m`; the module's docs list the
/// units.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let error = |reason| UnitError {
        kind: Kind::Duration,
        input: text.to_owned(),
        reason,
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(error(Reason::Empty));
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = read_number(rest).map_err(error)?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !(c.is_ascii_alphabetic() || c == 'µ'))
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(error(Reason::UnitExpected(after.to_owned())));
        }
        let factor = (DURATION_UNITS.iter())
            .find(|(names, _)| names.contains(&unit))
            .map(|&(_, nanos)| nanos)
            .ok_or_else(|| error(Reason::UnknownUnit(unit.to_owned())))?;
        let (term, whole) = number.times(factor);
        if !whole {
            return Err(error(Reason::FinerThanNanosecond));
        }
        nanos = nanos.saturating_add(term);
        rest = after.trim_start();
    }
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| error(Reason::TooLarge))?;
    // Below 10^9, so it fits.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, subsec))
}

/// Parse a size in bytes such as `4096`, `64KiB` or `1MB`; the module's docs list the
/// units.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let error = |reason| UnitError {
        kind: Kind::Size,
        input: text.to_owned(),
        reason,
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(error(Reason::Empty));
    }
    // Whatever `u64` reads (`+5` too) has always been a number of bytes.
    if let Ok(bytes) = text.parse::<u64>() {
        return Ok(bytes);
    }
    let (number, unit) = read_number(text).map_err(error)?;
    let unit = unit.trim_start();
    if unit.is_empty() {
        return Err(error(Reason::UnitExpected(String::new())));
    }
    let factor = (SIZE_UNITS.iter())
        .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(unit)))
        .map(|&(_, bytes)| bytes)
        .ok_or_else(|| error(Reason::UnknownUnit(unit.to_owned())))?;
    let (bytes, _) = number.times(u128::from(factor));
    u64::try_from(bytes).map_err(|_| error(Reason::TooLarge))
}

/// For `#[serde(deserialize_with = "...")]`: a duration written as text.
pub fn deserialize_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_duration(&String::deserialize(d)?).map_err(de::Error::custom)
}

/// For an optional key, with `#[serde(default, deserialize_with = "...")]`: a duration
/// written as text; the key's absence is `None`.
pub fn deserialize_optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize_duration(d).map(Some)
}

/// For `#[serde(deserialize_with = "...")]`: a size, written as a number of bytes or as
/// text.
pub fn deserialize_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size in bytes, or text such as 64KiB")
        }

        fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<u64, E> {
            Ok(bytes)
        }

        fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<u64, E> {
            u64::try_from(bytes).map_err(|_| E::invalid_value(de::Unexpected::Signed(bytes), &self))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
            parse_size(text).map_err(E::custom)
        }
    }

    // Any, not a string: a YAML or JSON number arrives as one.
    d.deserialize_any(SizeVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_in_every_unit() {
        let cases = [
            ("250ms", ms(250)),
            ("30s", ms(30_000)),
            ("1m", ms(60_000)),
            ("2h", Duration::from_secs(7_200)),
            ("1d", Duration::from_secs(86_400)),
            ("1w", Duration::from_secs(604_800)),
            ("1M", Duration::from_secs(2_630_016)),
            ("1y", Duration::from_secs(31_557_600)),
            ("5ns", Duration::from_nanos(5)),
            ("5us", Duration::from_micros(5)),
            ("5µs", Duration::from_micros(5)),
            ("2 seconds", ms(2_000)),
            ("3 minutes", ms(180_000)),
            ("1hour", Duration::from_secs(3_600)),
            ("10 millis", ms(10)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn durations_combine_terms_and_fractions() {
        assert_eq!(parse_duration("1s 200ms"), Ok(ms(1_200)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration(" 1h 30m "), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("0.25h"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5us"), Ok(Duration::from_nanos(1_500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why_and_how() {
        let cases = [
            (
                "soon",
                "invalid duration \"soon\": expected a number at \"soon\"",
            ),
            ("", "it is empty"),
            ("5", "a unit is missing"),
            (
                "5 parsecs",
                "unknown unit \"parsecs\" (units: ns, us, ms, s, m, h",
            ),
            ("1.5ns", "finer than a nanosecond"),
            ("1.5.3s", "expected a unit at \".3s\""),
            ("-1s", "expected a number at \"-1s\""),
            ("99999999999999999999s", "too large"),
            ("600000000000y", "too large"),
            ("1.000000000000000000001s", "more than 20 decimal places"),
            ("5S", "unknown unit \"S\""),
        ];
        for (text, want) in cases {
            let e = parse_duration(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.ends_with("; write e.g. 250ms, 30s or 1h 30m"), "{e}");
        }
    }

    #[test]
    fn sizes_decimal_and_binary() {
        let cases = [
            ("4096", 4_096),
            ("+5", 5),
            (" 64 KiB ", 65_536),
            ("64KiB", 65_536),
            ("1MiB", 1 << 20),
            ("1mib", 1 << 20),
            ("2Mi", 2 << 20),
            ("1GiB", 1 << 30),
            ("1EiB", 1 << 60),
            ("1MB", 1_000_000),
            ("1mb", 1_000_000),
            ("1M", 1_000_000),
            ("16KB", 16_000),
            ("16k", 16_000),
            ("1GB", 1_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("12B", 12),
            ("1.5KiB", 1_536),
            ("1.5 MB", 1_500_000),
            ("0.5KB", 500),
            (".5KB", 500),
            ("1.5B", 1),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_why_and_how() {
        let cases = [
            (
                "lots",
                "invalid size \"lots\": expected a number at \"lots\"",
            ),
            ("", "it is empty"),
            ("1.5", "a unit is missing"),
            ("64 KiBs", "unknown unit \"KiBs\" (units: B; KB"),
            ("-1KB", "expected a number"),
            ("16EiB", "too large"),
            ("99999999999999999999KB", "too large"),
        ];
        for (text, want) in cases {
            let e = parse_size(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.ends_with("; write e.g. 4096, 64KiB or 1MB"), "{e}");
        }
    }

    #[test]
    fn fields_deserialize_from_text_and_numbers() {
        #[derive(serde::Deserialize)]
        struct Fields {
            #[serde(deserialize_with = "deserialize_size")]
            size: u64,
            #[serde(deserialize_with = "deserialize_duration")]
            every: Duration,
            #[serde(default, deserialize_with = "deserialize_optional_duration")]
            timeout: Option<Duration>,
        }
        let from = |pairs: Vec<(&'static str, &'static str)>| {
            let map = de::value::MapDeserializer::<_, de::value::Error>::new(pairs.into_iter());
            Fields::deserialize(map)
        };
        let f = from(vec![("size", "64KiB"), ("every", "2s")]).unwrap();
        assert_eq!((f.size, f.every, f.timeout), (65_536, ms(2_000), None));
        let f = from(vec![("size", "1"), ("every", "1s"), ("timeout", "5s")]).unwrap();
        assert_eq!((f.size, f.timeout), (1, Some(ms(5_000))));
        let e = from(vec![("size", "1"), ("every", "soon")]).err().unwrap();
        assert!(e.to_string().contains("invalid duration \"soon\""), "{e}");

        let number = |n: i64| -> Result<u64, de::value::Error> {
            deserialize_size(de::IntoDeserializer::into_deserializer(n))
        };
        assert_eq!(number(4096), Ok(4096));
        assert!(number(-1).is_err());
    }
}
