//! Budget counters shared by many replicas through Redis, one atomic Lua script per operation.
//!
//! `reserve` is a single script over every counter a request touches: it checks every capped
//! counter first and only then increments them all, so it is all or nothing and, because Redis
//! runs a script without interleaving, exact across any number of replicas — N concurrent
//! requests from R replicas against a budget worth k of them admit exactly k. `adjust` (settle
//! and release) is a second script that adds signed deltas and floors at zero. Scripts go by
//! `EVALSHA`; on `NOSCRIPT` (a restarted or flushed Redis) the client loads the script and
//! retries, so a fresh server needs no preparation.
//!
//! Keys are `palisade:budget:{PACK/ENV}:SCOPE:WINDOW:DIM:START` — the braces are a Redis
//! Cluster hash tag, so every counter of one pack and environment lives in one slot and a script
//! may touch several. Each key gets a TTL of (window end − now) + one day, so finished windows
//! vanish by themselves while late settles still land; `total` keys never expire.
//!
//! **Overshoot.** This store reserves on every request (no pre-borrowed slice), so admitted
//! reservations never exceed a cap: the worst-case overshoot from pre-borrowing is
//! `replicas × slice` with `slice = 0`, i.e. zero. What can still pass a cap is real usage above
//! the estimate, added on settle (the same on one replica): at most the sum over in-flight
//! requests of (actual − reserved), bounded per request by the input-estimate error because the
//! output reservation is the request's own `max_tokens` (or `default_max_tokens`).
//!
//! What it does not do: retry a failed operation (the enforcer decides `fail_open` /
//! `fail_closed` and counts it), or connect eagerly. The connection manager connects on first
//! use and reconnects by itself after an I/O error, so the store recovers when Redis returns.
//! Every operation is bounded by `op_timeout`, so a hung server costs one timeout, not a hang.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::store::{Charge, MeterKey, ReserveOutcome};

/// All-or-nothing reserve. ARGV per key: amount, cap (-1: unchecked), ttl (-1: none).
/// Returns `{0, used_1, ..}` when applied, `{i, used_i}` when key `i` (1-based) did not fit.
const RESERVE_LUA: &str = r"
for i = 1, #KEYS do
  local cap = tonumber(ARGV[3*i-1])
  if cap >= 0 then
    local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
    if cur + tonumber(ARGV[3*i-2]) > cap then
      return {i, cur}
    end
  end
end
local out = {0}
for i = 1, #KEYS do
  out[i+1] = redis.call('INCRBY', KEYS[i], ARGV[3*i-2])
  local ttl = tonumber(ARGV[3*i])
  if ttl >= 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return out
";

/// Signed deltas, floored at zero. ARGV per key: delta, ttl (-1: none). Returns the new values.
const ADJUST_LUA: &str = r"
local out = {}
for i = 1, #KEYS do
  local v = redis.call('INCRBY', KEYS[i], ARGV[2*i-1])
  if v < 0 then
    redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    v = 0
  end
  local ttl = tonumber(ARGV[2*i])
  if ttl >= 0 and redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  out[i] = v
end
return out
";

/// Why a Redis operation failed. The enforcer turns it into `fail_open` or `fail_closed`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("budget store unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("budget store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("budget store answered with an unexpected reply of {0} values")]
    BadReply(usize),
}

impl StoreError {
    /// Stable, low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Timeout(_) => "timeout",
            Self::BadReply(_) => "bad_reply",
        }
    }
}

/// Counters in one Redis, shared by every replica that points at it.
pub struct RedisStore {
    conn: ConnectionManager,
    reserve: Script,
    adjust: Script,
    op_timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("op_timeout", &self.op_timeout)
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
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(op_timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            reserve: Script::new(RESERVE_LUA),
            adjust: Script::new(ADJUST_LUA),
            op_timeout,
        })
    }

    pub(crate) async fn reserve(&self, charges: &[Charge]) -> Result<ReserveOutcome, StoreError> {
        let mut inv = self.reserve.prepare_invoke();
        for c in charges {
            inv.key(redis_key(&c.key))
                .arg(c.amount)
                .arg(c.cap.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)))
                .arg(c.ttl_secs.unwrap_or(-1));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = tokio::time::timeout(self.op_timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout(self.op_timeout))??;
        match reply.split_first() {
            Some((0, used)) if used.len() == charges.len() => Ok(ReserveOutcome::Admitted(
                used.iter().map(|&v| to_u64(v)).collect(),
            )),
            Some((&i, [used])) if i >= 1 && to_u64(i) <= charges.len() as u64 => {
                Ok(ReserveOutcome::Rejected {
                    index: usize::try_from(i - 1).unwrap_or(0),
                    used: to_u64(*used),
                })
            }
            _ => Err(StoreError::BadReply(reply.len())),
        }
    }

    pub(crate) async fn adjust(
        &self,
        deltas: &[(MeterKey, i64, Option<i64>)],
    ) -> Result<Vec<u64>, StoreError> {
        let mut inv = self.adjust.prepare_invoke();
        for (key, delta, ttl) in deltas {
            inv.key(redis_key(key)).arg(*delta).arg(ttl.unwrap_or(-1));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = tokio::time::timeout(self.op_timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout(self.op_timeout))??;
        if reply.len() != deltas.len() {
            return Err(StoreError::BadReply(reply.len()));
        }
        Ok(reply.into_iter().map(to_u64).collect())
    }
}

fn redis_key(key: &MeterKey) -> String {
    format!("{}:{}", key.name, key.window_start)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
