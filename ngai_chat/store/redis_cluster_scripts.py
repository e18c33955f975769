"""Lua scripts of the Redis Cluster store (:mod:`~ngai_chat.store.redis_cluster`).

In a cluster a script may only touch keys of one hash slot, so each script here
touches either one session's keys (all tagged ``{<sessionId>}``) or one
instance-wide index (its own tag), never both; the store updates the indexes
with a second command. ``ARGV[1]`` is the caller's ``clock()`` and ``ARGV[2]``
the replay TTL in seconds, as in :mod:`~ngai_chat.store.redis_scripts`.
"""

from __future__ import annotations

from .redis_scripts import _HEAD

__all__ = [
    "ADMIT",
    "APPEND",
    "CLAIM",
    "CREATE",
    "INDEX_ADD",
    "INDEX_END",
    "INDEX_REM",
    "READ",
    "TICK",
]

# KEYS: hash stream readers
# ARGV: now replay ttl_ms field value [field value ...]
CREATE = (
    _HEAD
    + """
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# A client's live sessions (its own slot), checked and grown in one step: their
# count against ``limit`` (NGAI_MAX_SESSIONS_PER_CLIENT), and the sizes of their
# request bodies, kept in a hash beside the set (same tag), against ``byte_limit``
# (NGAI_MAX_CLIENT_BYTES); sizes of sessions no longer in the set are forgotten
# here. Running sessions that died or finished are pruned by the store beforehand
# (their hashes live on other nodes).
# KEYS: client client_sizes
# ARGV: now replay id ttl_ms score limit byte_limit size
# Returns 1, or {held, first_score, held_bytes, by_bytes}
ADMIT = (
    _HEAD
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[6])
local byte_limit = tonumber(ARGV[7])
local size = tonumber(ARGV[8])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  local held = redis.call('ZCARD', KEYS[1])
  local held_bytes = 0
  if byte_limit > 0 then
    local sizes = redis.call('HGETALL', KEYS[2])
    for i = 1, #sizes, 2 do
      if redis.call('ZSCORE', KEYS[1], sizes[i]) then
        held_bytes = held_bytes + tonumber(sizes[i + 1])
      else
        redis.call('HDEL', KEYS[2], sizes[i])
      end
    end
  end
  local over_count = limit > 0 and held >= limit
  if over_count or (byte_limit > 0 and held_bytes + size > byte_limit) then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {held, first[2] or 'inf', held_bytes, over_count and 0 or 1}
  end
end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[3])
extend(KEYS[1], tonumber(ARGV[4]))
if size > 0 then
  redis.call('HSET', KEYS[2], ARGV[3], size)
  extend(KEYS[2], tonumber(ARGV[4]))
end
return 1
"""
)

# An index (``live``, or a client's sessions): add or rescore one session.
# KEYS: index
# ARGV: score id ttl_ms
INDEX_ADD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

# An index (a client's sessions): forget one session.
# KEYS: index
# ARGV: id
INDEX_REM = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# A session's log ended: out of ``live``, into ``done`` (one tag, one slot).
# KEYS: live done
# ARGV: id done_score ttl_ms
INDEX_END = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 1
"""

# Claimed with a token, so that a claim retried after a failover (its reply
# lost) is recognised as the same claim instead of losing to itself. ``owner``
# is the claiming process: the generation lives while its ``p:`` key does.
# KEYS: hash stream
# ARGV: now replay running_ms owner token
# Returns {won, client}
CLAIM = (
    _HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at', 'client')
if f[2] == ARGV[5] then return {1, f[4]} end
if gone(f) or f[2] or f[3] then return {0} end
redis.call('HSET', KEYS[1], 'claimed', ARGV[5], 'owner', ARGV[4])
local running = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[1], running)
redis.call('PEXPIRE', KEYS[2], running)
return {1, f[4]}
"""
)

# Appends checked against what the writer knows it wrote: ``expected`` is the
# id of the last event this writer appended (-1: not known, append at the end).
# After a failover the log may have lost its newest events (replication is
# asynchronous) or a retried batch may have been written already; the script
# tells which instead of writing past a hole or twice:
#   {-1, last}  the log's last id is not ``expected`` (nothing written)
#   {ids...}    the ids of the events appended (or found appended already)
# ``floor`` (when above the log's last id) moves the counter up first: how a
# writer that cannot restore lost events ends the log after every id it wrote.
# Every call publishes the log's last id on the session's shard channel, which
# the tails of other processes follow.
# KEYS: hash stream readers
# ARGV: now replay maxlen replay_ms expected floor channel, then name data terminal
APPEND = (
    _HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at', 'last')
local ids = {}
if not f[1] then return ids end
local last = tonumber(f[4]) or 0
local expected = tonumber(ARGV[5])
local count = (#ARGV - 7) / 3
if expected >= 0 and last ~= expected then
  if count > 0 and last == expected + count then
    -- written already (the reply was lost): the same last event?
    local entry = redis.call('XRANGE', KEYS[2], '0-' .. last, '0-' .. last)[1]
    if entry and entry[2][2] == ARGV[#ARGV - 2] and entry[2][4] == ARGV[#ARGV - 1] then
      for n = expected + 1, last do ids[#ids + 1] = n end
      return ids
    end
  end
  return {-1, last}
end
if gone(f) or f[3] then return ids end
local floor = tonumber(ARGV[6])
if floor > last then
  redis.call('HSET', KEYS[1], 'last', floor)
end
for i = 8, #ARGV, 3 do
  local n = redis.call('HINCRBY', KEYS[1], 'last', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '0-' .. n, 'n', ARGV[i], 'd', ARGV[i + 1])
  ids[#ids + 1] = n
  if ARGV[i + 2] == '1' then
    redis.call('HSET', KEYS[1], 'terminal_id', n, 'finished_at', ARGV[1])
    for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[4]) end
    break
  elseif n == 1 then
    -- XADD just created the stream: give it the session's TTL.
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  end
end
if #ids > 0 then redis.call('SPUBLISH', ARGV[7], ids[#ids]) end
return ids
"""
)

# KEYS: hash stream
# ARGV: now replay after count
# Returns {gone, entries}: entries as XRANGE gives them
READ = (
    _HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at')
if gone(f) then return {1, {}} end
return {0, redis.call('XRANGE', KEYS[2], '(0-' .. ARGV[3], '+', 'COUNT', ARGV[4])}
"""
)

# KEYS: hash stream readers
# ARGV: now replay running_ms
# Returns {cancelled, readers, client} (liveness is the owner process's key)
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
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
return {f[4] and 1 or 0, redis.call('ZCARD', KEYS[3]), f[5]}
"""
)
