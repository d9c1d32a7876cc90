//! Budget counters shared by many replicas through Redis, one atomic Lua script per operation.
//!
//! `reserve` is a single script over every counter a request touches: it checks every capped
//! counter first and only then increments them all, so it is all or nothing and, because Redis
//! runs a script without interleaving, exact across any number of replicas — N concurrent
//! requests from R replicas against a budget worth k of them admit exactly k. `adjust` (settle
//! and release) is a second script that adds signed deltas and floors at zero. Scripts go by
//! `EVALSHA`; on `NOSCRIPT` (a restarted or flushed Redis) the client loads the script and
//! retries, so a fresh server needs no preparation. The scripts are in `redis_scripts.rs`.
//!
//! Keys are `palisade:budget:{PACK/ENV}:SCOPE:WINDOW:DIM:START` — the braces are a Redis
//! Cluster hash tag, so every counter of one pack and environment lives in one slot and a script
//! may touch several. Each key gets a TTL of (window end − now) + one day, so finished windows
//! vanish by themselves while late settles still land; `total` keys never expire.
//!
//! **Pre-borrowing.** A charge with a `slice` may be served from a lease ([`super::lease`]):
//! no round trip at all when every charge of a request is. The first reservation that needs
//! Redis anyway asks for the slice along with it; a sweeper task (started with the first grant)
//! gives unused balances back when a lease stops serving and renews leases whose reservations
//! are still in flight; [`RedisStore::close_leases`] gives everything back at shutdown. Their
//! settles go in batches through a flusher task ([`super::lease_settle`]), since one script per
//! settle cannot keep up with admission that needs none.
//!
//! **Overshoot.** With `slice = 0` every reservation is checked in Redis and admitted
//! reservations never exceed a cap. With pre-borrowing they still do not while replicas keep
//! their leases alive; a lease Redis drops (its replica stalled past the TTL) can let the cap be
//! passed by what that lease had in flight, at most one slice per replica: `replicas × slice`
//! per limit. What can always pass a cap is real usage above the estimate, added on settle (the
//! same on one replica). See `docs/DESIGN-DECISIONS.md`, Budgets.
//!
//! **Cancellation.** The reserve script runs on its own task and the caller awaits its answer
//! with the store's timeout (see `BudgetEnforcer::reserve`): a caller that goes away — client
//! cancelled, timeout — cannot strand a reservation the script made after all; the task drops
//! it and the reservation's guard gives it back.
//!
//! What it does not do: retry a failed operation (the enforcer decides `fail_open` /
//! `fail_closed` and counts it), or connect eagerly. The connection manager connects on first
//! use and reconnects by itself after an I/O error, so the store recovers when Redis returns.
//! Every operation is bounded: a reply not read within [`LATE_REPLY_FACTOR`] × `op_timeout`
//! is an error, so a hung server costs a timeout, not a hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

use super::lease::{GrantPlan, Lease, LeaseTable};
use super::lease_settle::{self, Flush};
use super::metrics::BudgetMetrics;
use super::redis_scripts::{keys_of, Scripts, NO_LEASE};
use super::store::{Charge, Correction, LeaseRef, MeterKey, ReserveOutcome};

/// Lease TTL unless [`RedisStore::with_lease_ttl`] says otherwise: a lease serves for half of
/// it, so unused budget is stranded on a replica for at most ~3 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);

/// The connection waits this many `op_timeout`s for a reply before giving up, so a reserve
/// whose caller already timed out is still read, and given back, when it arrives late.
pub const LATE_REPLY_FACTOR: u32 = 4;

/// Why a Redis operation failed. The enforcer turns it into `fail_open` or `fail_closed`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("budget store unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("budget store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("budget store answered with an unexpected reply of {0} values")]
    BadReply(usize),
    #[error("the budget store task ended without an answer")]
    Lost,
}

impl StoreError {
    /// Stable, low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Timeout(_) => "timeout",
            Self::BadReply(_) => "bad_reply",
            Self::Lost => "lost",
        }
    }
}

/// Counters in one Redis, shared by every replica that points at it.
pub struct RedisStore {
    conn: ConnectionManager,
    scripts: Scripts,
    op_timeout: Duration,
    leases: LeaseTable,
    tasks_started: AtomicBool,
    /// To the flusher of lease settles; set when the first lease is granted. Bounded: when it
    /// is full a settle goes to Redis on its own, like one that was not served from a lease.
    settles: OnceLock<mpsc::Sender<Flush>>,
    /// The enforcer's, for errors only the store sees (a failed batch of settles).
    metrics: OnceLock<BudgetMetrics>,
    /// Settle scripts (one settle, or one batch of lease settles) sent and not answered yet.
    settling: tokio::sync::Semaphore,
    /// Settle scripts started and not finished, waiting for a slot included.
    settle_backlog: std::sync::atomic::AtomicUsize,
}

