//! The control-plane agent: register, long-poll the desired version, apply it, persist it,
//! report ACK or NACK.
//!
//! The agent owns no pack; it hands documents to a [`PackApplier`] (the gateway's own hot-reload
//! path: compile off the request path, then one swap) and reports what came of it. A document the
//! applier rejects is a NACK with the first diagnostic, and the gateway keeps serving what it had:
//! a rejection never looks like success. A document it accepts is persisted before the ACK, so a
//! restart while the control plane is down starts from it (`source: persisted`).
//!
//! Failure handling: an unreachable control plane is retried with capped backoff while the
//! gateway keeps serving; reports go out every `report_interval` and right after every attempt,
//! so the control plane can tell a live gateway (SYNCED/PENDING/REJECTED) from a dead one
//! (OFFLINE).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::client::{ControlClient, DesiredAnswer};
use super::persist::{self, PersistedMeta};
use palisade_wire::gateway::{
    Active, ActiveSource, AttemptError, AttemptResult, Counters, DesiredSeen, Instance,
    LastAttempt, Register, Report,
};

/// What a successful activation reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: String,
    pub hash: String,
}

/// The gateway side of the agent: turn a document into the active pack, or say why not.
pub trait PackApplier: Send + Sync + 'static {
    fn apply(
        &self,
        yaml: String,
        source: ActiveSource,
    ) -> impl Future<Output = Result<Applied, AttemptError>> + Send;
    /// Request counters for the report.
    fn counters(&self) -> Counters;
    /// Called with every report before it is sent (e.g. to export drift as a metric).
    fn observe(&self, _report: &Report) {}
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub instance: Instance,
    pub state_dir: PathBuf,
    /// How long one poll may wait for a change.
    pub long_poll: Duration,
    /// Used until the control plane says otherwise at registration.
    pub report_interval: Duration,
}

#[derive(Debug)]
pub struct Agent<A> {
    client: ControlClient,
    applier: Arc<A>,
    cfg: AgentConfig,
    report: watch::Sender<Report>,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl<A: PackApplier> Agent<A> {
    pub fn new(client: ControlClient, applier: Arc<A>, cfg: AgentConfig) -> Self {
        let initial = Report {
            instance: cfg.instance.clone(),
            desired: None,
            active: None,
            last_attempt: None,
            counters: Counters::default(),
        };
        let (report, _) = watch::channel(initial);
        Self {
            client,
            applier,
            cfg,
            report,
        }
    }

    /// Activate the persisted pack, if any. Call before serving so that a restart with the
    /// control plane down enforces the last good version at once.
    pub async fn start_from_persisted(&self) -> Option<Applied> {
        let dir = self.cfg.state_dir.clone();
        let found = match tokio::task::spawn_blocking(move || persist::load(&dir)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ignoring the persisted pack");
                None
            }
            Err(_) => None,
        };
        let (meta, yaml) = found?;
        if meta.pack != self.cfg.instance.pack {
            tracing::warn!(persisted = %meta.pack, wanted = %self.cfg.instance.pack, "the persisted pack is another pack; ignoring it");
            return None;
        }
        match self.applier.apply(yaml, ActiveSource::Persisted).await {
            Ok(applied) => {
                self.report.send_modify(|r| {
                    r.active = Some(Active {
                        version: applied.version.clone(),
                        hash: applied.hash.clone(),
                        activated_at: now(),
                        source: ActiveSource::Persisted,
                    });
                });
                tracing::info!(version = %applied.version, "serving the persisted pack until the control plane answers");
                Some(applied)
            }
            Err(e) => {
                tracing::warn!(code = %e.code, message = %e.message, "the persisted pack no longer activates");
                None
            }
        }
    }

