//! Where a request for a model with alternatives goes: its deployments by weight, then its
//! fallbacks' deployments, skipping deployments whose circuit is open; and each deployment's
//! health (a circuit breaker with half-open probes).
//!
//! Only models with more than one place to go are routed here (`ModelRoute::has_alternatives`);
//! a model served by one deployment is called once, as it always was, and never taken out of
//! rotation (there is nowhere else to send it). The first deployment is picked by weight from
//! the request's id (consecutive ids spread requests by weight); the others follow in the
//! pack's order. Health lives in the gateway, not the pack, so a reload keeps what was learnt;
//! a deployment is named `provider/upstream_model`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use policy_engine::pack::RoutingSpec;
use policy_engine::{Deployment, ModelRoute};

use crate::pack::ActivePack;
use crate::upstream::Upstream;

/// One place a request may be sent.
#[derive(Debug, Clone)]
pub(crate) struct Candidate<'p> {
    /// The model it serves (the requested one, or a fallback).
    pub(crate) model: &'p ModelRoute,
    pub(crate) deployment: &'p Deployment,
    pub(crate) upstream: &'p Arc<Upstream>,
}

impl Candidate<'_> {
    /// `provider/upstream_model`: the deployment's name in health, metrics and records.
    pub(crate) fn name(&self) -> &str {
        &self.deployment.name
    }
}

/// The deployments of `model` then of its fallbacks, in the order they are tried: the first by
/// weight (`pick`, e.g. the request id), the rest as listed; deployments out of rotation last.
pub(crate) fn candidates<'p>(
    pack: &'p ActivePack,
    model: &'p ModelRoute,
    pick: u64,
    health: &Health,
    now: Instant,
) -> Vec<Candidate<'p>> {
    let mut out = Vec::new();
    let mut models: Vec<&'p ModelRoute> = vec![model];
    for f in model.fallbacks.iter() {
        if let Some(m) = pack.compiled.models.get(f) {
            models.push(m);
        }
    }
    for (n, m) in models.into_iter().enumerate() {
        let mut order: Vec<&'p Deployment> = m.deployments.iter().collect();
        if n == 0 && order.len() > 1 {
            let total: u64 = order.iter().map(|d| u64::from(d.weight.max(1))).sum();
            let mut at = pick % total.max(1);
            let first = order
                .iter()
                .position(|d| {
                    let w = u64::from(d.weight.max(1));
                    if at < w {
                        true
                    } else {
                        at -= w;
                        false
                    }
                })
                .unwrap_or(0);
            let chosen = order.remove(first);
            order.insert(0, chosen);
        }
        for d in order {
            if let Some(upstream) = pack.upstream(&d.provider) {
                out.push(Candidate {
                    model: m,
                    deployment: d,
                    upstream,
                });
            }
        }
    }
    // Deployments out of rotation go last (tried only when everything else failed); stable, so
    // the weighted order holds among the rest.
    let mut marked: Vec<(bool, Candidate<'p>)> = out
        .into_iter()
        .map(|c| (!health.available(c.name(), now), c))
        .collect();
    marked.sort_by_key(|(out_of_rotation, _)| *out_of_rotation);
    marked.into_iter().map(|(_, c)| c).collect()
}

/// Each deployment's recent record.
#[derive(Debug, Default)]
pub(crate) struct Health {
    states: DashMap<String, State>,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    /// Consecutive failures.
    failures: u32,
    /// Out of rotation until then.
    open_until: Option<Instant>,
    /// A probe is in flight (half-open) until then: others wait for its result, for one
    /// cooldown at most (a probe whose caller left never reports).
    probe_until: Option<Instant>,
}

/// A deployment's state as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeploymentHealth {
    pub(crate) deployment: String,
    /// `closed` (in rotation), `open` (out), `half_open` (a probe decides).
    pub(crate) state: &'static str,
    pub(crate) consecutive_failures: u32,
}

