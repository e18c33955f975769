"""The Redis store: sessions and event logs shared by every worker and instance.

The only module of the package that imports :mod:`redis`. Keys, all under
``key_prefix`` and all with a TTL, so Redis never fills with dead sessions::

    <prefix>s:<id>   hash    request, referer, created_at, expires_at, claimed,
                             cancelled, last (event counter), terminal_id, finished_at
    <prefix>e:<id>   stream  the event log; entry ``0-N`` is event N (fields n, d)
    <prefix>r:<id>   zset    attached readers, scored by when their presence lapses
    <prefix>a:<id>   string  present while the generation ticks (TTL ``liveness_ttl``)
    <prefix>live     zset    pending and running sessions, scored by their deadline
                             (``+inf`` while running), for :meth:`RedisStore.count_live`
    <prefix>done     zset    finished sessions, scored by the end of their replay
    <prefix>c:<client> zset  one client's pending and running sessions, scored
                             like ``live``, for ``NGAI_MAX_SESSIONS_PER_CLIENT``

Redis TTLs only free memory and follow Redis's own clock. Expiry as the contract
defines it is decided by comparing the deadlines stored in the hash with
``clock()``, the same rule as :class:`~ngai_chat.store.memory.MemoryStore`, so an
injected clock behaves the same on both stores.

Every check-then-write (claim, append, cancel, attach, tick, sweep) is one Lua
script, so it is atomic across processes: exactly one claim wins and exactly one
terminal event is written, however many writers race. Scripts build a session's
key names from the prefix, so this store targets a single Redis server (or a
replicated primary), not Redis Cluster.

Readers waiting for a session generated in another process do not each hold a
connection in ``XREAD BLOCK``: one :class:`_Tail` per store blocks in a single
``XREAD`` on every stream someone waits for, on a connection of its own, and
wakes the waiters of the streams that grew. Connections to Redis are bounded by
processes, not by open streams.

Readers in the process that runs a session's generation do not go to Redis at
all: every event this process appends is also kept in :class:`_LocalLogs`, and
they are served from there (a second tab or a reconnect on the same instance
costs no round trip per chunk). Readers elsewhere read the Redis Stream.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
import typing as t

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import StoreUnavailable
from .base import TERMINAL_EVENTS
from .base import ClientAtLimit
from .base import Event
from .base import GenerationSignals
from .base import SessionInfo

__all__ = ["RedisStore"]

_P = t.ParamSpec("_P")
_R = t.TypeVar("_R")


class _LocalLog:
    """The events one process appended to one session's log, from id 1 on."""

    __slots__ = ("changed", "ended_at", "events")

    def __init__(self) -> None:
        self.events: list[Event] = []
        #: patched by gevent in a worker: waiting yields to other greenlets
        self.changed = threading.Condition()
        self.ended_at: float | None = None


class _LocalLogs:
    """Events this process appended, kept for the readers in this process.

    A log is kept only while it mirrors Redis exactly: it must start at event 1
    and grow by one; anything else (another process appended, an append failed)
    drops it and its readers go back to Redis. It leaves ``linger`` seconds after
    its terminal event.

    :param linger: seconds a finished log stays, at most the replay TTL (so
        it is gone before the session is).
    :param clock: the store's wall clock.
    """

    def __init__(self, linger: float, clock: t.Callable[[], float]) -> None:
        self.linger = linger
        self.clock = clock
        self._logs: dict[str, _LocalLog] = {}

    def record(self, session_id: str, event: Event | None) -> None:
        """Keep ``event`` (just appended to Redis), or drop the log when ``None``."""
        log = self._logs.get(session_id)
        if event is None or (log is None and event.id != 1):
            self._drop(session_id)
            return
        if log is None:
            log = self._logs[session_id] = _LocalLog()
        if event.id != len(log.events) + 1:
            self._drop(session_id)
            return
        with log.changed:
            log.events.append(event)
            if event.terminal:
                log.ended_at = self.clock()
            log.changed.notify_all()
        if event.terminal:
            self._forget_ended()

    def read(self, session_id: str, after: int, timeout: float) -> list[Event] | None:
        """Like :meth:`RedisStore.read`, or ``None`` when this log is not kept here."""
        log = self._logs.get(session_id)
        if log is None or after < 0:
            return None
        if log.ended_at is not None and self.clock() - log.ended_at >= self.linger:
            self._drop(session_id)
            return None
        deadline = time.monotonic() + timeout
        with log.changed:
            while True:
                if self._logs.get(session_id) is not log:
                    return None
                if len(log.events) > after:
                    return log.events[after:]
                if log.ended_at is not None:
                    return None  # nothing past the end here: wait the Redis way
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                log.changed.wait(remaining)

    def _drop(self, session_id: str) -> None:
        log = self._logs.pop(session_id, None)
        if log is not None:
            with log.changed:
                log.changed.notify_all()  # its readers go to Redis

    def _forget_ended(self) -> None:
        now = self.clock()
        for session_id, log in list(self._logs.items()):
            if log.ended_at is not None and now - log.ended_at >= self.linger:
                self._drop(session_id)


