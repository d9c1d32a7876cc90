//! Palisade's policy engine: the pure half of the product.
//!
//! A policy pack travels through types that name its stage:
//! YAML text → [`pack::PackDocument`] (parsed, defaults filled, every diagnostic collected) →
//! resolved for one environment → [`CompiledPack`] (immutable, every regex and automaton built).
//! The gateway holds a `CompiledPack` in an `ArcSwap` and runs each request against one of them.
//!
//! This crate has no sockets, no async runtime and no clock of its own: it decides, the gateway
//! enforces. It also never reads the process environment; secrets a policy needs (the HMAC key of
//! hashed redaction) are handed in by the caller.

pub mod pack;
pub mod pii;
