//! The Lua scripts behind the Redis budget store. Each runs atomically in Redis, so whatever one
//! script checks still holds when it writes.
//!
//! Every counter travels as three keys, in this order: the counter `K` (everything charged
//! against the limit: settled spend, reservations, and the slices replicas have pre-borrowed),
//! `K:leases` (hash: lease id → what that lease still holds — its unused balance plus the
//! reservations served from it and not yet settled) and `K:lease_exp` (sorted set: lease id →
//! expiry in Redis milliseconds). A lease is part of `K` from the moment it is granted, so
//! a cap check on `K` alone is exact whether or not replicas borrow. The three keys share the
//! counter's `{PACK/ENV}` hash tag (one Redis Cluster slot).
//!
//! Expired leases (a replica that died, or stalled past its lease) are dropped by `reserve`, the
//! one script that checks caps, before it checks: their holding is subtracted from `K`. Nothing
//! else needs a timer. Times come from Redis' own clock (`TIME`), never from a replica's.

/// Shared Lua helpers, prepended to every script.
const PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Add a signed delta to counter k, flooring at zero; the new value.
local function add(k, d)
  if d == 0 then return tonumber(redis.call('GET', k) or '0') end
  local v = redis.call('INCRBY', k, d)
  if v < 0 then
    redis.call('SET', k, 0, 'KEEPTTL')
    v = 0
  end
  return v
end
-- Take up to amt out of lease id (and out of k): unused balance given back.
local function give_back(k, lk, ek, id, amt)
  local held = tonumber(redis.call('HGET', lk, id) or '-1')
  if held < 0 then return end
  local r = math.min(amt, held)
  add(k, -r)
  if held - r <= 0 then
    redis.call('HDEL', lk, id)
    redis.call('ZREM', ek, id)
  else
    redis.call('HINCRBY', lk, id, -r)
  end
end
-- Drop the leases of k that expired: what they held is no longer charged.
local function purge(k, lk, ek, now)
  local gone = redis.call('ZRANGEBYSCORE', ek, '-inf', now)
  for _, id in ipairs(gone) do
    local held = tonumber(redis.call('HGET', lk, id) or '0')
    if held > 0 then add(k, -held) end
    redis.call('HDEL', lk, id)
    redis.call('ZREM', ek, id)
  end
end
";

/// All-or-nothing reserve, optionally granting leases.
///
/// ARGV[1] = lease TTL in ms; then per counter 5 values: need (charged to `K` for this request),
/// cap (-1: unchecked), ttl of the keys in seconds (-1: none), grant (slice to lease on top,
/// 0: none), lease id (`-` when no grant).
/// Returns `{0, value_1, granted_1, value_2, granted_2, ..}` when applied, or `{i, value_i}`
/// when counter `i` (1-based) did not fit (nothing charged, expired leases still dropped).
/// A grant is all or nothing too: the whole slice when it fits under the cap, else none.
const RESERVE_BODY: &str = r"
local ttl_ms = tonumber(ARGV[1])
local now = now_ms()
local n = #KEYS / 3
for i = 1, n do
  purge(KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], now)
end
for i = 1, n do
  local need = tonumber(ARGV[5*i-3])
  local cap = tonumber(ARGV[5*i-2])
  if cap >= 0 then
    local cur = tonumber(redis.call('GET', KEYS[3*i-2]) or '0')
    if cur + need > cap then
      return {i, cur}
    end
  end
end
local out = {0}
for i = 1, n do
  local k, lk, ek = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local need = tonumber(ARGV[5*i-3])
  local cap = tonumber(ARGV[5*i-2])
  local ttl = tonumber(ARGV[5*i-1])
  local grant = tonumber(ARGV[5*i])
  local id = ARGV[5*i+1]
  local v = add(k, need)
  local granted = 0
  if grant > 0 and (cap < 0 or v + grant <= cap) then
    v = add(k, grant)
    redis.call('HINCRBY', lk, id, grant)
    redis.call('ZADD', ek, now + ttl_ms, id)
    granted = grant
  end
  if ttl >= 0 then
    redis.call('EXPIRE', k, ttl)
    if granted > 0 then
      redis.call('EXPIRE', lk, ttl)
      redis.call('EXPIRE', ek, ttl)
    end
  end
  out[2*i] = v
  out[2*i+1] = granted
end
return out
";

/// Settle and release. Per counter 5 values: delta (actual − reserved), ttl (-1: none), lease id
/// (`-`: a reservation made in Redis directly), reserved, actual. A reservation served from a
/// lease leaves it (the lease holds `reserved` less) and the counter moves by the delta; when the
/// lease already expired, its holding — this estimate included — left the counter with it, so
/// the counter gets the actual usage. Returns the counters' new values.
const ADJUST_BODY: &str = r"
local out = {}
for i = 1, #KEYS / 3 do
  local k, lk, ek = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local delta = tonumber(ARGV[5*i-4])
  local ttl = tonumber(ARGV[5*i-3])
  local id = ARGV[5*i-2]
  local v
  if id == '-' then
    v = add(k, delta)
  else
    local held = redis.call('HGET', lk, id)
    if held then
      local left = tonumber(held) - tonumber(ARGV[5*i-1])
      if left <= 0 then
        redis.call('HDEL', lk, id)
        redis.call('ZREM', ek, id)
      else
        redis.call('HSET', lk, id, left)
      end
      v = add(k, delta)
    else
      v = add(k, tonumber(ARGV[5*i]))
    end
  end
  if ttl >= 0 and redis.call('TTL', k) < 0 then redis.call('EXPIRE', k, ttl) end
  out[i] = v
end
return out
";

/// Give unused balances back. Per counter 2 values: lease id, amount. Returns nothing useful.
const GIVE_BACK_BODY: &str = r"
for i = 1, #KEYS / 3 do
  give_back(KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i], ARGV[2*i-1], tonumber(ARGV[2*i]))
end
return 0
";

/// Keep leases with reservations in flight alive. ARGV[1] = lease TTL in ms; then per counter
/// the lease id. Returns, per lease, 1 if it was renewed and 0 if Redis no longer has it.
const RENEW_BODY: &str = r"
local ttl_ms = tonumber(ARGV[1])
local now = now_ms()
local out = {}
for i = 1, #KEYS / 3 do
  local id = ARGV[i+1]
  if redis.call('HEXISTS', KEYS[3*i-1], id) == 1 then
    redis.call('ZADD', KEYS[3*i], now + ttl_ms, id)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
";

fn with_prelude(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

/// The four scripts, compiled once per store.
pub(crate) struct Scripts {
    pub(crate) reserve: redis::Script,
    pub(crate) adjust: redis::Script,
    pub(crate) give_back: redis::Script,
    pub(crate) renew: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            reserve: redis::Script::new(&with_prelude(RESERVE_BODY)),
            adjust: redis::Script::new(&with_prelude(ADJUST_BODY)),
            give_back: redis::Script::new(&with_prelude(GIVE_BACK_BODY)),
            renew: redis::Script::new(&with_prelude(RENEW_BODY)),
        }
    }
}

/// The three keys of one counter, in script order.
pub(crate) fn keys_of(counter: &str) -> [String; 3] {
    [
        counter.to_owned(),
        format!("{counter}:leases"),
        format!("{counter}:lease_exp"),
    ]
}

/// Lease id placeholder for "no lease".
pub(crate) const NO_LEASE: &str = "-";
