//! Palisade's data plane.

pub mod audit;
