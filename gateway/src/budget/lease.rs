//! Pre-borrowed slices of limits kept in Redis ("leases"): the replica's half.
//!
//! With `preborrow_fraction > 0`, a reservation that goes to Redis anyway also asks for a slice
//! of each of its limits (`slice = floor(preborrow_fraction × limit)`). Redis adds the slice to
//! the counter at once — checked against the cap like a reservation, whole or not at all — and
//! records it as this replica's lease with an expiry. Later reservations take from the lease's
//! local balance with one compare-and-swap and no round trip. Since a slice is charged in Redis
//! before any of it is used, admitted reservations never pass a cap while Redis holds the lease;
//! the price is that budget sitting unused in other replicas' leases is not available to this
//! one (at most `(replicas − 1) × slice`, until those leases stop serving). Near the limit no
//! slice fits any more and every request goes to Redis, exactly as with borrowing off.
//!
//! Overshoot. Redis drops a lease that was not renewed in time (a dead, stalled or partitioned
//! replica) together with everything it held — unused balance *and* the estimates of requests
//! served from it and still in flight. Those requests, if they complete, then add their actual
//! usage on top of a counter other replicas may have filled to the cap. A replica never holds
//! more than one slice per counter across all its leases (unused + in flight + a grant on its
//! way, [`LeaseTable::plan_grant`]), so the worst case is `replicas × slice` per limit. The
//! formula and when it applies are in `docs/DESIGN-DECISIONS.md`, Budgets.
//!
//! Lifecycle. A lease serves for half its TTL after each grant (counted from when the grant was
//! *sent*); the other half is margin against a stalled process or a Redis clock that jumps
//! ahead, because Redis drops a lease by its own clock. After that, and at shutdown, the unused
//! balance is given back ([`LeaseTable::sweep`], [`LeaseTable::close_all`]). A reservation
//! served from a lease stays part of it until it settles (through Redis, in a batch that takes it
//! out of the lease, see `lease_settle.rs`) or is released (locally, back into the balance); while any are in flight the
//! sweeper renews the lease in Redis, so a long stream keeps its estimate charged. A pack reload
//! needs nothing here: a charge is served only by a lease checked against a cap at most its own,
//! and a lease whose fraction went to 0 simply stops being used and is given back by the sweep.
//!
//! What it does not do: move budget between replicas (a refused request does not pull from
//! another replica's lease), or split a charge between a lease and Redis (a lease serves a
//! whole charge or none of it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::store::{Charge, MeterKey};

/// A lease serves for this share of its TTL after a grant.
pub(crate) const SERVE_SHARE: f64 = 0.5;

/// One pre-borrowed slice of one counter.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) id: Arc<str>,
    pub(crate) key: MeterKey,
    /// The cap the slice was checked against; `None`: granted unchecked (alert limits).
    pub(crate) cap: Option<u64>,
    balance: AtomicU64,
    /// Sum of the reservations served from this lease and not yet settled or released.
    in_flight: AtomicU64,
    /// Amount of a grant on its way to Redis (0: none).
    pending: AtomicU64,
    /// Local milliseconds (see [`LeaseTable::now_ms`]) until which the lease may serve.
    serve_until_ms: AtomicU64,
    /// The counter's value in Redis after the last grant (everything leased counted as used).
    seen: AtomicU64,
    closed: AtomicBool,
    granting: AtomicBool,
}

impl Lease {
    /// Whether a slice checked against `lease_cap` may serve a charge capped at `cap`: a lower
    /// cap (a reload tightened the limit) must go to Redis.
    fn serves(lease_cap: Option<u64>, cap: Option<u64>) -> bool {
        match (cap, lease_cap) {
            (None, _) => true,
            (Some(c), Some(l)) => l <= c,
            (Some(_), None) => false,
        }
    }

