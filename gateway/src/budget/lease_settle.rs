//! Settles of pre-borrowed reservations, batched: one Lua script per counter per batch instead of
//! one per request.
//!
//! Why. With pre-borrowing, admission needs no round trip, so a replica admits faster than one
//! settle script per request can follow: measured, the settles queued up behind Redis, timed out
//! and their usage went unrecorded. A reservation served from a lease is therefore settled (or
//! released from a closed lease) by handing it to one flusher task per store through a bounded
//! channel ([`QUEUE`]); the flusher drains whatever has queued, adds it up per lease, and sends
//! one `adjust` script per counter. The batch grows with the load while a flush is on its way,
//! so the queue holds about (rate × one round trip) and the work per batch grows with the number
//! of leases, not of requests. Should the queue fill anyway (Redis stalled), a settle goes to
//! Redis on its own through the bounded per-request path, so nothing is dropped.
//!
//! Correctness is the same as settling one by one: until its batch lands, a reservation still
//! counts as in flight on its lease (so the sweeper keeps renewing the lease and the slice bound
//! still holds), and the script treats a batch exactly like one big reservation — taken out of
//! the lease if Redis still holds it, or its actual usage added if Redis dropped the lease. A
//! failed batch is counted (`palisade_budget_store_errors_total{op="settle"}`) and logged, not
//! retried, like a failed settle. [`Flush::Barrier`] lets shutdown and tests wait until every
//! settle handed over before it has been sent.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot};

use super::lease::Lease;
use super::redis::RedisStore;
use super::store::{Correction, MeterKey};

/// Most messages taken into one batch (the rest wait for the next one).
const MAX_BATCH: usize = 16_384;

/// Settles waiting for the flusher, at most (about 1 MB).
pub(crate) const QUEUE: usize = 16_384;

/// What the flusher receives.
#[derive(Debug)]
pub(crate) enum Flush {
    /// A reservation served from `lease` ended with `actual` usage.
    Settle {
        lease: Arc<Lease>,
        reserved: u64,
        actual: u64,
        ttl_secs: Option<i64>,
    },
    /// Answered once every message sent before it has been flushed.
    Barrier(oneshot::Sender<()>),
}

/// Run until the store is gone (its sender dropped).
pub(crate) async fn run(store: Weak<RedisStore>, mut rx: mpsc::Receiver<Flush>) {
    let mut messages = Vec::new();
    while rx.recv_many(&mut messages, MAX_BATCH).await > 0 {
        let mut barriers = Vec::new();
        let mut per_lease: HashMap<Arc<str>, Correction> = HashMap::new();
        for m in messages.drain(..) {
            match m {
                Flush::Barrier(b) => barriers.push(b),
                Flush::Settle {
                    lease,
                    reserved,
                    actual,
                    ttl_secs,
                } => {
                    let c = per_lease
                        .entry(Arc::clone(&lease.id))
                        .or_insert_with(|| Correction {
                            key: lease.key.clone(),
                            reserved: 0,
                            actual: 0,
                            ttl_secs,
                            lease: Some(Arc::clone(&lease)),
                        });
                    c.reserved = c.reserved.saturating_add(reserved);
                    c.actual = c.actual.saturating_add(actual);
                }
            }
        }
        if let Some(store) = store.upgrade() {
            // One script per counter: the keys of one script share a hash tag.
            let mut per_counter: HashMap<MeterKey, Vec<Correction>> = HashMap::new();
            for c in per_lease.into_values() {
                per_counter.entry(c.key.clone()).or_default().push(c);
            }
            for batch in per_counter.into_values() {
                store.flush_batch(batch).await;
            }
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}
