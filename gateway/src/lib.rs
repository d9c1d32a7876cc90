//! Palisade's data plane.

pub mod audit;
pub mod budget;
pub mod control;
