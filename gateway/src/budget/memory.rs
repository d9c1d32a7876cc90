//! Budget counters of a single replica: a `DashMap` of atomic counters, in micro-dollars or
//! tokens.
//!
//! The reserve-check is exact under concurrency: each counter is raised by a compare-and-swap
//! loop that re-reads and re-checks the cap on every retry, so N concurrent requests against a
//! budget worth k of them admit exactly k. A request that spans several counters takes them in
//! order and gives back what it took if a later one does not fit, so it is all or nothing.
//! This never over-admits; the price is that, in the instant between taking and giving back,
//! another request may see the first counter fuller than it will be and be refused (only
//! possible when two limits are both within one request of exhaustion).
//!
//! Counters of windows that ended more than a day ago are pruned when a new window opens. The
//! map is not persisted here (see `persist.rs`), and nothing blocks: no lock is held across a
//! check, only DashMap's shard lock for the lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::store::{Charge, MeterKey, ReserveOutcome};

/// Seconds a finished window's counters are kept, so late settles still find them: a day, or
/// an hour for a minute's rate limit (as `WindowSpan::ttl_from` keeps them in Redis).
const GRACE_SECS: i64 = 86_400;

fn kept_until(window_start: i64, window_end: i64) -> i64 {
    let grace = (window_end - window_start)
        .saturating_mul(60)
        .min(GRACE_SECS);
    window_end.saturating_add(grace)
}

#[derive(Debug)]
struct Slot {
    used: AtomicU64,
    window_end: Option<i64>,
}

/// One persisted counter (see `persist.rs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterSnapshot {
    pub name: String,
    pub window_start: i64,
    pub window_end: Option<i64>,
    pub used: u64,
}

/// In-process counters; cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    slots: Arc<DashMap<MeterKey, Arc<Slot>>>,
}

impl MemoryStore {
    fn slot(&self, key: &MeterKey, window_end: Option<i64>, now: i64) -> Arc<Slot> {
        if let Some(s) = self.slots.get(key) {
            return Arc::clone(s.value());
        }
        let slot = Arc::clone(
            self.slots
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Slot {
                        used: AtomicU64::new(0),
                        window_end,
                    })
                })
                .value(),
        );
        // A new window opened: drop counters of windows long over. Rare (once per window per
        // meter), so a full scan is fine.
        self.slots.retain(|k, s| {
            s.window_end
                .is_none_or(|end| kept_until(k.window_start, end) > now)
        });
        slot
    }

    /// All or nothing: apply every charge, or none if a capped one would pass its cap.
    pub(crate) fn reserve(&self, charges: &[Charge], now: i64) -> ReserveOutcome {
        let mut after = Vec::with_capacity(charges.len());
        let mut taken: Vec<Arc<Slot>> = Vec::with_capacity(charges.len());
        for (index, c) in charges.iter().enumerate() {
            let slot = self.slot(&c.key, c.window_end, now);
            match try_add(&slot.used, c.amount, c.cap) {
                Ok(v) => {
                    after.push(v);
                    taken.push(slot);
                }
                Err(used) => {
                    for (s, c) in taken.iter().zip(charges) {
                        saturating_sub(&s.used, c.amount);
                    }
                    return ReserveOutcome::Rejected { index, used };
                }
            }
        }
        ReserveOutcome::admitted(after)
    }

    /// Add signed deltas without a check, flooring at zero. A counter whose window was pruned
    /// is skipped (reported as 0): there is nothing left to correct.
    pub(crate) fn adjust<'a>(&self, deltas: impl Iterator<Item = (&'a MeterKey, i64)>) -> Vec<u64> {
        deltas
            .map(
                |(key, delta)| match self.slots.get(key).map(|s| Arc::clone(s.value())) {
                    None => 0,
                    Some(slot) if delta >= 0 => {
                        let d = delta.unsigned_abs();
                        slot.used.fetch_add(d, Ordering::AcqRel).saturating_add(d)
                    }
                    Some(slot) => saturating_sub(&slot.used, delta.unsigned_abs()),
                },
            )
            .collect()
    }

    /// The current value of one counter (0 when it does not exist).
    pub fn used(&self, key: &MeterKey) -> u64 {
        self.slots
            .get(key)
            .map_or(0, |s| s.used.load(Ordering::Acquire))
    }

    /// Every counter, for the state file.
    pub fn snapshot(&self) -> Vec<CounterSnapshot> {
        let mut out: Vec<CounterSnapshot> = self
            .slots
            .iter()
            .map(|e| CounterSnapshot {
                name: e.key().name.to_string(),
                window_start: e.key().window_start,
                window_end: e.value().window_end,
                used: e.value().used.load(Ordering::Acquire),
            })
            .collect();
        out.sort_by(|a, b| (&a.name, a.window_start).cmp(&(&b.name, b.window_start)));
        out
    }

    /// A store holding `counters`, less those of windows already over at `now`.
    pub fn restore(counters: Vec<CounterSnapshot>, now: i64) -> Self {
        let store = Self::default();
        for c in counters {
            if c.window_end
                .is_some_and(|end| kept_until(c.window_start, end) <= now)
            {
                continue;
            }
            store.slots.insert(
                MeterKey {
                    name: c.name.into(),
                    window_start: c.window_start,
                },
                Arc::new(Slot {
                    used: AtomicU64::new(c.used),
                    window_end: c.window_end,
                }),
            );
        }
        store
    }
}

