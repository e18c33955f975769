"""The Redis store's Lua scripts: every check-then-write is one script, so it is
atomic across processes (exactly one claim wins, exactly one terminal event).

``KEYS`` and ``ARGV`` are documented above each script; ``ARGV[1]`` is always
the caller's ``clock()`` and ``ARGV[2]`` the replay TTL in seconds.
"""

from __future__ import annotations

import math
import typing as t

__all__ = [
    "APPEND",
    "ATTACH",
    "CANCEL",
    "CLAIM",
    "CREATE",
    "SWEEP",
    "TICK",
    "gone",
    "ms",
]


# Shared head of every script. ``gone`` is MemoryStore._expired: a finished
# session is gone at finished_at + replay_ttl, a pending one at expires_at, a
# running one only when its keys expire (its generation stopped ticking).
# ARGV[1] is always the caller's clock() and ARGV[2] the replay TTL in seconds.
_HEAD = """
local now = tonumber(ARGV[1])
local replay = tonumber(ARGV[2])
local function gone(f)
  if not f[1] then return true end
  if f[3] then return now >= tonumber(f[3]) + replay end
  return (not f[2]) and now >= tonumber(f[1])
end
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
-- A client's sessions (zset), their sizes (hash) and the sizes' sum (see CREATE).
local function client_keys(prefix, client)
  return prefix .. 'c:' .. client, prefix .. 'cb:' .. client, prefix .. 'ct:' .. client
end
local function leave_share(client, sizes, total, id)
  redis.call('ZREM', client, id)
  local size = redis.call('HGET', sizes, id)
  if size then
    redis.call('HDEL', sizes, id)
    redis.call('DECRBY', total, size)
  end
end
"""

# A client's share (NGAI_MAX_SESSIONS_PER_CLIENT, NGAI_MAX_CLIENT_BYTES) is its
# sessions in ``c:<client>`` (a zset scored like ``live``), their request sizes in
# ``cb:<client>`` (a hash) and their sum in ``ct:<client>``, kept up to date as
# sessions are created and end. Gone sessions (a pending one past its deadline, a
# running one whose generation died) stay counted until a create finds the
# client over a limit: then, and only then, it drops them and counts again, so a
# create costs O(1) however many sessions the client holds (a PaaS router without
# NGAI_TRUSTED_PROXIES is one client for everybody), and the counts it trusts can
# only be too high, never too low.
# KEYS: hash stream readers live client sizes total (the last three "" when the
#       session has no client)
# ARGV: now replay id ttl_ms live_score client_limit prefix client_bytes size
#       field value [field value ...]
CREATE = (
    _HEAD
    + """
local client, sizes, total = KEYS[5], KEYS[6], KEYS[7]
local limit = tonumber(ARGV[6])
local byte_limit = tonumber(ARGV[8])
local size = tonumber(ARGV[9])
if client ~= '' then
  -- a few pending sessions past their deadline leave at each create: the share
  -- stays about as big as what the client holds, limits or not
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', client, '-inf', ARGV[1], 'LIMIT', 0, 4)) do
    leave_share(client, sizes, total, id)
  end
end
if client ~= '' and (limit > 0 or byte_limit > 0) then
  local held = redis.call('ZCARD', client)
  local held_bytes = tonumber(redis.call('GET', total) or '0')
  local function over()
    local by_count = limit > 0 and held >= limit
    return by_count or (byte_limit > 0 and held_bytes + size > byte_limit), by_count
  end
  if over() then
    -- Exact, then: drop what is gone, and count again.
    local dropped = redis.call('ZRANGEBYSCORE', client, '-inf', ARGV[1])
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', client, '+inf', '+inf')) do
      if redis.call('EXISTS', ARGV[7] .. 's:' .. id) == 0 then dropped[#dropped + 1] = id end
    end
    for _, id in ipairs(dropped) do redis.call('ZREM', client, id) end
    held, held_bytes = redis.call('ZCARD', client), 0
    local kept = redis.call('HGETALL', sizes)
    for i = 1, #kept, 2 do
      if redis.call('ZSCORE', client, kept[i]) then
        held_bytes = held_bytes + tonumber(kept[i + 1])
      else
        redis.call('HDEL', sizes, kept[i])
      end
    end
    redis.call('SET', total, held_bytes, 'KEEPTTL')
    local refused, by_count = over()
    if refused then
      local first = redis.call('ZRANGE', client, 0, 0, 'WITHSCORES')
      return {held, first[2] or 'inf', held_bytes, by_count and 0 or 1}
    end
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
extend(KEYS[4], tonumber(ARGV[4]))
if client ~= '' then
  redis.call('ZADD', client, ARGV[5], ARGV[3])
  local before = tonumber(redis.call('HGET', sizes, ARGV[3]) or '0')
  if size ~= before then
    redis.call('HSET', sizes, ARGV[3], size)
    redis.call('INCRBY', total, size - before)
  end
  for _, key in ipairs({client, sizes, total}) do extend(key, tonumber(ARGV[4])) end
end
return 1
"""
)

# KEYS: hash stream live
# ARGV: now replay id running_ms owner prefix
# ``owner`` is the claiming process's id: the session's generation lives while
# that process's alive key (``p:<owner>``, renewed by the process) exists.
CLAIM = (
    _HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at', 'client')
-- claimed, or already ended before any generation: nothing to run
if gone(f) or f[2] or f[3] then return 0 end
redis.call('HSET', KEYS[1], 'claimed', '1', 'owner', ARGV[5])
local running = tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[1], running)
redis.call('PEXPIRE', KEYS[2], running)
redis.call('ZADD', KEYS[3], '+inf', ARGV[3])
extend(KEYS[3], running)
if f[4] then
  local client, sizes, total = client_keys(ARGV[6], f[4])
  redis.call('ZADD', client, '+inf', ARGV[3])
  for _, key in ipairs({client, sizes, total}) do extend(key, running) end