    /// Take `amount` from the balance for one reservation; `false` when the lease cannot serve it.
    fn try_take(&self, amount: u64, cap: Option<u64>, now_ms: u64) -> bool {
        if self.closed.load(Ordering::Acquire)
            || now_ms >= self.serve_until_ms.load(Ordering::Acquire)
            || !Self::serves(self.cap, cap)
        {
            return false;
        }
        let mut cur = self.balance.load(Ordering::Acquire);
        loop {
            if cur < amount {
                return false;
            }
            match self.balance.compare_exchange_weak(
                cur,
                cur - amount,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
        self.in_flight.fetch_add(amount, Ordering::AcqRel);
        true
    }

    /// A reservation served from this lease ends without usage: its amount goes back to the
    /// balance, no round trip. `false` when the lease is closed (the caller tells Redis).
    pub(crate) fn give_back_local(&self, amount: u64) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        // A close racing with this add leaves the amount in a closed lease's balance; the next
        // sweep gives it back.
        self.balance.fetch_add(amount, Ordering::AcqRel);
        self.finished(amount);
        true
    }

    /// A reservation of `amount` served from this lease was settled or released through Redis.
    pub(crate) fn finished(&self, amount: u64) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(amount))
            });
    }

    /// Stop serving; the unused balance, to give back.
    fn close(&self) -> u64 {
        self.closed.store(true, Ordering::Release);
        self.balance.swap(0, Ordering::AcqRel)
    }

    /// Estimated counter value for gauges and the remaining-budget header: Redis' value at the
    /// last grant less what this lease has not used yet. Stale by what other replicas did since.
    pub(crate) fn used_estimate(&self) -> u64 {
        self.seen
            .load(Ordering::Acquire)
            .saturating_sub(self.balance.load(Ordering::Acquire))
    }

    pub(crate) fn balance(&self) -> u64 {
        self.balance.load(Ordering::Acquire)
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Everything Redis may hold for this lease: unused balance, reservations in flight and a
    /// grant on its way.
    fn holding(&self) -> u64 {
        self.balance()
            .saturating_add(self.in_flight())
            .saturating_add(self.pending.load(Ordering::Acquire))
    }
}

/// A grant to ask Redis for, on `lease`.
#[derive(Debug)]
pub(crate) struct GrantPlan {
    pub(crate) lease: Arc<Lease>,
    pub(crate) amount: u64,
    pub(crate) sent_ms: u64,
}

/// What a sweep found to do in Redis.
#[derive(Debug, Default)]
pub(crate) struct SweepPlan {
    /// Unused balances to give back.
    pub(crate) give_back: Vec<(Arc<Lease>, u64)>,
    /// Leases past serving with reservations still in flight: keep them alive in Redis.
    pub(crate) renew: Vec<Arc<Lease>>,
}

/// This replica's leases.
#[derive(Debug)]
pub(crate) struct LeaseTable {
    replica: String,
    seq: AtomicU64,
    epoch: Instant,
    ttl: Duration,
    /// The lease each counter serves from.
    current: DashMap<MeterKey, Arc<Lease>>,
    /// Every lease Redis may still hold for us (current, and closed ones with reservations in
    /// flight or a balance not yet given back), by id.
    all: DashMap<Arc<str>, Arc<Lease>>,
}

