//! Placeholder until its issue lands.

pub mod budget;