impl Health {
    /// Whether a request may go to `name` now: in rotation, or past its cooldown with no probe
    /// in flight (the request that is sent there becomes the probe, [`Health::sending`]).
    pub(crate) fn available(&self, name: &str, now: Instant) -> bool {
        let Some(s) = self.states.get(name) else {
            return true;
        };
        match s.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => s.probe_until.is_none_or(|p| now >= p),
        }
    }

    /// A request is being sent to `name`: past its cooldown, it is the probe.
    pub(crate) fn sending(&self, name: &str, spec: &RoutingSpec, now: Instant) {
        if self.states.is_empty() {
            return;
        }
        if let Some(mut s) = self.states.get_mut(name) {
            if s.open_until.is_some_and(|until| now >= until) {
                s.probe_until = Some(now + Duration::from_millis(spec.circuit_cooldown_ms));
            }
        }
    }

    /// The deployment answered (or failed in a way that is not its fault): back in rotation.
    /// True when it had a record (its state changed).
    pub(crate) fn success(&self, name: &str) -> bool {
        if self.states.is_empty() {
            return false;
        }
        self.states.remove(name).is_some()
    }

    /// The deployment failed (connect error, timeout, 429 or 5xx); after `spec.circuit_failures`
    /// in a row, or a failed probe, it is out of rotation for the cooldown. True when it is out.
    pub(crate) fn failure(&self, name: &str, spec: &RoutingSpec, now: Instant) -> bool {
        let mut s = self.states.entry(name.to_owned()).or_default();
        s.failures = s.failures.saturating_add(1);
        if s.probe_until.is_some() || s.failures >= spec.circuit_failures.max(1) {
            s.open_until = Some(now + Duration::from_millis(spec.circuit_cooldown_ms));
            s.probe_until = None;
        }
        s.open_until.is_some()
    }

    /// Every deployment with a record (one that failed since its last success), for `/status`.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<DeploymentHealth> {
        let mut out: Vec<DeploymentHealth> = self
            .states
            .iter()
            .map(|e| DeploymentHealth {
                deployment: e.key().clone(),
                state: match e.open_until {
                    None => "closed",
                    Some(until) if now < until => "open",
                    Some(_) => "half_open",
                },
                consecutive_failures: e.failures,
            })
            .collect();
        out.sort_by(|a, b| a.deployment.cmp(&b.deployment));
        out
    }
}

/// The wait before attempt `n` (1 for the first retry) on the same deployment: exponential from
/// `backoff_ms` with full jitter (from `seed`), at least the provider's `Retry-After`, at most
/// `max_backoff_ms`.
pub(crate) fn backoff(
    spec: &RoutingSpec,
    n: u32,
    seed: u64,
    retry_after: Option<Duration>,
) -> Duration {
    let cap = spec.max_backoff_ms;
    let ceiling = spec
        .backoff_ms
        .saturating_mul(1u64 << n.saturating_sub(1).min(20))
        .min(cap);
    // Full jitter: anywhere in [0, ceiling].
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(n);
    let jittered = if ceiling == 0 {
        0
    } else {
        mixed % (ceiling + 1)
    };
    let wait = Duration::from_millis(jittered);
    match retry_after {
        Some(r) => wait.max(r).min(Duration::from_millis(cap)),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RoutingSpec {
        RoutingSpec {
            circuit_failures: 2,
            circuit_cooldown_ms: 50,
            ..RoutingSpec::default()
        }
    }

    #[test]
    fn a_failing_deployment_opens_then_lets_one_probe_through_and_closes_on_success() {
        let h = Health::default();
        let t0 = Instant::now();
        assert!(h.available("p/m", t0));
        h.failure("p/m", &spec(), t0);
        assert!(h.available("p/m", t0), "one failure of two");
        h.failure("p/m", &spec(), t0);
        assert!(!h.available("p/m", t0), "open");
        assert_eq!(h.snapshot(t0)[0].state, "open");
        let later = t0 + Duration::from_millis(60);
        assert!(
            h.available("p/m", later),
            "past the cooldown: may be probed"
        );
        assert!(h.available("p/m", later), "asking claims nothing");
        h.sending("p/m", &spec(), later);
        assert!(!h.available("p/m", later), "one probe at a time");
        // A probe that never reports (its caller left) expires after a cooldown.
        assert!(h.available("p/m", later + Duration::from_millis(60)));
        h.failure("p/m", &spec(), later);
        assert!(!h.available("p/m", later), "a failed probe reopens");
        let again = later + Duration::from_millis(60);
        assert!(h.available("p/m", again));
        h.sending("p/m", &spec(), again);
        assert!(h.success("p/m"), "the probe's success closes the circuit");
        assert!(h.available("p/m", again) && h.available("p/m", again));
        assert!(
            h.snapshot(again).is_empty(),
            "a deployment in good health has no record"
        );
        assert!(!h.success("p/m"));
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after_within_the_cap() {
        let s = RoutingSpec::default();
        for seed in 0..200u64 {
            for n in 1..6 {
                let w = backoff(&s, n, seed, None);
                assert!(
                    w <= Duration::from_millis((100u64 << (n - 1)).min(2_000)),
                    "{n}: {w:?}"
                );
            }
        }
        let w = backoff(&s, 1, 7, Some(Duration::from_secs(1)));
        assert!(w >= Duration::from_secs(1));
        assert_eq!(
            backoff(&s, 1, 7, Some(Duration::from_secs(60))),
            Duration::from_secs(2)
        );
    }
}
