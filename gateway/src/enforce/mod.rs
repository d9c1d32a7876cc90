//! The gateway's policy enforcement: the budget enforcer and the audit logger behind the one
//! [`Enforcement`] the request path calls.
//!
//! Settings come from the pack each request runs on (`meta.pack`), and packs hot-reload, so
//! what [`PolicyEnforcement`] derives from a pack version ([`PackPolicies`]) lives in that
//! version's `ActivePack`: built once when the version is activated (`pack_activated`, before
//! it serves), read by every request on it with one pointer load, and gone with the last request
//! that ran on it. A new pack version builds a new [`BudgetEnforcer`] once, over the *same*
//! long-lived [`BudgetStore`] (counters are named by scope and window, so spend carries over a
//! reload). The audit sink is started once
//! per distinct audit `dir` ([`sinks`]); `budget` holds the reservation side and `record` builds
//! the one audit record of a request.
//!
//! Per request: `admit` reserves (only when the pack's chain runs `budget-enforcer`); exactly
//! one of `settled` / `failed` then settles or releases the reservation and, when the chain runs
//! `audit-logger`, queues one record. The hooks are synchronous: settling and queueing never
//! wait (see [`sinks`] for what a full queue does). With the default audit settings (or `drop`)
//! they return [`Release::Now`]. When the request's pack says `on_queue_full: block` and
//! `fsync_interval_ms: 0` — "no acknowledged request without its record on disk" — they return
//! a [`Release`] that resolves once the record is written and fsynced, `holds_stream_end` is
//! true so a stream holds back its `[DONE]` too, and the gateway waits for it before the caller
//! gets the end of the response (`hooks`).
//!
//! What it does not do: persist the in-memory store (the CLI runs `budget::persist`), or apply
//! changes of `fsync_interval_ms`, `queue_capacity` or `on_queue_full` to a directory whose sink
//! is already running (they apply when a sink starts: a new `dir`, or a restart). Whether a
//! response waits for its record follows the request's own pack, though: the writer fsyncs every
//! batch that holds a waiting record, whatever interval it was started with.

mod budget;
mod record;
mod sinks;

use std::sync::Arc;

use policy_engine::pack::{AuditLoggerConfig, QueueFullPolicy, StoreKind, StoreUnavailable};
use policy_engine::PolicyKind;

use crate::budget::{BudgetEnforcer, BudgetMetrics, BudgetStore, MemoryStore, RedisStore};
use crate::clock::Clock;
use crate::control::events::{EventMetrics, EventSink};
use crate::error::ApiError;
use crate::hooks::{Admission, Admit, Enforcement, Failure, Release, RequestMeta, Settled};
use crate::pack::ActivePack;

pub use budget::Permit;
pub use sinks::AuditStartError;

/// What the enforcement is built from. The stores outlive every pack version.
#[derive(Debug)]
pub struct EnforcementSettings {
    /// The in-memory budget store (the CLI loads it from, and saves it to, the state file).
    pub memory: MemoryStore,
    /// The shared store for packs that say `store: redis` (`--redis` / `PALISADE_REDIS_URL`).
    pub redis: Option<Arc<RedisStore>>,
    pub clock: Arc<dyn Clock>,
    /// Where decision events go when the gateway runs under a control plane.
    pub events: Option<EventSink>,
}

/// Budget enforcement and audit logging for every request; see the module docs.
#[derive(Debug, Clone)]
pub struct PolicyEnforcement {
    inner: Arc<EnforcementState>,
}

#[derive(Debug)]
struct EnforcementState {
    memory: BudgetStore,
    redis: Option<BudgetStore>,
    clock: Arc<dyn Clock>,
    budget_metrics: BudgetMetrics,
    sinks: sinks::AuditSinks,
    events: Option<EventSink>,
}

/// What one pack version asks of the enforcement.
#[derive(Debug)]
pub(crate) struct PackPolicies {
    /// The pack's identity as every audit record of it says it (shared, not copied per record).
    audit_pack: crate::audit::PackRef,
    audit_environment: Arc<str>,
    budget: Option<BudgetSetup>,
    /// `Some` when the chain runs `audit-logger`.
    audit: Option<AuditLoggerConfig>,
    /// The response waits for its audit record to be on disk (`block` + `fsync_interval_ms: 0`).
    durable: bool,
}

#[derive(Debug)]
enum BudgetSetup {
    Enforcer {
        enforcer: BudgetEnforcer,
        default_max_tokens: u64,
    },
    /// The pack wants Redis and the gateway has no URL: every reservation is "store unavailable".
    NoStore { fail_open: bool },
}

impl PolicyEnforcement {
    pub fn new(settings: EnforcementSettings) -> Result<Self, prometheus::Error> {
        Ok(Self {
            inner: Arc::new(EnforcementState {
                memory: BudgetStore::Memory(settings.memory),
                redis: settings.redis.map(BudgetStore::Redis),
                sinks: sinks::AuditSinks::new(Arc::clone(&settings.clock))?,
                clock: settings.clock,
                budget_metrics: BudgetMetrics::new()?,
                events: settings.events,
            }),
        })
    }

    /// Why the audit sink of the first pack could not start (start-up must then fail).
    pub fn startup_error(&self) -> Option<Arc<AuditStartError>> {
        self.inner.sinks.startup_error()
    }

    /// Stop the audit writers after flushing what is queued. Call after the gateway has
    /// drained; records of requests still running afterwards are lost (and logged).
    pub fn shutdown(&self) {
        self.inner.sinks.shutdown();
    }

