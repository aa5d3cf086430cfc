//! Weft's benchmark tools; `bench/run` drives them. See `bench/README.md`.
#![forbid(unsafe_code)]
