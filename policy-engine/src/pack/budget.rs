//! Settings of the `budget-enforcer` policy: limits by scope and calendar window.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetEnforcerConfig {
    /// Where counters live: `memory` (one replica) or `redis` (URL from `--redis` or
    /// `PALISADE_REDIS_URL`, never from the pack).
    #[serde(default)]
    pub store: StoreKind,
    #[serde(default)]
    pub on_store_unavailable: StoreUnavailable,
    /// Fraction of a limit at which an alert event and metric fire.
    #[serde(default = "default_soft")]
    pub soft_threshold: f64,
    /// Output tokens reserved when a request sets no `max_tokens`.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
    /// Pre-borrowing with `store: redis`: the fraction of each limit a replica may lease from
    /// Redis at a time and then reserve from locally, without a round trip per request. `0`
    /// (the default) reserves in Redis on every request. Allowed: `[0, 0.1]`. Ignored by the
    /// memory store. Worst-case overshoot: `replicas × preborrow_fraction × limit` (see
    /// `docs/DESIGN-DECISIONS.md`, Budgets).
    #[serde(default)]
    pub preborrow_fraction: f64,
    /// How long a request may wait for an `on_exhausted: queue` limit's next window before it
    /// is refused (HTTP 429 `rate_limited`).
    #[serde(default = "default_max_queue_ms")]
    pub max_queue_ms: u64,
    #[serde(default)]
    pub limits: Vec<BudgetLimit>,
}

/// Largest `preborrow_fraction` a pack may set: a slice, not a share of the budget.
pub const MAX_PREBORROW_FRACTION: f64 = 0.1;

impl Default for BudgetEnforcerConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::default(),
            on_store_unavailable: StoreUnavailable::default(),
            soft_threshold: default_soft(),
            default_max_tokens: default_max_tokens(),
            preborrow_fraction: 0.0,
            max_queue_ms: default_max_queue_ms(),
            limits: Vec::new(),
        }
    }
}

fn default_soft() -> f64 {
    0.8
}
fn default_max_tokens() -> u32 {
    1024
}
fn default_max_queue_ms() -> u64 {
    2_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreUnavailable {
    #[default]
    FailClosed,
    FailOpen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetLimit {
    pub scope: BudgetScope,
    pub window: BudgetWindow,
    #[serde(default)]
    pub usd: Option<f64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Requests per window (with `window: minute`, requests per minute).
    #[serde(default)]
    pub requests: Option<u64>,
    #[serde(default)]
    pub on_exhausted: ExhaustedAction,
    /// Model used instead when `on_exhausted: degrade`.
    #[serde(default)]
    pub degrade_to: Option<String>,
}

impl BudgetLimit {
    /// Identity of a limit inside a pack, used by the semantic diff to pair old and new.
    pub fn key(&self) -> String {
        format!("{}/{}", self.scope, self.window.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetWindow {
    /// A rate limit: 60-second windows aligned to the minute (requests and tokens per minute).
    Minute,
    Daily,
    Monthly,
    Total,
}

impl BudgetWindow {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Daily => "daily",
            Self::Monthly => "monthly",
            Self::Total => "total",
        }
    }
}

/// Ordered loosest to strictest for the semantic diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExhaustedAction {
    /// Pass, count, log once per window.
    Alert,
    /// Rewrite the model to `degrade_to` and say so in a response header.
    Degrade,
    /// Wait for the next window, up to `max_queue_ms`, then HTTP 429 `rate_limited` (minute
    /// windows only).
    Queue,
    /// HTTP 429 `budget_exceeded` with the scope and the window's reset time.
    #[default]
    Block,
}

/// Who a limit applies to. Written in a pack as `environment`, `key:ID`, `team:NAME` or
/// `model:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BudgetScope {
    Environment,
    Key(String),
    Team(String),
    Model(String),
}

impl BudgetScope {
    /// Low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Environment => "environment",
            Self::Key(_) => "key",
            Self::Team(_) => "team",
            Self::Model(_) => "model",
        }
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => f.write_str("environment"),
            Self::Key(id) => write!(f, "key:{id}"),
            Self::Team(t) => write!(f, "team:{t}"),
            Self::Model(m) => write!(f, "model:{m}"),
        }
    }
}

impl std::str::FromStr for BudgetScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "invalid scope `{s}`, expected one of environment, key:ID, team:NAME, model:NAME"
            )
        };
        if s == "environment" {
            return Ok(Self::Environment);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() || rest.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        match kind {
            "key" => Ok(Self::Key(rest.to_owned())),
            "team" => Ok(Self::Team(rest.to_owned())),
            "model" => Ok(Self::Model(rest.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl Serialize for BudgetScope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BudgetScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