    /// Register, then poll and report until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        // Shutdown ends every phase, registration included: a gateway whose control plane is
        // unreachable (and that has no pack yet) must still stop at once on SIGTERM.
        tokio::pin!(shutdown);
        let interval = tokio::select! {
            i = self.register() => i,
            () = &mut shutdown => return,
        };
        #[expect(
            clippy::disallowed_methods,
            reason = "the reporter: its JoinHandle is kept and it is ended with the agent"
        )]
        let reporter = tokio::spawn(report_loop(
            self.client.clone(),
            Arc::clone(&self.applier),
            self.report.subscribe(),
            self.cfg.instance.id.clone(),
            interval,
        ));
        tokio::select! {
            () = self.poll_loop() => {}
            () = &mut shutdown => {}
        }
        reporter.abort();
    }

    async fn register(&self) -> Duration {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self
                .client
                .register(&Register {
                    instance: self.cfg.instance.clone(),
                })
                .await
            {
                Ok(r) => {
                    let interval = r
                        .report_interval_ms
                        .map_or(self.cfg.report_interval, Duration::from_millis);
                    tracing::info!(
                        interval_ms = interval.as_millis(),
                        "registered with the control plane"
                    );
                    return interval;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis(), "cannot register with the control plane");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn poll_loop(&self) {
        let mut known: Option<String> = None;
        let mut backoff = Duration::from_millis(200);
        loop {
            let inst = &self.cfg.instance;
            match self
                .client
                .desired(
                    &inst.environment,
                    &inst.pack,
                    known.as_deref(),
                    self.cfg.long_poll,
                )
                .await
            {
                Ok(DesiredAnswer::Changed(d)) => {
                    backoff = Duration::from_millis(200);
                    known = Some(d.hash.clone());
                    self.report.send_modify(|r| {
                        r.desired = Some(DesiredSeen {
                            version: d.version.clone(),
                            hash: d.hash.clone(),
                            seen_at: now(),
                        })
                    });
                    let active_hash = self.report.borrow().active.as_ref().map(|a| a.hash.clone());
                    if active_hash.as_deref() != Some(d.hash.as_str()) {
                        self.attempt(d).await;
                    }
                }
                Ok(DesiredAnswer::NotModified | DesiredAnswer::NothingDeployed) => {
                    backoff = Duration::from_millis(200)
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis(), "polling the control plane failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Apply one desired document and record the ACK or NACK.
    async fn attempt(&self, d: palisade_wire::gateway::Desired) {
        let at = now();
        match self
            .applier
            .apply(d.yaml.clone(), ActiveSource::ControlPlane)
            .await
        {
            Ok(applied) if applied.hash == d.hash => {
                let meta = PersistedMeta {
                    pack: d.pack.clone(),
                    version: applied.version.clone(),
                    hash: applied.hash.clone(),
                };
                let dir = self.cfg.state_dir.clone();
                let yaml = d.yaml;
                match tokio::task::spawn_blocking(move || persist::save(&dir, &meta, &yaml)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "could not persist the new pack; a restart without the control plane would not find it")
                    }
                    Err(_) => tracing::error!("the persist task failed"),
                }
                self.report.send_modify(|r| {
                    r.active = Some(Active {
                        version: applied.version.clone(),
                        hash: applied.hash.clone(),
                        activated_at: at.clone(),
                        source: ActiveSource::ControlPlane,
                    });
                    r.last_attempt = Some(LastAttempt {
                        version: applied.version,
                        at,
                        result: AttemptResult::Ack,
                        error: None,
                    });
                });
            }
            Ok(applied) => {
                // The document compiled to another identity than the registry says: refuse to
                // claim it. (It was activated; the NACK makes the mismatch visible.)
                let error = AttemptError {
                    code: "HASH_MISMATCH".to_owned(),
                    path: String::new(),
                    message: format!(
                        "the document hashes to {} here, the control plane says {}",
                        applied.hash, d.hash
                    ),
                };
                self.nack(d.version, at, error);
            }
            Err(error) => self.nack(d.version, at, error),
        }
    }

    fn nack(&self, version: String, at: String, error: AttemptError) {
        tracing::warn!(version = %version, code = %error.code, message = %error.message, "rejected the desired pack; the active one keeps serving");
        self.report.send_modify(|r| {
            r.last_attempt = Some(LastAttempt {
                version,
                at,
                result: AttemptResult::Nack,
                error: Some(error),
            })
        });
    }
}

/// Send the report every `interval`, and at once whenever it changes.
async fn report_loop<A: PackApplier>(
    client: ControlClient,
    applier: Arc<A>,
    mut rx: watch::Receiver<Report>,
    id: String,
    interval: Duration,
) {
    loop {
        let mut report = rx.borrow_and_update().clone();
        report.counters = applier.counters();
        applier.observe(&report);
        if let Err(e) = client.report(&id, &report).await {
            tracing::debug!(error = %e, "report not delivered");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}
