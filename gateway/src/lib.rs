//! Palisade's data plane.

pub mod audit;
pub mod control;
