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
//!
//! The Redis store may serve a charge from a pre-borrowed slice ([`Lease`]); the admitted
//! outcome then names the lease, and the settle or release of that charge goes back through it.

use std::sync::Arc;

use super::lease::Lease;
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
    /// Pre-borrowed slice of this limit a replica may lease (Redis only; 0: none).
    pub slice: u64,
}

/// What a store answered to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Every charge was applied; the counters' values after it, in order, and per charge the
    /// lease that served it (empty when none did).
    Admitted {
        after: Vec<u64>,
        leases: Vec<Option<LeaseRef>>,
    },
    /// Nothing was applied: charge `index` did not fit; `used` is that counter's value.
    Rejected { index: usize, used: u64 },
}

impl ReserveOutcome {
    /// Admitted without any lease.
    pub(crate) fn admitted(after: Vec<u64>) -> Self {
        Self::Admitted {
            after,
            leases: Vec::new(),
        }
    }
}

/// The lease a charge was served from; equal when it is the same lease.
#[derive(Debug, Clone)]
pub struct LeaseRef(pub(crate) Arc<Lease>);

impl PartialEq for LeaseRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for LeaseRef {}

/// Moving one counter from what a reservation took to what the request used.
#[derive(Debug, Clone)]
pub(crate) struct Correction {
    pub(crate) key: MeterKey,
    pub(crate) reserved: u64,
    pub(crate) actual: u64,
    pub(crate) ttl_secs: Option<i64>,
    /// The lease the reservation was served from.
    pub(crate) lease: Option<Arc<Lease>>,
}

impl Correction {
    /// `actual − reserved`, saturating.
    pub(crate) fn delta(&self) -> i64 {
        if self.actual >= self.reserved {
            i64::try_from(self.actual - self.reserved).unwrap_or(i64::MAX)
        } else {
            i64::try_from(self.reserved - self.actual).map_or(i64::MIN, |d| -d)
        }
    }

    /// Nothing to tell the store.
    pub(crate) fn is_noop(&self) -> bool {
        self.lease.is_none() && self.actual == self.reserved
    }
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

    /// Apply corrections; returns the counters' values after, in order.
    pub(crate) async fn adjust(
        &self,
        corrections: Vec<Correction>,
    ) -> Result<Vec<u64>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.adjust(corrections.iter().map(|c| (&c.key, c.delta())))),
            Self::Redis(r) => r.adjust(corrections).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correction(reserved: u64, actual: u64) -> Correction {
        Correction {
            key: MeterKey {
                name: "k".into(),
                window_start: 0,
            },
            reserved,
            actual,
            ttl_secs: None,
            lease: None,
        }
    }

    #[test]
    fn deltas_are_signed_and_saturate() {
        assert_eq!(correction(4, 10).delta(), 6);
        assert_eq!(correction(10, 4).delta(), -6);
        assert_eq!(correction(0, u64::MAX).delta(), i64::MAX);
        assert_eq!(correction(u64::MAX, 0).delta(), i64::MIN);
    }
}