    /// What this enforcement derives from `pack`, built on first use (its activation).
    fn policies<'p>(&self, pack: &'p ActivePack) -> &'p PackPolicies {
        pack.policies.get_or_init(|| self.build(pack))
    }

    fn build(&self, pack: &ActivePack) -> PackPolicies {
        let c = &pack.compiled;
        let budget = c
            .budget
            .as_ref()
            .filter(|_| c.runs(PolicyKind::BudgetEnforcer))
            .and_then(|cfg| {
                let store = match cfg.store {
                    StoreKind::Memory => self.inner.memory.clone(),
                    StoreKind::Redis => match &self.inner.redis {
                        Some(r) => r.clone(),
                        None => {
                            tracing::error!(pack = %c.name, "the pack keeps budgets in Redis but the gateway has no --redis URL (or PALISADE_REDIS_URL); budget reservations fail as `store unavailable`");
                            return Some(BudgetSetup::NoStore {
                                fail_open: cfg.on_store_unavailable == StoreUnavailable::FailOpen,
                            });
                        }
                    },
                };
                let enforcer = BudgetEnforcer::from_pack(
                    c,
                    store,
                    Arc::clone(&self.inner.clock),
                    self.inner.budget_metrics.clone(),
                )?;
                Some(BudgetSetup::Enforcer {
                    enforcer,
                    default_max_tokens: u64::from(cfg.default_max_tokens),
                })
            });
        let audit = c
            .runs(PolicyKind::AuditLogger)
            .then(|| c.audit.clone().unwrap_or_default());
        let durable = audit
            .as_ref()
            .is_some_and(|a| a.on_queue_full == QueueFullPolicy::Block && a.fsync_interval_ms == 0);
        PackPolicies {
            audit_pack: crate::audit::PackRef {
                name: c.name.as_str().into(),
                version: c.version.as_str().into(),
                hash: pack.hash_hex.as_str().into(),
            },
            audit_environment: c.environment.as_deref().unwrap_or_default().into(),
            budget,
            audit,
            durable,
        }
    }
}

impl Enforcement for PolicyEnforcement {
    fn admit(&self, meta: &RequestMeta) -> Admit {
        let policies = self.policies(&meta.pack);
        match &policies.budget {
            None => Admit::Ready(Ok(Admission::default())),
            Some(setup) => budget::admit(setup, meta),
        }
    }

    fn settled(&self, meta: &RequestMeta, admission: Admission, settled: &Settled) -> Release {
        let held = admission.permit;
        let mut note = held.as_ref().map(budget::Permit::note);
        if settled.usage.is_none() {
            // The provider reported no usage (a stream without its usage event): the budget
            // is charged the reservation, and the record says so.
            if let Some(n) = note.as_mut() {
                n.decision = "settled_on_reservation".into();
            }
        }
        let model_used = held.as_ref().map(|h| h.model_used.clone());
        if let Some(h) = held {
            budget::settle(h, settled.usage, meta.served_model.as_deref());
        }
        self.record(meta, |policies| {
            record::settled(meta, policies, settled, note, model_used)
        })
    }

    fn failed(
        &self,
        meta: &RequestMeta,
        admission: Option<Admission>,
        failure: &Failure<'_>,
    ) -> Release {
        let held = admission.and_then(|a| a.permit);
        let note = match (&held, failure) {
            (Some(h), _) => Some(h.note()),
            (None, Failure::Refused(ApiError::Rejected(r))) => {
                r.limit.as_ref().map(|limit| crate::audit::BudgetNote {
                    decision: "blocked".into(),
                    scope: Some(limit.clone()),
                    remaining_usd: None,
                })
            }
            (None, _) => None,
        };
        let model_used = held.as_ref().map(|h| h.model_used.clone());
        if let Some(h) = held {
            budget::release(h);
        }
        self.record(meta, |policies| {
            record::failed(meta, policies, failure, note, model_used)
        })
    }

    fn holds_stream_end(&self, meta: &RequestMeta) -> bool {
        self.policies(&meta.pack).durable
    }

    fn pack_activated(&self, pack: &Arc<ActivePack>) {
        let policies = self.policies(pack);
        if let Some(cfg) = &policies.audit {
            self.inner.sinks.ensure(cfg);
        }
    }

    fn register_metrics(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        self.inner.budget_metrics.register(registry)?;
        if let Some(events) = &self.inner.events {
            registry.register(Box::new(EventMetrics::new(events.clone())?))?;
        }
        self.inner.sinks.register(registry)
    }

    fn event_sink(&self) -> Option<&EventSink> {
        self.inner.events.as_ref()
    }

    fn audit_stats(&self) -> Option<&crate::audit::AuditStats> {
        Some(self.inner.sinks.stats())
    }
}

impl PolicyEnforcement {
    /// Build the request's record when the pack runs `audit-logger` or events are shipped: queue
    /// the decision event (never waits), then the audit record; the release waits for the
    /// record on disk when the pack asks for that.
    fn record(
        &self,
        meta: &RequestMeta,
        build: impl FnOnce(&PackPolicies) -> crate::audit::AuditRecord,
    ) -> Release {
        let policies = self.policies(&meta.pack);
        let events = self.inner.events.as_ref();
        if policies.audit.is_none() && events.is_none() {
            return Release::Now;
        }
        let record = build(policies);
        if let Some(events) = events {
            events.record(&record, meta);
        }
        if policies.audit.is_none() {
            return Release::Now;
        }
        if policies.durable {
            return self.inner.sinks.submit_durable(record);
        }
        self.inner.sinks.submit(record)
    }
}
