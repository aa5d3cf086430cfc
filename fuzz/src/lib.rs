//! Fuzz targets for Weft's input parsers, and what they share.
//!
//! The targets are the tests of this crate (`fuzz/tests/*.rs`), written with
//! [bolero](https://docs.rs/bolero): under `cargo test` each runs a bounded number of
//! random cases on the stable toolchain; under `cargo bolero test` (nightly) the same
//! target runs under libFuzzer, coverage-guided, for as long as it is let.
//!
//! 1. [`cases`] gives a target's case count: its short default, or `WEFT_FUZZ_CASES`.
//! 2. [`Choices`] turns the fuzzer's bytes into decisions, so a structure-aware input
//!    (a config built from the real model's keys) is still made of bytes that
//!    libFuzzer can mutate.
//! 3. [`yaml`] builds proxy and mesh configs from those decisions.
//!
//! ```no_run
//! let mut c = weft_fuzz::Choices::new(&[3, 1, 4, 1, 5]);
//! let text = weft_fuzz::yaml::proxy_config(&mut c);
//! let _ = weft_config::Config::from_str(&text, "fuzz.yaml", None);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod yaml;

/// The environment variable that sets how many cases each target runs.
pub const CASES_VAR: &str = "WEFT_FUZZ_CASES";

/// How many cases a target runs: `WEFT_FUZZ_CASES` when it is set to a number, else
/// `short` (chosen so that the whole crate stays well under a minute in a debug build).
pub fn cases(short: usize) -> usize {
    std::env::var(CASES_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(short)
}

/// Decisions read from a fuzzer's bytes. Once the bytes run out every decision is 0,
/// so the first item of every list a generator picks from should be the ordinary
/// one: a short input then makes an ordinary document.
#[derive(Clone, Debug)]
pub struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Choices<'a> {
    /// Decisions from these bytes.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// The next byte, 0 once they ran out.
    pub fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at = self.at.saturating_add(1);
        b
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        let raw = if n <= 256 {
            usize::from(self.byte())
        } else {
            usize::from(u16::from_le_bytes([self.byte(), self.byte()]))
        };
        raw % n
    }

    /// True about `percent` times in a hundred.
    pub fn chance(&mut self, percent: u8) -> bool {
        // 0 (the bytes ran out) is never true: the ordinary input takes no detour.
        let b = self.byte();
        b != 0 && u32::from(b) * 100 < u32::from(percent) * 256
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.below(items.len())]
    }

    /// A short string of arbitrary characters, at most `max` of them: ASCII mostly,
    /// with controls, separators YAML and URIs care about, and a few multi-byte ones.
    pub fn text(&mut self, max: usize) -> String {
        const ODD: &[char] = &[
            '\0', '\t', '\n', '\r', ' ', '"', '\'', '#', '%', '&', '*', ':', '@', '[', ']', '{',
            '}', ',', '/', '\\', '.', '-', '?', '|', '>', '!', 'é', '€', '\u{202e}', '💥',
        ];
        let len = self.below(max + 1);
        (0..len)
            .map(|_| match self.byte() {
                b @ 0..=159 => char::from(b'a' + b % 26),
                b @ 160..=199 => char::from(b'0' + b % 10),
                b => ODD[usize::from(b) % ODD.len()],
            })
            .collect()
    }

    /// Whether every byte was used.
    pub fn exhausted(&self) -> bool {
        self.at >= self.bytes.len()
    }
}