impl LeaseTable {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            replica: format!("{:016x}", random_seed()),
            seq: AtomicU64::new(0),
            epoch: Instant::now(),
            ttl,
            current: DashMap::new(),
            all: DashMap::new(),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Milliseconds on this process' monotonic clock.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn serve_ms(&self) -> u64 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "milliseconds of a TTL of seconds"
        )]
        let ms = (self.ttl.as_millis() as f64 * SERVE_SHARE) as u64;
        ms
    }

    /// Serve `charge` from its current lease, without a round trip.
    pub(crate) fn take(&self, charge: &Charge, now_ms: u64) -> Option<Arc<Lease>> {
        if charge.slice == 0 || charge.amount > charge.slice {
            return None;
        }
        let lease = self
            .current
            .get(&charge.key)
            .map(|l| Arc::clone(l.value()))?;
        lease
            .try_take(charge.amount, charge.cap, now_ms)
            .then_some(lease)
    }

    /// The grant to ask for along with a round trip for `charge`, if borrowing applies and no
    /// grant for this counter is already in flight (a burst must not lease the budget away).
    pub(crate) fn plan_grant(&self, charge: &Charge, now_ms: u64) -> Option<GrantPlan> {
        if charge.slice == 0 || charge.amount > charge.slice {
            return None;
        }
        let lease = match self.current.entry(charge.key.clone()) {
            dashmap::mapref::entry::Entry::Occupied(mut e) => {
                let l = e.get();
                // Refill only a lease Redis surely still holds (serving) or one never granted:
                // an id whose lease Redis may have dropped is never reused, since reservations
                // still settling against it would find a stranger's lease under that id.
                let until = l.serve_until_ms.load(Ordering::Acquire);
                let usable = !l.closed.load(Ordering::Acquire)
                    && l.cap == charge.cap
                    && (until == 0 || now_ms < until);
                if usable {
                    Arc::clone(l)
                } else {
                    // Expired or checked against another cap: the sweeper gives its balance back.
                    l.closed.store(true, Ordering::Release);
                    let fresh = self.fresh(charge);
                    e.insert(Arc::clone(&fresh));
                    fresh
                }
            }
            dashmap::mapref::entry::Entry::Vacant(e) => {
                let fresh = self.fresh(charge);
                e.insert(Arc::clone(&fresh));
                fresh
            }
        };
        lease
            .granting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        // One slice per counter per replica across all its leases: that is what bounds the
        // overshoot when Redis drops them (see the module docs).
        let held: u64 = self
            .all
            .iter()
            .filter(|l| l.key == charge.key)
            .map(|l| l.holding())
            .sum();
        let amount = charge.slice.saturating_sub(held);
        if amount == 0 {
            lease.granting.store(false, Ordering::Release);
            return None;
        }
        lease.pending.store(amount, Ordering::Release);
        Some(GrantPlan {
            lease,
            amount,
            sent_ms: now_ms,
        })
    }

    fn fresh(&self, charge: &Charge) -> Arc<Lease> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let lease = Arc::new(Lease {
            id: format!("{}-{n}", self.replica).into(),
            key: charge.key.clone(),
            cap: charge.cap,
            balance: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            serve_until_ms: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            granting: AtomicBool::new(false),
        });
        self.all.insert(Arc::clone(&lease.id), Arc::clone(&lease));
        lease
    }

    /// Redis answered a grant: `granted` (0 when it did not fit) and the counter after it.
    /// The lease serves from the time the request was *sent*, so it stops serving before Redis,
    /// which counts from when the script ran, can drop it.
    pub(crate) fn landed(&self, plan: &GrantPlan, granted: u64, counter_after: u64) {
        let l = &plan.lease;
        if granted > 0 {
            l.seen.store(counter_after, Ordering::Release);
            l.serve_until_ms
                .store(plan.sent_ms + self.serve_ms(), Ordering::Release);
            l.balance.fetch_add(granted, Ordering::AcqRel);
        }
        l.pending.store(0, Ordering::Release);
        l.granting.store(false, Ordering::Release);
    }

    /// A grant whose outcome is unknown (error, lost reply): stop serving from this lease.
    pub(crate) fn failed(&self, plan: &GrantPlan) {
        plan.lease.closed.store(true, Ordering::Release);
        plan.lease.pending.store(0, Ordering::Release);
        plan.lease.granting.store(false, Ordering::Release);
    }

    /// What to tell Redis now; forgets leases with nothing left in them.
    pub(crate) fn sweep(&self, now_ms: u64) -> SweepPlan {
        let mut plan = SweepPlan::default();
        self.all.retain(|_, l| {
            let granting = l.granting.load(Ordering::Acquire);
            if !granting && now_ms >= l.serve_until_ms.load(Ordering::Acquire) {
                l.closed.store(true, Ordering::Release);
            }
            if !l.closed.load(Ordering::Acquire) {
                return true;
            }
            self.current.remove_if(&l.key, |_, c| Arc::ptr_eq(c, l));
            let unused = l.close();
            if unused > 0 {
                plan.give_back.push((Arc::clone(l), unused));
            }
            if l.in_flight() > 0 {
                plan.renew.push(Arc::clone(l));
                return true;
            }
            // Keep it one more round while its balance is on its way back or a grant may land.
            unused > 0 || granting
        });
        plan
    }

    /// Close every lease and collect the unused balances (shutdown).
    pub(crate) fn close_all(&self) -> Vec<(Arc<Lease>, u64)> {
        self.current.clear();
        let mut out = Vec::new();
        for l in &self.all {
            let unused = l.close();
            if unused > 0 {
                out.push((Arc::clone(l.value()), unused));
            }
        }
        out
    }

    /// Unused balance held across all leases (for tests and the status of a replica).
    pub(crate) fn held(&self) -> u64 {
        self.all.iter().map(|l| l.balance()).sum()
    }
}