class _Followed:
    """A stream the tail follows: the newest event id seen, and who waits on it."""

    __slots__ = ("changed", "failure", "idle_since", "latest", "waiters")

    def __init__(self, latest: int, lock: threading.Lock) -> None:
        self.latest = latest
        self.waiters = 0
        self.idle_since = 0.0
        self.changed = threading.Condition(lock)
        self.failure: Exception | None = None


class _Tail:
    """Waits for new events on many streams with one blocking ``XREAD``.

    A poller thread (a greenlet under gevent) blocks in ``XREAD`` on every stream
    that has a waiter, and wakes the waiters of the streams that grew. A stream
    stays in the ``XREAD`` for ``linger`` seconds after its last waiter left, so a
    reader coming back for the next event finds it followed already.

    :param client: a Redis client on a pool of its own.
    :param block: seconds one ``XREAD`` blocks: how long a stream new to the set
        may wait to join it.
    :param linger: seconds a stream stays followed without waiters.
    """

    def __init__(self, client: redis.Redis, *, block: float = 0.1, linger: float = 2.0) -> None:
        self._client = client
        self._block_ms = max(1, int(block * 1000))
        self._linger = linger
        self._lock = threading.Lock()
        self._streams: dict[str, _Followed] = {}
        self._poller: threading.Thread | None = None

    def wait(self, stream_key: str, after: int, timeout: float) -> bool:
        """Wait until ``stream_key`` has an event past ``after``.

        :return: ``False`` when ``timeout`` passed first.
        :raises StoreUnavailable: Redis failed meanwhile.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            followed = self._streams.get(stream_key)
            if followed is None:
                followed = self._streams[stream_key] = _Followed(after, self._lock)
            followed.waiters += 1
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, daemon=True)
                self._poller.start()
            try:
                while followed.latest <= after:
                    if followed.failure is not None:
                        raise StoreUnavailable() from followed.failure
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    followed.changed.wait(remaining)
                return True
            finally:
                followed.waiters -= 1
                followed.idle_since = time.monotonic()

    def _poll(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                for key, followed in list(self._streams.items()):
                    if not followed.waiters and now - followed.idle_since >= self._linger:
                        del self._streams[key]
                if not self._streams:
                    self._poller = None
                    return
                cursors: dict[t.Any, t.Any] = {
                    key: f"0-{followed.latest}" for key, followed in self._streams.items()
                }
            try:
                response = self._client.xread(cursors, count=1, block=self._block_ms)
            except (redis.RedisError, OSError) as exc:
                with self._lock:  # every waiter hears of it; the next wait starts afresh
                    for followed in self._streams.values():
                        followed.failure = exc
                        followed.changed.notify_all()
                    self._streams.clear()
                    self._poller = None
                return
            with self._lock:
                for key, entries in _streams_of(response):
                    grown = self._streams.get(key)
                    if grown is not None and entries:
                        newest = int(entries[-1][0].partition("-")[2])
                        grown.latest = max(grown.latest, newest)
                        grown.changed.notify_all()


def _text(value: str) -> bytes:
    """Encode text for Redis ourselves: hiredis' packer would refuse a lone
    surrogate (from a client's ``"\ud800"`` JSON escape) with a foreign error.
    """
    return value.encode("utf-8", "surrogatepass")


def _wrap_errors(method: t.Callable[_P, _R]) -> t.Callable[_P, _R]:
    """Translate any Redis or socket failure into :class:`StoreUnavailable`.

    Callers (views, relay, sweeper) only know the store interface; a
    ``redis.ConnectionError`` escaping would become a 500 with a traceback.
    """

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailable(
                "The session store (Redis) is unreachable or failing; try again shortly."
            ) from exc

    return wrapper


# Shared head of every script. ``gone`` is MemoryStore._expired: a finished
# session is gone at finished_at + replay_ttl, a pending one at expires_at, a
# running one only when its keys expire (its generation stopped ticking).
# ARGV[1] is always the caller's clock() and ARGV[2] the replay TTL in seconds.
_LUA_HEAD = """
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
"""

# KEYS: hash stream readers alive live client ("" when the session has no client)
# ARGV: now replay id ttl_ms live_score client_limit prefix field value [field value ...]
_LUA_CREATE = (
    _LUA_HEAD
    + """
local client = KEYS[6]
local limit = tonumber(ARGV[6])
if client ~= '' and limit > 0 then
  -- The client's share, exact: pending ones past their deadline are gone, and
  -- so are running ones whose hash expired (their generation died).
  redis.call('ZREMRANGEBYSCORE', client, '-inf', ARGV[1])
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', client, '+inf', '+inf')) do
    if redis.call('EXISTS', ARGV[7] .. 's:' .. id) == 0 then redis.call('ZREM', client, id) end
  end
  local held = redis.call('ZCARD', client)
  if held >= limit then
    local first = redis.call('ZRANGE', client, 0, 0, 'WITHSCORES')
    return {held, first[2]}
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[3])
extend(KEYS[5], tonumber(ARGV[4]))
if client ~= '' then
  redis.call('ZADD', client, ARGV[5], ARGV[3])
  extend(client, tonumber(ARGV[4]))