/// Raise `counter` by `amount` if the result stays within `cap`; the new value, or the value
/// that did not leave room.
fn try_add(counter: &AtomicU64, amount: u64, cap: Option<u64>) -> Result<u64, u64> {
    let Some(cap) = cap else {
        return Ok(counter
            .fetch_add(amount, Ordering::AcqRel)
            .saturating_add(amount));
    };
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        let next = cur.saturating_add(amount);
        if next > cap {
            return Err(cur);
        }
        match counter.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(next),
            Err(seen) => cur = seen,
        }
    }
}

/// Lower `counter` by `amount`, never below zero; the new value.
fn saturating_sub(counter: &AtomicU64, amount: u64) -> u64 {
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        let next = cur.saturating_sub(amount);
        match counter.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return next,
            Err(seen) => cur = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn key(name: &str, start: i64) -> MeterKey {
        MeterKey {
            name: name.into(),
            window_start: start,
        }
    }

    fn charge(name: &str, amount: u64, cap: Option<u64>) -> Charge {
        Charge {
            key: key(name, 0),
            amount,
            cap,
            ttl_secs: None,
            window_end: None,
            slice: 0,
        }
    }

    #[test]
    fn thousand_concurrent_reservations_admit_exactly_k() {
        let store = MemoryStore::default();
        let admitted = AtomicUsize::new(0);
        // A budget worth 137 requests of 1,000 µ$.
        let cap = 137 * 1_000;
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..125 {
                        let c = [charge("a", 1_000, Some(cap))];
                        if matches!(store.reserve(&c, 0), ReserveOutcome::Admitted { .. }) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 137);
        assert_eq!(store.used(&key("a", 0)), cap);
    }

    #[test]
    fn multi_counter_reservation_is_all_or_nothing() {
        let store = MemoryStore::default();
        let ok = store.reserve(&[charge("a", 5, Some(10)), charge("b", 5, Some(10))], 0);
        assert_eq!(ok, ReserveOutcome::admitted(vec![5, 5]));
        let no = store.reserve(&[charge("a", 5, Some(10)), charge("b", 6, Some(10))], 0);
        assert_eq!(no, ReserveOutcome::Rejected { index: 1, used: 5 });
        assert_eq!(
            store.used(&key("a", 0)),
            5,
            "the first charge was given back"
        );
    }

    #[test]
    fn uncapped_charges_always_apply() {
        let store = MemoryStore::default();
        let out = store.reserve(&[charge("a", 50, None)], 0);
        assert_eq!(out, ReserveOutcome::admitted(vec![50]));
    }

    #[test]
    fn adjust_floors_at_zero_and_skips_missing() {
        let store = MemoryStore::default();
        let _ = store.reserve(&[charge("a", 5, None)], 0);
        let k = key("a", 0);
        assert_eq!(store.adjust([(&k, 3)].into_iter()), vec![8]);
        assert_eq!(store.adjust([(&k, -100)].into_iter()), vec![0]);
        assert_eq!(store.adjust([(&key("gone", 0), 5)].into_iter()), vec![0]);
    }

    #[test]
    fn new_window_prunes_long_finished_ones() {
        let store = MemoryStore::default();
        let mut old = charge("a", 5, None);
        old.window_end = Some(100);
        let _ = store.reserve(&[old], 50);
        let mut new = charge("a", 1, None);
        new.key.window_start = 100 + GRACE_SECS;
        let _ = store.reserve(&[new], 100 + GRACE_SECS);
        assert_eq!(store.snapshot().len(), 1);
    }
}