end
return 1
"""
)

# The appends of any number of sessions in one script run: a process's group
# commit (RedisStore._run_together) sends all it has queued as one call, so
# neither the process nor Redis pays a command per session. Each session's append
# runs under pcall: one that fails reports its error, the others still land.
# KEYS: live done
# ARGV: now replay maxlen replay_ms prefix, then for each session: its id, its
#       number of events, and name data terminal for each event
# Returns, per session, the ids appended (none when its log had ended or it is
# gone), or {'err', message}.
APPEND = (
    _HEAD
    + """
local prefix = ARGV[5]
local function append(id, first, count)
  local hash, stream = prefix .. 's:' .. id, prefix .. 'e:' .. id
  local f = redis.call('HMGET', hash, 'expires_at', 'claimed', 'finished_at', 'client')
  local ids = {}
  if gone(f) or f[3] then return ids end
  for i = first, first + 3 * (count - 1), 3 do
    local n = redis.call('HINCRBY', hash, 'last', 1)
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[3], '0-' .. n, 'n', ARGV[i], 'd', ARGV[i + 1])
    ids[#ids + 1] = n
    if ARGV[i + 2] == '1' then
      redis.call('HSET', hash, 'terminal_id', n, 'finished_at', ARGV[1])
      for _, key in ipairs({hash, stream, prefix .. 'r:' .. id}) do
        redis.call('PEXPIRE', key, ARGV[4])
      end
      redis.call('ZREM', KEYS[1], id)
      if f[4] then
        local client, sizes, total = client_keys(prefix, f[4])
        leave_share(client, sizes, total, id)
      end
      redis.call('ZADD', KEYS[2], now + replay, id)
      extend(KEYS[2], tonumber(ARGV[4]))
      return ids
    elseif n == 1 then
      -- XADD just created the stream: give it the session's TTL.
      local ttl = redis.call('PTTL', hash)
      if ttl > 0 then redis.call('PEXPIRE', stream, ttl) end
    end
  end
  return ids
end
local replies = {}
local i = 6
while i <= #ARGV do
  local count = tonumber(ARGV[i + 1])
  local ok, ids = pcall(append, ARGV[i], i + 2, count)
  if not ok then
    ids = {'err', type(ids) == 'table' and tostring(ids.err) or tostring(ids)}
  end
  replies[#replies + 1] = ids
  i = i + 2 + 3 * count
end
return replies
"""
)

# KEYS: hash
# ARGV: now replay
# Returns 0 for a gone session, else the process running its generation ("" when
# none is), whose cancel inbox the store then tells.
CANCEL = (
    _HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at', 'owner')
if gone(f) then return 0 end
redis.call('HSET', KEYS[1], 'cancelled', '1')
if f[3] then return '' end
return f[4] or ''
"""
)

# KEYS: hash readers
# ARGV: now replay reader presence_s presence_ms
ATTACH = (
    _HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at')
if gone(f) then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
-- Never outlive the session itself.
local ms = tonumber(ARGV[5])
local left = redis.call('PTTL', KEYS[1])
if left > 0 and left < ms then ms = left end
redis.call('PEXPIRE', KEYS[2], ms)
return 1
"""
)

# KEYS: hash stream readers live
# ARGV: now replay running_ms prefix
# (liveness is the owner process's key, renewed apart from ticks)
TICK = (
    _HEAD
    + """
local f = redis.call(
  'HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at', 'cancelled', 'client')
if gone(f) then return {1, 0} end
if f[2] and not f[3] then
  local running = tonumber(ARGV[3])
  redis.call('PEXPIRE', KEYS[1], running)
  redis.call('PEXPIRE', KEYS[2], running)
  extend(KEYS[4], running)
  if f[5] then
    for _, key in ipairs({client_keys(ARGV[4], f[5])}) do extend(key, running) end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
return {f[4] and 1 or 0, redis.call('ZCARD', KEYS[3])}
"""
)

# KEYS: live done
# ARGV: now replay prefix
SWEEP = (
    _HEAD
    + """
local prefix = ARGV[3]
local freed = 0
local function drop(index, id)
  redis.call('DEL', prefix .. 's:' .. id, prefix .. 'e:' .. id, prefix .. 'r:' .. id)
  redis.call('ZREM', index, id)
  freed = freed + 1
end
-- Pending past expires_at, finished past their replay: scores are those deadlines.
for _, index in ipairs({KEYS[1], KEYS[2]}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[1])) do
    drop(index, id)
  end
end
-- Running sessions whose generation died: their hash expired by TTL.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '+inf', '+inf')) do
  if redis.call('EXISTS', prefix .. 's:' .. id) == 0 then drop(KEYS[1], id) end
end
return freed
"""
)


def ms(seconds: float) -> int:
    """Whole milliseconds for PEXPIRE/PX, at least 1 (0 would be an error)."""
    return max(1, math.ceil(seconds * 1000))


def gone(fields: t.Sequence[str | None], now: float, replay_ttl: float) -> bool:
    """The Lua ``gone`` rule, for reads done without a script.

    :param fields: ``expires_at``, ``claimed``, ``finished_at`` from the hash.
    """
    expires_at, claimed, finished_at = fields[:3]
    if expires_at is None:
        return True
    if finished_at is not None:
        return now >= float(finished_at) + replay_ttl
    return claimed is None and now >= float(expires_at)
