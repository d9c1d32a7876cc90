//! Where budget counters live: the one interface the enforcer uses over memory and Redis.
//!
//! A store knows nothing about scopes, prices or actions. It holds unsigned counters named by a
//! [`MeterKey`] (a meter's stable name plus the start of its window) and offers two operations:
//! `reserve` — add an amount to several counters at once, all or nothing, refusing if any capped
//! counter would pass its cap — and `adjust` — add signed deltas without a check, never going
//! below zero (settle and release). Caps travel with each call rather than living in the store,
//! so a pack reload that changes a limit applies at once and keeps the spend already counted.
//!
//! Dispatch is a two-variant enum rather than a trait object: the in-memory path stays
//! synchronous and inlined, which matters for its ≤ 5 µs budget.

use std::sync::Arc;

use super::memory::MemoryStore;
use super::redis::{RedisStore, StoreError};

/// One counter: a meter's stable name and the start of the window occurrence it counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterKey {
    /// `palisade:budget:{PACK/ENV}:SCOPE:WINDOW:DIM` — see `DESIGN-DECISIONS.md`, Budgets.
    pub name: Arc<str>,
    pub window_start: i64,
}

/// One counter's part of a reservation.
#[derive(Debug, Clone)]
pub struct Charge {
    pub key: MeterKey,
    pub amount: u64,
    /// `None`: count without checking (alert limits, and degrade limits once degraded).
    pub cap: Option<u64>,
    /// Seconds the counter must outlive now; `None` keeps it forever (`total`).
    pub ttl_secs: Option<i64>,
    /// Unix time the window ends, kept by the memory store to prune and persist.
    pub window_end: Option<i64>,
}

/// What a store answered to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every charge was applied; the counters' values after it, in order.
    Admitted(Vec<u64>),
    /// Nothing was applied: charge `index` did not fit; `used` is that counter's value.
    Rejected { index: usize, used: u64 },
}

/// The counters of one gateway: in this process, or shared through Redis.
#[derive(Debug, Clone)]
pub enum BudgetStore {
    Memory(MemoryStore),
    Redis(Arc<RedisStore>),
}

impl BudgetStore {
    pub fn memory() -> Self {
        Self::Memory(MemoryStore::default())
    }

    pub(crate) async fn reserve(
        &self,
        charges: &[Charge],
        now: i64,
    ) -> Result<ReserveOutcome, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.reserve(charges, now)),
            Self::Redis(r) => r.reserve(charges).await,
        }
    }

    /// Apply signed deltas; returns the counters' values after, in order.
    pub(crate) async fn adjust(
        &self,
        deltas: &[(MeterKey, i64, Option<i64>)],
    ) -> Result<Vec<u64>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.adjust(deltas.iter().map(|(k, d, _)| (k, *d)))),
            Self::Redis(r) => r.adjust(deltas).await,
        }
    }
}