/// Settles in flight to Redis at most. Settles run after their response, off the request path,
/// so nothing else limits them: with pre-borrowing, admission costs no round trip, and under
/// overload (256 connections on 2 cores) settles outran the one multiplexed connection until
/// each waited past `op_timeout` in its queue and its usage was lost. A settle waits for a slot
/// without its timeout running; the timeout covers only Redis' answer. Settles of leased
/// reservations go through the flusher ([`super::lease_settle`]), one script per counter per
/// batch, so they take one slot per batch; the bound matters for the per-request ones.
const MAX_SETTLES_IN_FLIGHT: usize = 256;

/// While more settles than this are waiting, reservations are not served from leases: they go
/// to Redis, and waiting for its answer slows admission down to what Redis and the connection
/// keep up with (back-pressure), instead of letting the settle backlog grow.
const LEASE_SETTLE_BACKLOG: usize = 2 * MAX_SETTLES_IN_FLIGHT;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("op_timeout", &self.op_timeout)
            .field("lease_ttl", &self.leases.ttl())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `url` (`redis://host:port/db`). Does not connect yet; must be called inside
    /// a Tokio runtime.
    pub fn open(url: &str, op_timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout.saturating_mul(LATE_REPLY_FACTOR)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(op_timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            scripts: Scripts::new(),
            op_timeout,
            leases: LeaseTable::new(DEFAULT_LEASE_TTL),
            tasks_started: AtomicBool::new(false),
            settles: OnceLock::new(),
            metrics: OnceLock::new(),
            settling: tokio::sync::Semaphore::new(MAX_SETTLES_IN_FLIGHT),
            settle_backlog: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Leases live `ttl` in Redis and serve for half of it (tests use short ones).
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.leases = LeaseTable::new(ttl);
        self
    }

    /// Count the store's own errors in `metrics` (the first enforcer built over it wins).
    pub(crate) fn attach_metrics(&self, metrics: &BudgetMetrics) {
        let _ = self.metrics.set(metrics.clone());
    }

    /// How long a caller waits for one operation.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Unused pre-borrowed balance this replica holds, over all counters.
    pub fn leased_balance(&self) -> u64 {
        self.leases.held()
    }

    /// Reserve `charges`, from leases where they can serve, else in Redis. Await it on a task of
    /// its own (see the module docs): dropped mid-script, the script may still have applied.
    pub(crate) async fn reserve(
        self: &Arc<Self>,
        charges: &[Charge],
    ) -> Result<ReserveOutcome, StoreError> {
        let now_ms = self.leases.now_ms();
        let backlogged = self.settle_backlog.load(Ordering::Relaxed) > LEASE_SETTLE_BACKLOG;
        let mut served: Vec<Option<Arc<Lease>>> = charges
            .iter()
            .map(|c| (!backlogged).then(|| self.leases.take(c, now_ms)).flatten())
            .collect();
        if !charges.is_empty() && served.iter().all(Option::is_some) {
            let after = served.iter().flatten().map(|l| l.used_estimate()).collect();
            return Ok(ReserveOutcome::Admitted {
                after,
                leases: served.into_iter().map(|l| l.map(LeaseRef)).collect(),
            });
        }
        let remote: Vec<usize> = (0..charges.len())
            .filter(|&i| served.get(i).is_some_and(Option::is_none))
            .collect();
        let grants: Vec<Option<GrantPlan>> = remote
            .iter()
            .map(|&i| self.leases.plan_grant(&charges[i], now_ms))
            .collect();
        if grants.iter().any(Option::is_some) {
            self.start_tasks();
        }
        let reply = self.reserve_script(charges, &remote, &grants).await;
        let parsed = reply.and_then(|r| parse_reserve(&r, remote.len()));
        match parsed {
            Ok(Parsed::Admitted(values)) => {
                let mut after = served
                    .iter()
                    .map(|l| l.as_ref().map_or(0, |l| l.used_estimate()))
                    .collect::<Vec<u64>>();
                for ((&i, plan), (value, granted)) in remote.iter().zip(&grants).zip(values) {
                    if let Some(plan) = plan {
                        self.leases.landed(plan, granted, value);
                    }
                    // The fresh slice is not used yet.
                    if let Some(a) = after.get_mut(i) {
                        *a = value.saturating_sub(granted);
                    }
                }
                Ok(ReserveOutcome::Admitted {
                    after,
                    leases: served.into_iter().map(|l| l.map(LeaseRef)).collect(),
                })
            }
            Ok(Parsed::Rejected { index, used }) => {
                for plan in grants.iter().flatten() {
                    self.leases.landed(plan, 0, 0);
                }
                self.give_back_taken(charges, &mut served).await;
                Ok(ReserveOutcome::Rejected {
                    index: remote.get(index).copied().unwrap_or(0),
                    used,
                })
            }
            Err(e) => {
                for plan in grants.iter().flatten() {
                    self.leases.failed(plan);
                }
                self.give_back_taken(charges, &mut served).await;
                Err(e)
            }
        }
    }

    async fn reserve_script(
        &self,
        charges: &[Charge],
        remote: &[usize],
        grants: &[Option<GrantPlan>],
    ) -> Result<Vec<i64>, StoreError> {
        let mut inv = self.scripts.reserve.prepare_invoke();
        inv.arg(millis(self.leases.ttl()));
        for (&i, plan) in remote.iter().zip(grants) {
            let c = &charges[i];
            for k in keys_of(&redis_key(&c.key)) {
                inv.key(k);
            }
            inv.arg(c.amount)
                .arg(c.cap.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)))
                .arg(c.ttl_secs.unwrap_or(-1));
            match plan {
                Some(p) => inv.arg(p.amount).arg(&*p.lease.id),
                None => inv.arg(0).arg(NO_LEASE),
            };
        }
        let mut conn = self.conn.clone();
        Ok(inv.invoke_async(&mut conn).await?)
    }

    /// A reservation that did not go through: what it took from leases goes back.
    async fn give_back_taken(&self, charges: &[Charge], served: &mut [Option<Arc<Lease>>]) {
        let corrections: Vec<Correction> = charges
            .iter()
            .zip(served.iter_mut())
            .filter_map(|(c, l)| {
                l.take().map(|lease| Correction {
                    key: c.key.clone(),
                    reserved: c.amount,
                    actual: 0,
                    ttl_secs: c.ttl_secs,
                    lease: Some(lease),
                })
            })
            .collect();
        if corrections.is_empty() {
            return;
        }
        if let Err(e) = self.adjust(corrections).await {
            tracing::warn!(error = %e, "budget: giving back a leased share failed; the lease expires");
        }
    }

    /// Apply corrections (settle, release); returns the counters' values after, in order.
    /// A release served from a lease goes back into its balance without a round trip; a settle
    /// served from one is handed to the flusher (its value is then this replica's estimate).
    pub(crate) async fn adjust(
        &self,
        corrections: Vec<Correction>,
    ) -> Result<Vec<u64>, StoreError> {
        let mut after = vec![0u64; corrections.len()];
        let mut remote = Vec::with_capacity(corrections.len());
        for (i, c) in corrections.into_iter().enumerate() {
            let Some(l) = &c.lease else {
                remote.push((i, c));
                continue;
            };
            let estimate = l.used_estimate();
            let handled = (c.actual == 0 && l.give_back_local(c.reserved))
                || self.settles.get().is_some_and(|tx| {
                    tx.try_send(Flush::Settle {
                        lease: Arc::clone(l),
                        reserved: c.reserved,
                        actual: c.actual,
                        ttl_secs: c.ttl_secs,
                    })
                    .is_ok()
                });
            if handled {
                if let Some(a) = after.get_mut(i) {
                    *a = estimate;
                }
            } else {
                remote.push((i, c));
            }
        }
        if remote.is_empty() {
            return Ok(after);
        }
        let (index, remote): (Vec<usize>, Vec<Correction>) = remote.into_iter().unzip();
        for (i, v) in index.into_iter().zip(self.adjust_remote(&remote).await?) {
            if let Some(a) = after.get_mut(i) {
                *a = v;
            }
        }
        Ok(after)
    }

    /// One `adjust` script over `corrections`; the counters' values after, in order.
    async fn adjust_remote(&self, corrections: &[Correction]) -> Result<Vec<u64>, StoreError> {
        let _backlog = Backlog::enter(&self.settle_backlog);
        // Closed never: the semaphore lives as long as the store.
        let _slot = self.settling.acquire().await.ok();
        let mut inv = self.scripts.adjust.prepare_invoke();
        for c in corrections {
            for k in keys_of(&redis_key(&c.key)) {
                inv.key(k);
            }
            inv.arg(c.delta())
                .arg(c.ttl_secs.unwrap_or(-1))
                .arg(c.lease.as_ref().map_or(NO_LEASE, |l| &*l.id))
                .arg(c.reserved)
                .arg(c.actual);
        }
        let mut conn = self.conn.clone();
        let reply: Result<Vec<i64>, StoreError> =
            tokio::time::timeout(self.op_timeout, inv.invoke_async(&mut conn))
                .await
                .map_err(|_| StoreError::Timeout(self.op_timeout))
                .and_then(|r| r.map_err(StoreError::from));
        // Whatever Redis answered, these reservations are over on this replica.
        for c in corrections {
            if let Some(l) = &c.lease {
                l.finished(c.reserved);
            }
        }
        let reply = reply?;
        if reply.len() != corrections.len() {
            return Err(StoreError::BadReply(reply.len()));
        }
        Ok(reply.into_iter().map(to_u64).collect())
    }

    /// Send one batch of lease settles (one counter's); called by the flusher.
    pub(crate) async fn flush_batch(&self, batch: Vec<Correction>) {
        if let Err(e) = self.adjust_remote(&batch).await {
            if let Some(m) = self.metrics.get() {
                m.store_error("settle", e.label());
            }
            tracing::warn!(error = %e, settles = batch.len(), "budget store unavailable: a batch of pre-borrowed settles was not recorded");
        }
    }

    /// Wait until every settle handed to the flusher so far has been sent to Redis.
    pub async fn flush_settles(&self) {
        let Some(tx) = self.settles.get() else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Flush::Barrier(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Give every unused pre-borrowed balance back (shutdown, after the gateway drained).
    pub async fn close_leases(&self) {
        self.flush_settles().await;
        let unused = self.leases.close_all();
        self.give_back(unused).await;
    }

    async fn give_back(&self, unused: Vec<(Arc<Lease>, u64)>) {
        for (lease, amount) in unused {
            let mut inv = self.scripts.give_back.prepare_invoke();
            for k in keys_of(&redis_key(&lease.key)) {
                inv.key(k);
            }
            inv.arg(&*lease.id).arg(amount);
            let mut conn = self.conn.clone();
            let r: Result<Result<i64, _>, _> =
                tokio::time::timeout(self.op_timeout, inv.invoke_async(&mut conn)).await;
            if !matches!(r, Ok(Ok(_))) {
                tracing::warn!(
                    lease = %lease.id,
                    amount,
                    "budget: giving back an unused lease failed; Redis drops it when it expires"
                );
            }
        }
    }

    async fn renew(&self, leases: Vec<Arc<Lease>>) {
        for lease in leases {
            let mut inv = self.scripts.renew.prepare_invoke();
            for k in keys_of(&redis_key(&lease.key)) {
                inv.key(k);
            }
            inv.arg(millis(self.leases.ttl())).arg(&*lease.id);
            let mut conn = self.conn.clone();
            let r: Result<Result<Vec<i64>, _>, _> =
                tokio::time::timeout(self.op_timeout, inv.invoke_async(&mut conn)).await;
            if !matches!(r, Ok(Ok(_))) {
                tracing::warn!(lease = %lease.id, "budget: renewing a lease with requests in flight failed");
            }
        }
    }

    /// One sweep: give back what stopped serving, renew what still has requests in flight.
    async fn sweep(&self) {
        let plan = self.leases.sweep(self.leases.now_ms());
        self.give_back(plan.give_back).await;
        self.renew(plan.renew).await;
    }

    /// Start the sweeper and the flusher of lease settles (with the first grant).
    fn start_tasks(self: &Arc<Self>) {
        if self.tasks_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.tasks_started.store(false, Ordering::Release);
            return;
        };
        let (tx, rx) = mpsc::channel(lease_settle::QUEUE);
        let _ = self.settles.set(tx);
        #[expect(
            clippy::disallowed_methods,
            reason = "the lease settle flusher: ends when the store (a Weak) is gone; close_leases flushes it at drain"
        )]
        rt.spawn(lease_settle::run(Arc::downgrade(self), rx));
        // A fifth of the TTL: a lease that stops serving at half its TTL is renewed or given
        // back well before Redis would drop it.
        let every = self.leases.ttl() / 5;
        let store: Weak<Self> = Arc::downgrade(self);
        #[expect(
            clippy::disallowed_methods,
            reason = "the lease sweeper: ends when the store (a Weak) is gone"
        )]
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else { return };
                store.sweep().await;
            }
        });
    }
}

/// Counts one settle in [`RedisStore::settle_backlog`] while it lives.
struct Backlog<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Backlog<'a> {
    fn enter(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Backlog<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Parsed {
    /// Per remote charge: the counter after, and the slice granted on top (0: none).
    Admitted(Vec<(u64, u64)>),
    /// Remote charge `index` (0-based) did not fit.
    Rejected { index: usize, used: u64 },
}

fn parse_reserve(reply: &[i64], n: usize) -> Result<Parsed, StoreError> {
    match reply.split_first() {
        Some((0, rest)) if rest.len() == 2 * n => Ok(Parsed::Admitted(
            rest.chunks_exact(2)
                .map(|p| (to_u64(p[0]), to_u64(p[1])))
                .collect(),
        )),
        Some((&i, [used])) if i >= 1 && to_u64(i) <= n as u64 => Ok(Parsed::Rejected {
            index: usize::try_from(i - 1).unwrap_or(0),
            used: to_u64(*used),
        }),
        _ => Err(StoreError::BadReply(reply.len())),
    }
}

fn redis_key(key: &MeterKey) -> String {
    format!("{}:{}", key.name, key.window_start)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