end
return 1
"""
)

# KEYS: hash stream alive live
# ARGV: now replay id running_ms liveness_ms prefix
_LUA_CLAIM = (
    _LUA_HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at', 'client')
-- claimed, or already ended before any generation: nothing to run
if gone(f) or f[2] or f[3] then return 0 end
redis.call('HSET', KEYS[1], 'claimed', '1')
local running = tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[1], running)
redis.call('PEXPIRE', KEYS[2], running)
-- Alive from the claim on, so a reader elsewhere does not take the gap before
-- the generation's first tick for a dead generation.
redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
redis.call('ZADD', KEYS[4], '+inf', ARGV[3])
extend(KEYS[4], running)
if f[4] then
  local client = ARGV[6] .. 'c:' .. f[4]
  redis.call('ZADD', client, '+inf', ARGV[3])
  extend(client, running)
end
return 1
"""
)

# KEYS: hash stream readers alive live done
# ARGV: now replay id maxlen replay_ms prefix, then name data terminal for each event
_LUA_APPEND = (
    _LUA_HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at', 'client')
local ids = {}
if gone(f) or f[3] then return ids end
for i = 7, #ARGV, 3 do
  local n = redis.call('HINCRBY', KEYS[1], 'last', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '0-' .. n, 'n', ARGV[i], 'd', ARGV[i + 1])
  ids[#ids + 1] = n
  if ARGV[i + 2] == '1' then
    redis.call('HSET', KEYS[1], 'terminal_id', n, 'finished_at', ARGV[1])
    for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[5]) end
    redis.call('ZREM', KEYS[5], ARGV[3])
    if f[4] then redis.call('ZREM', ARGV[6] .. 'c:' .. f[4], ARGV[3]) end
    redis.call('ZADD', KEYS[6], now + replay, ARGV[3])
    extend(KEYS[6], tonumber(ARGV[5]))
    return ids
  elseif n == 1 then
    -- XADD just created the stream: give it the session's TTL.
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  end
end
return ids
"""
)

# KEYS: hash
# ARGV: now replay
_LUA_CANCEL = (
    _LUA_HEAD
    + """
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at')
if gone(f) then return 0 end
redis.call('HSET', KEYS[1], 'cancelled', '1')
return 1
"""
)

# KEYS: hash readers
# ARGV: now replay reader presence_s presence_ms
_LUA_ATTACH = (
    _LUA_HEAD
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

# KEYS: hash stream readers alive live
# ARGV: now replay running_ms liveness_ms prefix
_LUA_TICK = (
    _LUA_HEAD
    + """
local f = redis.call(
  'HMGET', KEYS[1], 'expires_at', 'claimed', 'finished_at', 'cancelled', 'client')
if gone(f) then return {1, 0} end
if f[2] and not f[3] then
  local running = tonumber(ARGV[3])
  redis.call('PEXPIRE', KEYS[1], running)
  redis.call('PEXPIRE', KEYS[2], running)
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
  extend(KEYS[5], running)
  if f[5] then extend(ARGV[5] .. 'c:' .. f[5], running) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
return {f[4] and 1 or 0, redis.call('ZCARD', KEYS[3])}
"""
)

# KEYS: live done
# ARGV: now replay prefix
_LUA_SWEEP = (
    _LUA_HEAD
    + """
local prefix = ARGV[3]
local freed = 0
local function drop(index, id)
  redis.call('DEL', prefix .. 's:' .. id, prefix .. 'e:' .. id,
             prefix .. 'r:' .. id, prefix .. 'a:' .. id)
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


def _ms(seconds: float) -> int:
    """Whole milliseconds for PEXPIRE/PX, at least 1 (0 would be an error)."""
    return max(1, math.ceil(seconds * 1000))


def _gone(fields: t.Sequence[str | None], now: float, replay_ttl: float) -> bool:
    """The Lua ``gone`` rule, for reads done without a script.

    :param fields: ``expires_at``, ``claimed``, ``finished_at`` from the hash.
    """
    expires_at, claimed, finished_at = fields[:3]
    if expires_at is None:
        return True
    if finished_at is not None:
        return now >= float(finished_at) + replay_ttl
    return claimed is None and now >= float(expires_at)


def _streams_of(response: t.Any) -> list[tuple[str, list[t.Any]]]:
    """The ``(key, entries)`` of an ``XREAD`` reply on any number of streams
    (RESP2 ``[[key, entries], …]`` or RESP3 ``{key: [entries]}``).
    """
    if not response:
        return []
    if isinstance(response, dict):
        return [
            (key, list(value[0]) if value and isinstance(value[0], list) else list(value))
            for key, value in response.items()
        ]
    return [(key, list(entries)) for key, entries in response]


def _stream_entries(response: t.Any) -> list[t.Any]:
    """The ``(id, fields)`` entries of an ``XREAD`` reply on one stream.

    RESP2 replies ``[[key, entries]]`` and RESP3 ``{key: [entries]}``; a
    ``?protocol=3`` in the URL must not break reading.
    """
    if not response:
        return []
    if isinstance(response, dict):
        (value,) = response.values()
        if value and isinstance(value[0], list):
            return list(value[0])
        return list(value)
    return list(response[0][1])


class RedisStore:
    """Sessions and event logs in Redis, shared by any number of processes.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL (``REDIS_URL``).
    :param replay_ttl: seconds a finished log stays readable.
    :param clock: wall-clock source, injectable for tests. Every expiry decision
        compares deadlines with it; Redis TTLs are computed from it as durations.
    :param key_prefix: prefix of every key, so that several apps (or test runs)
        can share one Redis database.
    :param heartbeat: seconds between a reader's :meth:`attach` calls; a reader
        that stops calling lapses after ``2 * heartbeat + presence_grace``.
    :param presence_grace: seconds of slack on top of two missed heartbeats.
    :param liveness_ttl: seconds a generation stays "alive" after its last
        :meth:`tick`.
    :param running_ttl: seconds the keys of a claimed session live after the
        last tick, so the sessions of a dead instance vanish too. Default: the
        larger of ``replay_ttl`` and 60, so a dead generation can be read (and
        ended with an error) about as long as a finished one.
    :param max_events: the event stream is capped near this length (the relay
        ends a longer generation with ``too_long`` first).
    :param read_batch: at most this many events per :meth:`read` call, so a long
        replay does not stall the worker parsing one huge reply.
    :param socket_timeout: seconds to wait for any reply; blocking reads wait in
        slices shorter than this.
    :param socket_connect_timeout: seconds to wait for a connection.
    :param max_connections: connections for short commands; callers queue for
        one (up to ``socket_timeout``) when all are busy.
    :param client_name: ``CLIENT SETNAME`` for every connection, to tell this
        app's clients apart in ``CLIENT LIST``.
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        replay_ttl: float,
        clock: t.Callable[[], float] = time.time,
        key_prefix: str = "ngai:",
        heartbeat: float = 15.0,
        presence_grace: float = 5.0,
        liveness_ttl: float = 5.0,
        running_ttl: float | None = None,
        max_events: int = 20000,
        read_batch: int = 1000,
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 2.0,
        max_connections: int = 256,
        client_name: str | None = None,
    ) -> None:
        self.replay_ttl = float(replay_ttl)
        self.clock = clock
        self.key_prefix = key_prefix
        #: seconds an attached reader stays counted without refreshing
        self.presence_ttl = 2 * heartbeat + presence_grace
        self.liveness_ttl = liveness_ttl
        self.running_ttl = max(self.replay_ttl, 60.0) if running_ttl is None else running_ttl
        # Headroom over max_events so the relay's own terminal ``too_long``
        # event never pushes the first events out.
        self.max_events = max_events + 16
        self.read_batch = read_batch
        options: dict[str, t.Any] = {
            "decode_responses": True,
            # Replies decode as they were encoded by _text: any Python str
            # round-trips, a lone surrogate from a JSON "\ud800" escape too.
            "encoding_errors": "surrogatepass",
            # RESP2: plain reply shapes, and no RESP3 push handling to run
            # beside gevent.
            "protocol": 2,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            # No automatic retries: a retried append whose reply was lost would
            # write the event twice. One failure is one StoreUnavailable; a dead
            # pooled connection is replaced on its next checkout.
            "retry": Retry(NoBackoff(), 0),
            "client_name": client_name,
        }
        self._pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=socket_timeout, **options
        )
        # the tail's blocking XREAD holds its connection: give it a pool of its own
        self._blocking_pool = redis.ConnectionPool.from_url(url, max_connections=2, **options)
        self._redis = redis.Redis(connection_pool=self._pool)
        self._blocking_redis = redis.Redis(connection_pool=self._blocking_pool)
        self._tail = _Tail(self._blocking_redis)
        # Script objects run EVALSHA and reload the script after NOSCRIPT, so a
        # restarted (emptied) Redis needs nothing from us.
        register = self._redis.register_script
        self._create = register(_LUA_CREATE)
        self._claim = register(_LUA_CLAIM)
        self._append = register(_LUA_APPEND)
        self._cancel = register(_LUA_CANCEL)
        self._attach = register(_LUA_ATTACH)
        self._tick = register(_LUA_TICK)
        self._sweep = register(_LUA_SWEEP)
        self._live_key = f"{key_prefix}live"
        self._done_key = f"{key_prefix}done"
        self._local = _LocalLogs(linger=min(10.0, self.replay_ttl), clock=clock)

    def _keys(self, session_id: str) -> tuple[str, str, str, str]:
        """Hash, stream, readers and alive keys of one session."""
        p = self.key_prefix
        return (
            f"{p}s:{session_id}",
            f"{p}e:{session_id}",
            f"{p}r:{session_id}",
            f"{p}a:{session_id}",
        )

    def _args(self, now: float, *rest: t.Any) -> list[t.Any]:
        # repr() keeps every float exact, so Lua and Python compare the same
        # deadlines to the same clock readings.
        return [repr(now), repr(self.replay_ttl), *rest]

    @_wrap_errors
    def create(self, session: SessionInfo, client_limit: int = 0) -> ClientAtLimit | None:
        """Store a new pending session; it is gone after ``session.expires_at``.

        :param session: the session to store; an existing one with the same id is
            replaced.
        :param client_limit: when above 0, refuse it if ``session.client`` holds
            this many live sessions already (checked and created in one script).
        :return: ``None`` when stored, else what the client holds.
        """
        now = self.clock()
        fields: dict[str, str | bytes] = {
            "request": _text(
                json.dumps(session.request, ensure_ascii=False, separators=(",", ":"))
            ),
            "created_at": repr(session.created_at),
            "expires_at": repr(session.expires_at),
        }
        if session.referer is not None:
            fields["referer"] = _text(session.referer)
        if session.client:
            fields["client"] = _text(session.client)
        if session.claimed:
            fields["claimed"] = "1"
        if session.cancelled:
            fields["cancelled"] = "1"
        if session.claimed:  # stored as running: no deadline but the running TTL
            ttl_ms, score = _ms(self.running_ttl), "+inf"
        else:
            ttl_ms, score = _ms(session.expires_at - now), repr(session.expires_at)
        pairs = [item for pair in fields.items() for item in pair]
        client_key = _text(f"{self.key_prefix}c:{session.client}") if session.client else ""
        reply = self._create(
            keys=[*self._keys(session.id), self._live_key, client_key],
            args=self._args(now, session.id, ttl_ms, score, client_limit, self.key_prefix, *pairs),
        )
        if isinstance(reply, list):
            held, first = reply
            first_score = float(first)
            return ClientAtLimit(
                held=int(held), next_expiry=first_score if math.isfinite(first_score) else None
            )
        return None

    @_wrap_errors
    def get(self, session_id: str) -> SessionInfo | None:
        """The session, or ``None`` if unknown or expired.

        :param session_id: any string; ones that name no session give ``None``.
        """
        h = t.cast("dict[str, str]", self._redis.hgetall(self._keys(session_id)[0]))
        if not h:
            return None
        fields = (h.get("expires_at"), h.get("claimed"), h.get("finished_at"))
        if _gone(fields, self.clock(), self.replay_ttl):
            return None
        terminal_id = h.get("terminal_id")
        return SessionInfo(
            id=session_id,
            request=json.loads(h["request"]),
            referer=h.get("referer"),
            created_at=float(h["created_at"]),
            expires_at=float(h["expires_at"]),
            claimed="claimed" in h,
            terminal_id=None if terminal_id is None else int(terminal_id),
            cancelled="cancelled" in h,
            client=h.get("client", ""),
        )

    @_wrap_errors
    def claim(self, session_id: str) -> bool:
        """Mark the session running; ``True`` for the one caller that wins.

        The session's keys then live ``running_ttl`` past the generation's last
        :meth:`tick` instead of until ``expires_at``.

        :param session_id: the session to claim.
        """
        hash_key, stream_key, _, alive_key = self._keys(session_id)
        won = self._claim(
            keys=[hash_key, stream_key, alive_key, self._live_key],
            args=self._args(
                self.clock(),
                session_id,
                _ms(self.running_ttl),
                _ms(self.liveness_ttl),
                self.key_prefix,
            ),
        )
        return bool(won)

    def append(self, session_id: str, name: str, data: str) -> int | None:
        """Append one event (see :meth:`append_many`)."""
        ids = self.append_many(session_id, [(name, data)])
        return ids[0] if ids else None

    def append_many(self, session_id: str, events: t.Sequence[tuple[str, str]]) -> list[int]:
        """Append events in one round trip; readers blocked in :meth:`read` wake.

        A terminal event also starts the replay TTL of every key of the session.
        If Redis fails after running the script but before replying, this raises
        although the events were written.

        :param session_id: the session whose log grows.
        :param events: ``(name, data)`` pairs, in order.
        :return: the ids of the events appended: all of them, fewer when a
            terminal event ended the log, none when it had ended already or the
            session is gone.
        """
        try:
            ids = self._append_to_redis(session_id, events)
        except StoreUnavailable:
            self._local.record(session_id, None)
            raise
        if events and not ids:  # ended by someone else: stop mirroring it
            self._local.record(session_id, None)
        for new_id, (name, data) in zip(ids, events, strict=False):
            self._local.record(session_id, Event(new_id, name, data))
        return ids

    @_wrap_errors
    def _append_to_redis(self, session_id: str, events: t.Sequence[tuple[str, str]]) -> list[int]:
        args = self._args(
            self.clock(), session_id, self.max_events, _ms(self.replay_ttl), self.key_prefix
        )
        for name, data in events:
            args += [_text(name), _text(data), "1" if name in TERMINAL_EVENTS else "0"]
        ids = self._append(
            keys=[*self._keys(session_id), self._live_key, self._done_key], args=args
        )
        return [int(new_id) for new_id in ids]

    @_wrap_errors
    def read(self, session_id: str, after: int, timeout: float) -> list[Event]:
        """Events with ids greater than ``after``, waiting up to ``timeout``
        seconds for the first one. ``[]`` on timeout or when the session is gone.

        Returns at most ``read_batch`` events; call again for the rest.

        :param session_id: the session to read.
        :param after: the last event id the caller has (0 for none).
        :param timeout: seconds to wait when no event past ``after`` exists yet.
        """
        local = self._local.read(session_id, after, timeout)
        if local is not None:
            return local
        deadline = time.monotonic() + timeout
        hash_key, stream_key, _, _ = self._keys(session_id)
        since = f"0-{max(after, 0)}"
        # One round trip: is the session there, and has it events already?
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(hash_key, ["expires_at", "claimed", "finished_at"])
        pipe.xread({stream_key: since}, count=self.read_batch)
        fields, response = pipe.execute()
        if _gone(fields, self.clock(), self.replay_ttl):
            return []
        events = self._events(response)
        if events or timeout <= 0:
            return events
        while self._tail.wait(stream_key, after, deadline - time.monotonic()):
            response = self._redis.xread({stream_key: since}, count=self.read_batch)
            events = self._events(response)
            if events:
                return events
        return []

    @staticmethod
    def _events(response: t.Any) -> list[Event]:
        return [
            Event(id=int(entry_id.partition("-")[2]), name=fields["n"], data=fields["d"])
            for entry_id, fields in _stream_entries(response)
        ]

    @_wrap_errors
    def cancel(self, session_id: str) -> bool:
        """Set the cancel flag; ``False`` when the session is unknown.

        The generation sees it on its next :meth:`tick`.

        :param session_id: the session to cancel.
        """
        hash_key = self._keys(session_id)[0]
        return bool(self._cancel(keys=[hash_key], args=self._args(self.clock())))

    @_wrap_errors
    def attach(self, session_id: str, reader_id: str) -> None:
        """Record (or refresh) an attached reader. Readers call it at least once
        per heartbeat interval while attached.

        :param session_id: the session being read.
        :param reader_id: unique per open stream, in every process.
        """
        hash_key, _, readers_key, _ = self._keys(session_id)
        self._attach(
            keys=[hash_key, readers_key],
            args=self._args(
                self.clock(), reader_id, repr(self.presence_ttl), _ms(self.presence_ttl)
            ),
        )

    @_wrap_errors
    def detach(self, session_id: str, reader_id: str) -> None:
        """Forget an attached reader.

        :param session_id: the session that was read.
        :param reader_id: as given to :meth:`attach`.
        """
        self._redis.zrem(self._keys(session_id)[2], reader_id)

    @_wrap_errors
    def tick(self, session_id: str) -> GenerationSignals:
        """Report cancel and readers, and mark the generation alive, in one
        round trip. A gone session reports ``cancelled`` so its generation stops.

        :param session_id: the running session.
        """
        reply = self._tick(
            keys=[*self._keys(session_id), self._live_key],
            args=self._args(
                self.clock(), _ms(self.running_ttl), _ms(self.liveness_ttl), self.key_prefix
            ),
        )
        cancelled, readers = reply
        return GenerationSignals(cancelled=bool(cancelled), readers=int(readers))

    @_wrap_errors
    def generation_alive(self, session_id: str) -> bool:
        """Whether the claimed generation ticked within ``liveness_ttl``.

        This one follows Redis's clock (the alive key's TTL), not ``clock``: the
        generation and its readers may run on hosts whose clocks differ by more
        than a few seconds.

        :param session_id: the claimed session.
        """
        return bool(self._redis.exists(self._keys(session_id)[3]))

    @_wrap_errors
    def count_live(self) -> int:
        """Sessions that are pending or running (not finished, not expired)."""
        # "(" makes the bound exclusive: a deadline equal to now has passed.
        return int(self._redis.zcount(self._live_key, f"({self.clock()!r}", "+inf"))

    @_wrap_errors
    def sweep(self, now: float) -> int:
        """Delete the keys of sessions expired at ``now``; returns how many.

        Redis TTLs free most keys first; this also cleans the indexes and frees
        sessions that expired by ``clock`` before Redis's TTL fired.

        :param now: the wall-clock time to expire against.
        """
        freed = self._sweep(
            keys=[self._live_key, self._done_key],
            args=self._args(now, self.key_prefix),
        )
        return int(freed)

    @_wrap_errors
    def ping(self) -> None:
        """Raise :class:`~ngai_chat.errors.StoreUnavailable` if unreachable."""
        self._redis.ping()

    def close(self) -> None:
        """Close every connection of both pools."""
        self._redis.close()
        self._blocking_redis.close()
        self._pool.disconnect()
        self._blocking_pool.disconnect()
