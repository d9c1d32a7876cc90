//! Palisade's policy engine: the pure half of the product.
//!
//! A policy pack travels through types that name its stage:
//! YAML text → [`LoadedPack`] (parsed, defaults filled, every diagnostic collected, every
//! environment resolved, hashed) → [`CompiledPack`] for one environment (immutable, every regex
//! and automaton built). The gateway holds a `CompiledPack` in an `ArcSwap` and runs each request
//! against one of them.
//!
//! This crate has no sockets, no async runtime and no clock of its own: it decides, the gateway
//! enforces. It never reads the process environment either; secrets a policy needs (the HMAC key
//! of hashed redaction) are handed in through [`CompileOptions`].

pub mod canonical;
mod compile;
mod decode;
pub mod diagnostic;
pub mod diff;
mod environments;
mod load;
mod loaded;
pub mod pack;
pub mod pii;
mod secrets;
pub mod source_map;
pub mod testing;
mod validate;

pub use canonical::PackHash;
pub use compile::{CompileOptions, CompiledPack, Deployment, ModelRoute, PolicyKind};
pub use diagnostic::{DiagnosticCode, Diagnostics, PackDiagnostic, Severity};
pub use load::{load, LoadedPack, MAX_PACK_BYTES};
pub use loaded::validate_text;
