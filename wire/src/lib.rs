//! The wire shapes of Palisade's own protocols, defined once for every side:
//!
//! - [`gateway`]: register, poll the desired version, report (gateway ↔ control plane);
//! - [`events`]: decision events and their batch (gateway → control plane), with the closed set
//!   of [`events::Outcome`]s;
//! - [`error`]: the control plane's error body and its closed set of [`error::ErrorCode`]s, which
//!   clients match on (never on messages).
//!
//! Serde only: no I/O, no framework, so the gateway's data plane, the control plane and the CLI
//! all depend on it without pulling each other in.

pub mod error;
pub mod events;
pub mod gateway;