/// Per-process randomness for lease ids without another dependency: std's hasher keys are
/// seeded from the OS.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(amount: u64, slice: u64, cap: Option<u64>) -> Charge {
        Charge {
            key: MeterKey {
                name: "k".into(),
                window_start: 0,
            },
            amount,
            cap,
            ttl_secs: None,
            window_end: None,
            slice,
        }
    }

    fn granted(t: &LeaseTable, c: &Charge, amount: u64, now: u64) -> Arc<Lease> {
        let plan = t.plan_grant(c, now).unwrap();
        t.landed(&plan, amount, 1_000);
        plan.lease
    }

    #[test]
    fn a_lease_serves_whole_charges_until_its_balance_runs_out() {
        let t = LeaseTable::new(Duration::from_secs(10));
        let c = charge(3, 10, Some(100));
        assert!(t.take(&c, 0).is_none(), "no lease yet");
        granted(&t, &c, 10, 0);
        for _ in 0..3 {
            assert!(t.take(&c, 1).is_some());
        }
        assert!(t.take(&c, 1).is_none(), "1 left, 3 needed: never split");
        assert_eq!(t.held(), 1);
    }

    #[test]
    fn only_one_grant_per_counter_is_in_flight() {
        let t = LeaseTable::new(Duration::from_secs(10));
        let c = charge(1, 10, Some(100));
        let first = t.plan_grant(&c, 0).unwrap();
        assert!(
            t.plan_grant(&c, 0).is_none(),
            "a burst must not lease twice"
        );
        t.landed(&first, 0, 0);
        assert!(
            t.plan_grant(&c, 0).is_some(),
            "refused grant: may ask again"
        );
    }

    #[test]
    fn a_lease_stops_serving_after_half_its_ttl_and_the_sweep_gives_it_back() {
        let t = LeaseTable::new(Duration::from_secs(10));
        let c = charge(1, 10, Some(100));
        let l = granted(&t, &c, 10, 0);
        assert!(t.take(&c, 4_999).is_some());
        assert!(t.take(&c, 5_000).is_none());
        let plan = t.sweep(5_000);
        assert_eq!(plan.give_back.len(), 1);
        assert_eq!(plan.give_back[0].1, 9);
        assert_eq!(plan.renew.len(), 1, "one reservation still in flight");
        l.finished(1);
        let plan = t.sweep(5_001);
        assert!(plan.give_back.is_empty() && plan.renew.is_empty());
        assert_eq!(t.all.len(), 0, "forgotten once empty");
    }

    #[test]
    fn a_tighter_cap_is_not_served_from_a_looser_lease() {
        let t = LeaseTable::new(Duration::from_secs(10));
        granted(&t, &charge(1, 10, Some(100)), 10, 0);
        assert!(t.take(&charge(1, 10, Some(50)), 1).is_none());
        assert!(t.take(&charge(1, 10, Some(200)), 1).is_some());
        assert!(
            t.take(&charge(1, 10, None), 1).is_some(),
            "uncapped: any lease"
        );
        // Asking for a grant under the new cap replaces the lease and closes the old one, whose
        // unused 8 still count against this replica's slice until the sweep gives them back.
        assert!(t.plan_grant(&charge(1, 10, Some(50)), 1).is_none());
        let old = t.sweep(1);
        assert_eq!(old.give_back.len(), 1);
        assert_eq!(old.give_back[0].1, 8);
        let plan = t.plan_grant(&charge(1, 10, Some(50)), 1).unwrap();
        assert_eq!(
            (plan.lease.cap, plan.amount),
            (Some(50), 8),
            "2 still in flight"
        );
    }

    #[test]
    fn a_local_release_refills_the_balance_unless_closed() {
        let t = LeaseTable::new(Duration::from_secs(10));
        let c = charge(4, 10, Some(100));
        let l = granted(&t, &c, 10, 0);
        let served = t.take(&c, 1).unwrap();
        assert!(served.give_back_local(4));
        assert_eq!((l.balance(), l.in_flight()), (10, 0));
        let again = t.take(&c, 1).unwrap();
        assert_eq!(t.close_all().len(), 1);
        assert!(!again.give_back_local(4), "closed: Redis must be told");
    }

    #[test]
    fn a_replica_never_holds_more_than_one_slice_per_counter() {
        let t = LeaseTable::new(Duration::from_secs(10));
        let c = charge(4, 10, Some(100));
        let first = granted(&t, &c, 10, 0);
        let a = t.take(&c, 1).unwrap();
        let b = t.take(&c, 1).unwrap();
        assert!(
            t.plan_grant(&c, 1).is_none(),
            "2 unused + 8 in flight: a whole slice"
        );
        // Past serving: the old lease keeps 8 in flight; a fresh lease may only take 2.
        let sweep = t.sweep(5_000);
        assert_eq!(sweep.give_back[0].1, 2);
        assert_eq!(sweep.renew.len(), 1);
        let plan = t.plan_grant(&c, 5_000).unwrap();
        assert!(!Arc::ptr_eq(&plan.lease, &first));
        assert_eq!(plan.amount, 2, "10 − 8 in flight on the old lease");
        t.landed(&plan, 2, 100);
        a.finished(4);
        b.finished(4);
        assert!(t.plan_grant(&c, 5_001).is_some_and(|p| p.amount == 8));
    }
}
