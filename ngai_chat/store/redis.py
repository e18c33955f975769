"""The Redis store: sessions and event logs shared by every worker and instance.

With :mod:`~ngai_chat.store.redis_tail`, the only modules of the package that
import :mod:`redis`. Keys, all under
``key_prefix`` and all with a TTL, so Redis never fills with dead sessions::

    <prefix>s:<id>   hash    request, referer, client, size (of the request body),
                             expires_at, claimed, owner, cancelled, last (event
                             counter), terminal_id, finished_at
    <prefix>e:<id>   stream  the event log; entry ``0-N`` is event N (fields n, d)
    <prefix>r:<id>   zset    attached readers, scored by when their presence lapses
    <prefix>p:<process> string  present while that process lives (TTL ``liveness_ttl``)
    <prefix>k:<process> list    sessions of that process's generations cancelled
                             elsewhere, its cancel inbox (:meth:`RedisStore.cancels`)
    <prefix>live     zset    pending and running sessions, scored by their deadline
                             (``+inf`` while running), for :meth:`RedisStore.count_live`
    <prefix>done     zset    finished sessions, scored by the end of their replay
    <prefix>c:<client> zset  one client's pending and running sessions, scored
                             like ``live``, for ``NGAI_MAX_SESSIONS_PER_CLIENT``
    <prefix>cb:<client> hash their request sizes, and ``ct:<client>`` (string)
                             their sum, for ``NGAI_MAX_CLIENT_BYTES``: a create
                             costs O(1) however many the client holds (see
                             :data:`~ngai_chat.store.redis_scripts.CREATE`)

Redis TTLs only free memory and follow Redis's own clock. Expiry as the contract
defines it is decided by comparing the deadlines stored in the hash with
``clock()``, the same rule as :class:`~ngai_chat.store.memory.MemoryStore`, so an
injected clock behaves the same on both stores.

Every check-then-write (claim, append, cancel, attach, tick, sweep) is one Lua
script (:mod:`~ngai_chat.store.redis_scripts`), so it is atomic across processes:
exactly one claim wins and exactly one terminal event is written, however many
writers race. Scripts build a session's
key names from the prefix, so this store targets a single Redis server (or a
replicated primary), not Redis Cluster.

**Liveness** is one key per process, not one per generation: a claim records the
claiming process as the session's ``owner``, and each process renews its own key
``p:<process>`` from a heartbeat of its own, one command every ``liveness_ttl / 5``
seconds however many generations it runs — apart from the ticks that report
cancels and readers (:meth:`RedisStore.tick_many`, one pipeline per tick for every
generation), so that neither many generations nor a slow tick can make a live
process look dead. A generation's process that dies stops renewing, and its
readers elsewhere see the lapse.

Readers waiting for a session generated in another process do not each hold a
connection in ``XREAD BLOCK``: one tail per store
(:class:`~ngai_chat.store.redis_tail.Tail`) blocks in a single ``XREAD`` on every
stream someone waits for, on a connection of its own, and wakes the waiters of
the streams that grew. Connections to Redis are bounded by
processes, not by open streams.

Readers in the process that runs a session's generation do not go to Redis at
all: every event this process appends is also kept in :class:`_LocalLogs`, and
they are served from there (a second tab or a reconnect on the same instance
costs no round trip per chunk). Readers elsewhere read the Redis Stream.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import math
import threading
import time
import typing as t
import uuid

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.retry import Retry

from ..errors import StoreUnavailable
from . import redis_scripts as scripts
from .base import TERMINAL_EVENTS
from .base import ClientAtLimit
from .base import Event
from .base import GenerationSignals
from .base import SessionInfo
from .log import EventLog
from .redis_tail import Tail
from .redis_tail import stream_entries

__all__ = ["RedisStore"]

#: bytes of events one read of a Redis Stream aims to return at most
READ_BYTES = 65536
#: seconds between the starts of two group commits of a process, at least: what
#: an event may wait for its batch to fill (see :class:`_Together`)
GROUP_COMMIT_INTERVAL = 0.005
#: seconds a process's cancel inbox lives after its last cancel (a process that
#: died never reads it)
INBOX_TTL = 60.0
#: cancels one :meth:`RedisStore.cancels` takes at most
INBOX_MAX = 1000

_P = t.ParamSpec("_P")
_R = t.TypeVar("_R")


class _LocalLog:
    """The events one process appended to one session's log, from id 1 on."""

    __slots__ = ("changed", "ended_at", "log")

    def __init__(self) -> None:
        self.log = EventLog()
        #: set, and replaced by a new one, when the log grows or leaves: a reader
        #: takes it before looking at the log, then waits on it (gevent's own
        #: event in a worker: no lock, no condition per wait)
        self.changed = threading.Event()
        self.ended_at: float | None = None

    def wake(self) -> None:
        """Wake every reader waiting on this log."""
        changed, self.changed = self.changed, threading.Event()
        changed.set()


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
        #: ``(ended_at, session id)`` of finished logs, oldest first
        self._ended: collections.deque[tuple[float, str]] = collections.deque()

    def record(self, session_id: str, event: tuple[int, str, str] | None) -> None:
        """Keep ``(id, name, data)`` (just appended to Redis), or drop the log when
        ``None``.
        """
        log = self._logs.get(session_id)
        if event is None or (log is None and event[0] != 1):
            self._drop(session_id)
            return
        event_id, name, data = event
        if log is None:
            log = self._logs[session_id] = _LocalLog()
        if event_id != len(log.log) + 1:
            self._drop(session_id)
            return
        log.log.append(name, data)
        if name in TERMINAL_EVENTS:
            log.ended_at = now = self.clock()
            self._ended.append((now, session_id))
            self._forget_ended(now)
        log.wake()

    def read(self, session_id: str, after: int, timeout: float) -> list[Event] | None:
        """Like :meth:`RedisStore.read`, or ``None`` when this log is not kept here."""
        log = self._logs.get(session_id)
        if log is None or after < 0:
            return None
        if log.ended_at is not None and self.clock() - log.ended_at >= self.linger:
            self._drop(session_id)
            return None
        deadline = time.monotonic() + timeout
        while True:
            changed = log.changed  # before looking: a change after this sets it
            if self._logs.get(session_id) is not log:
                return None
            if len(log.log) > after:
                return log.log.read(after)
            if log.ended_at is not None:
                return None  # nothing past the end here: wait the Redis way
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            changed.wait(remaining)

    def _drop(self, session_id: str) -> None:
        log = self._logs.pop(session_id, None)
        if log is not None:
            log.wake()  # its readers go to Redis

    def _forget_ended(self, now: float) -> None:
        ended = self._ended
        while ended and now - ended[0][0] >= self.linger:
            _, session_id = ended.popleft()
            log = self._logs.get(session_id)
            if log is not None and log.ended_at is not None and now - log.ended_at >= self.linger:
                self._drop(session_id)


#: one script run: the script, its keys, its arguments
_Call = tuple[Script, list[t.Any], list[t.Any]]


def _reply(reply: t.Any) -> t.Any:
    """A pipelined reply, raised if it is an error."""
    if isinstance(reply, Exception):
        raise reply
    return reply


class _Append:
    """One session's events, for the group commit of appends
    (:meth:`RedisStore._run_together`)."""

    __slots__ = ("events", "session_id")

    def __init__(self, session_id: str, events: list[str | bytes]) -> None:
        self.session_id = session_id
        #: name, data and terminal flag of each event, encoded for Redis
        self.events = events


_I = t.TypeVar("_I")


class _Batch:
    """The calls that go to Redis in one round trip, and their replies."""

    __slots__ = ("calls", "done", "replies")

    def __init__(self) -> None:
        self.calls: list[t.Any] = []
        self.replies: list[t.Any] = []
        #: set once ``replies`` holds a reply (or an error) for every call
        self.done = threading.Event()


class _Together(t.Generic[_I]):
    """Runs the calls that greenlets (or threads) of a process make at the same
    time in one round trip: a group commit.

    The first caller sends its call at once; callers that come while a round trip
    is in flight join the next batch, whose first caller sends it when the flight
    returns. So a process makes about one round trip per round-trip time, however
    many generations append — not one per event — and an event waits at most one
    round trip more than it would alone. Each caller is woken once: when its
    batch's replies are in, or (the first of a batch) when its turn to send comes.

    A round trip starts ``interval`` seconds after the last one started at the
    soonest: under load, batches grow instead of round trips multiplying (each
    costs the process far more than one more call in a batch), for at most that
    much more latency.

    :param run: runs a list of calls in one round trip and returns their replies
        (``RedisStore._run_together``).
    :param most: calls per round trip at most, so that one reply stays small (the
        calls of one :meth:`call_all` go together, however many).
    :param interval: seconds between the starts of two round trips, at least.
    """

    def __init__(
        self,
        run: t.Callable[[t.Sequence[_I]], list[t.Any]],
        *,
        most: int = 1000,
        interval: float = 0.0,
    ) -> None:
        self._run = run
        self._most = most
        self._interval = interval
        #: ``time.monotonic()`` when the last round trip started
        self._last_sent = -math.inf
        self._lock = threading.Lock()
        #: the batch that calls join now
        self._open = _Batch()
        #: a round trip is in flight
        self._busy = False
        #: the first callers of batches waiting to be sent wait on it
        self._turn = threading.Condition(self._lock)

    def call(self, call: _I) -> t.Any:
        """The call's reply.

        :raises redis.RedisError: the call failed, or its pipeline's connection did.
        :raises OSError: the connection failed.
        """
        return _reply(self.call_all([call])[0])

    def call_all(self, calls: t.Sequence[_I]) -> list[t.Any]:
        """The calls' replies, each the call's result or the error it got (a
        connection's error for all of them when the round trip failed): every one
        goes in the same round trip.
        """
        with self._lock:
            batch = self._open
            if batch.calls and len(batch.calls) + len(calls) > self._most:
                batch = self._open = _Batch()
            index = len(batch.calls)
            batch.calls += calls
            killed = None
            if index == 0:  # the first: send it when no round trip is in flight
                killed = self._wait_turn()
                if self._open is batch:
                    self._open = _Batch()
        if index == 0:
            self._send(batch)
            if killed is not None:
                raise killed
        else:
            batch.done.wait()
        return batch.replies[index : index + len(calls)]

    def _wait_turn(self) -> BaseException | None:
        """Wait (holding the lock) until no round trip is in flight, and start one.

        :return: what interrupted the wait (a kill), for the caller to raise once
            it has sent its batch: the others in the batch wait on it.
        """
        killed: BaseException | None = None
        while self._busy:
            try:
                self._turn.wait()
            except BaseException as exc:  # re-raised once the batch went
                killed = exc
        self._busy = True
        delay = self._last_sent + self._interval - time.monotonic()
        if delay > 0 and killed is None:
            self._lock.release()  # the batch fills meanwhile
            try:
                time.sleep(delay)
            except BaseException as exc:
                killed = exc
            finally:
                self._lock.acquire()
        self._last_sent = time.monotonic()
        return killed

    def _send(self, batch: _Batch) -> None:
        calls = batch.calls
        replies: list[t.Any] = [redis.ConnectionError("the pipeline was interrupted")] * len(calls)
        try:
            replies = self._run(calls)
        except (redis.RedisError, OSError) as exc:
            replies = [exc] * len(calls)
        finally:  # even when the sender is killed: nobody waits for ever
            batch.replies = replies
            batch.done.set()
            with self._lock:
                self._busy = False
                self._turn.notify()


def _text(value: str) -> bytes:
    """Encode text for Redis ourselves: hiredis' packer would refuse a lone
    surrogate (from a client's ``"\ud800"`` JSON escape) with a foreign error.
    """
    return value.encode("utf-8", "surrogatepass")


def _encoded(events: t.Sequence[tuple[str, str]]) -> list[str | bytes]:
    """Name, data and terminal flag of each event, as the append script takes them."""
    encoded: list[str | bytes] = []
    for name, data in events:
        encoded += [_text(name), _text(data), "1" if name in TERMINAL_EVENTS else "0"]
    return encoded


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
            raise _unavailable(exc) from exc

    return wrapper


def _unavailable(cause: BaseException) -> StoreUnavailable:
    """The store's failure as callers see it (``cause`` as its cause)."""
    failure = StoreUnavailable(
        "The session store (Redis) is unreachable or failing; try again shortly."
    )
    failure.__cause__ = cause
    return failure


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
    :param liveness_ttl: seconds the generations of a process stay "alive" after
        its last heartbeat (sent every fifth of it).
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
    shared = True

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
        #: by stream key: the mean size of its last events read (see _read_count)
        self._event_sizes: dict[str, int] = {}
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
        self._tail = Tail(self._blocking_redis)
        # Script objects run EVALSHA and reload the script after NOSCRIPT, so a
        # restarted (emptied) Redis needs nothing from us.
        register = self._redis.register_script
        self._create = register(scripts.CREATE)
        self._claim = register(scripts.CLAIM)
        self._append = register(scripts.APPEND)
        self._cancel = register(scripts.CANCEL)
        self._attach = register(scripts.ATTACH)
        self._tick = register(scripts.TICK)
        self._sweep = register(scripts.SWEEP)
        self._live_key = f"{key_prefix}live"
        self._done_key = f"{key_prefix}done"
        #: this store's process, as the ``owner`` of the sessions it claims
        self.process_id = uuid.uuid4().hex
        self._inbox = self._inbox_key(self.process_id)
        self._heartbeat: threading.Thread | None = None
        self._closed = threading.Event()
        self._local = _LocalLogs(linger=min(10.0, self.replay_ttl), clock=clock)
        #: the appends of every generation of this process, and readers' attach
        #: calls, sent together
        self._together: _Together[_Call | _Append] = _Together(
            self._run_together, interval=GROUP_COMMIT_INTERVAL
        )

    def _keys(self, session_id: str) -> tuple[str, str, str]:
        """Hash, stream and readers keys of one session."""
        p = self.key_prefix
        return (f"{p}s:{session_id}", f"{p}e:{session_id}", f"{p}r:{session_id}")

    def _process_key(self, process_id: str) -> str:
        """The key present while the process ``process_id`` lives."""
        return f"{self.key_prefix}p:{process_id}"

    def _inbox_key(self, process_id: str) -> str:
        """The list of sessions cancelled for the process ``process_id``."""
        return f"{self.key_prefix}k:{process_id}"

    def _args(self, now: float, *rest: t.Any) -> list[t.Any]:
        # repr() keeps every float exact, so Lua and Python compare the same
        # deadlines to the same clock readings.
        return [repr(now), repr(self.replay_ttl), *rest]

    @_wrap_errors
    def create(
        self, session: SessionInfo, client_limit: int = 0, client_bytes: int = 0
    ) -> ClientAtLimit | None:
        """Store a new pending session; it is gone after ``session.expires_at``.

        :param session: the session to store; an existing one with the same id is
            replaced.
        :param client_limit: when above 0, refuse it if ``session.client`` holds
            this many live sessions already (checked and created in one script).
        :param client_bytes: when above 0, refuse it if the ``size`` of the
            client's live sessions and its own would pass this many bytes (summed
            over the same per-client set, in the same script).
        :return: ``None`` when stored, else what the client holds.
        """
        now = self.clock()
        fields: dict[str, str | bytes] = {
            "request": _text(
                json.dumps(session.request, ensure_ascii=False, separators=(",", ":"))
            ),
            "expires_at": repr(session.expires_at),
        }
        if session.referer is not None:
            fields["referer"] = _text(session.referer)
        if session.client:
            fields["client"] = _text(session.client)
        if session.size:
            fields["size"] = str(session.size)
        if session.claimed:
            fields["claimed"] = "1"
        if session.cancelled:
            fields["cancelled"] = "1"
        if session.claimed:  # stored as running: no deadline but the running TTL
            ttl_ms, score = scripts.ms(self.running_ttl), "+inf"
        else:
            ttl_ms, score = scripts.ms(session.expires_at - now), repr(session.expires_at)
        pairs = [item for pair in fields.items() for item in pair]
        share = (
            [_text(f"{self.key_prefix}{kind}:{session.client}") for kind in ("c", "cb", "ct")]
            if session.client
            else ["", "", ""]
        )
        reply = self._create(
            keys=[*self._keys(session.id), self._live_key, *share],
            args=self._args(
                now,
                session.id,
                ttl_ms,
                score,
                client_limit,
                self.key_prefix,
                client_bytes,
                session.size,
                *pairs,
            ),
        )
        if isinstance(reply, list):
            held, first, held_bytes, by_bytes = reply
            first_score = float(first)
            return ClientAtLimit(
                held=int(held),
                next_expiry=first_score if math.isfinite(first_score) else None,
                held_bytes=int(held_bytes),
                by_bytes=bool(int(by_bytes)),
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
        if scripts.gone(fields, self.clock(), self.replay_ttl):
            return None
        terminal_id = h.get("terminal_id")
        return SessionInfo(
            id=session_id,
            request=json.loads(h["request"]),
            referer=h.get("referer"),
            expires_at=float(h["expires_at"]),
            claimed="claimed" in h,
            terminal_id=None if terminal_id is None else int(terminal_id),
            cancelled="cancelled" in h,
            client=h.get("client", ""),
            size=int(h.get("size", 0)),
        )

    @_wrap_errors
    def claim(self, session_id: str) -> bool:
        """Mark the session running; ``True`` for the one caller that wins.

        The session's keys then live ``running_ttl`` past the generation's last
        :meth:`tick` instead of until ``expires_at``.

        :param session_id: the session to claim.
        """
        hash_key, stream_key, _ = self._keys(session_id)
        self._start_heartbeat()
        keys = [hash_key, stream_key, self._live_key]
        args = self._args(
            self.clock(),
            session_id,
            scripts.ms(self.running_ttl),
            self.process_id,
            self.key_prefix,
        )
        # alive from the claim on, before the heartbeat's next beat
        (won,) = self._eval_all([(self._claim, keys, args)], renew=True)
        return bool(_reply(won))

    def _eval_all(self, calls: t.Sequence[_Call], renew: bool = False) -> list[t.Any]:
        """Run every script call in one round trip (after renewing this process's
        alive key, with ``renew``).

        A pipeline of ``EVALSHA``: redis-py's own script pipelining would ask
        ``SCRIPT EXISTS`` first, a second round trip every time. The calls of
        scripts that Redis lost (it restarted) are run again after loading them:
        ``NOSCRIPT`` means the script did not run.

        :return: each call's reply, or the :class:`redis.ResponseError` it got.
        :raises redis.RedisError: the renewal failed, or the connection did.
        """
        pipe = self._redis.pipeline(transaction=False)
        if renew:
            pipe.set(self._process_key(self.process_id), "1", px=scripts.ms(self.liveness_ttl))
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = pipe.execute(raise_on_error=False)
        if renew:
            head = replies.pop(0)
            if isinstance(head, Exception):
                raise head
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if lost:
            for script in {id(calls[i][0]): calls[i][0] for i in lost}.values():
                script.sha = self._redis.script_load(script.script)
            again = self._eval_all([calls[i] for i in lost])
            for i, reply in zip(lost, again, strict=True):
                replies[i] = reply
        return replies

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None and not self._closed.is_set():
            self._heartbeat = threading.Thread(target=self._beat, daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        """Renew this process's alive key until the store closes (a thread, or a
        greenlet in a gevent worker): one command per beat for every generation.
        """
        key, ttl_ms = self._process_key(self.process_id), scripts.ms(self.liveness_ttl)
        interval = self.liveness_ttl / 5
        while not self._closed.wait(interval):
            # Redis away: the appends and ticks report it
            with contextlib.suppress(redis.RedisError, OSError):
                self._redis.set(key, "1", px=ttl_ms)

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
        ids = self.append_batches({session_id: events})[session_id]
        if isinstance(ids, StoreUnavailable):
            raise ids
        return ids

    def append_batches(
        self, batches: t.Mapping[str, t.Sequence[tuple[str, str]]]
    ) -> dict[str, list[int] | StoreUnavailable]:
        """Append the events of several sessions in one round trip, each session's
        as :meth:`append_many` would (one call of the append script for all).

        :return: by session, the ids appended, or its failure (its own, or the
            connection's for all).
        """
        try:
            planned = [self._append_call(sid, events) for sid, events in batches.items()]
        except self._failures as exc:  # not even connected: nothing was sent
            for session_id in batches:
                self._local.record(session_id, None)
            return dict.fromkeys(batches, _unavailable(exc))
        try:
            replies = self._together.call_all([call for call, _ in planned])
        except self._failures as exc:
            replies = [exc] * len(planned)
        results: dict[str, list[int] | StoreUnavailable] = {}
        for (session_id, events), (_, plan), reply in zip(
            batches.items(), planned, replies, strict=True
        ):
            try:
                ids = results[session_id] = self._appended(session_id, events, plan, reply)
            except StoreUnavailable as exc:
                self._local.record(session_id, None)
                results[session_id] = exc
                continue
            if events and not ids:  # ended by someone else: stop mirroring it
                self._local.record(session_id, None)
            for new_id, (name, data) in zip(ids, events, strict=False):
                self._local.record(session_id, (new_id, name, data))
        return results

    #: what a call to Redis raises when Redis (or the connection) failed
    _failures: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def _append_call(
        self, session_id: str, events: t.Sequence[tuple[str, str]]
    ) -> tuple[_Call | _Append, t.Any]:
        """The call that appends ``events`` to the session's log, for the group
        commit, and what :meth:`_appended` needs to know of it."""
        return _Append(session_id, _encoded(events)), None

    def _appended(
        self, session_id: str, events: t.Sequence[tuple[str, str]], plan: t.Any, reply: t.Any
    ) -> list[int]:
        """The ids that an append call's reply says.

        :raises StoreUnavailable: the call failed.
        """
        if isinstance(reply, self._failures):
            raise _unavailable(reply)
        return [int(new_id) for new_id in reply]

    def _run_together(self, items: t.Sequence[_Call | _Append]) -> list[t.Any]:
        """Run what :class:`_Together` queued in one round trip: every append in
        one call of the append script (however many sessions), the other calls
        beside it in the same pipeline.

        :return: each item's reply, or the error it got.
        """
        calls = [item for item in items if not isinstance(item, _Append)]
        appends = [item for item in items if isinstance(item, _Append)]
        if not appends:
            return self._eval_all(calls)
        args = self._args(
            self.clock(), self.max_events, scripts.ms(self.replay_ttl), self.key_prefix
        )
        for append in appends:
            args += [_text(append.session_id), len(append.events) // 3, *append.events]
        replies = self._eval_all([(self._append, [self._live_key, self._done_key], args), *calls])
        merged, others = replies[0], iter(replies[1:])
        appended: t.Iterator[t.Any] = iter(
            [merged] * len(appends) if isinstance(merged, Exception) else merged
        )
        out: list[t.Any] = []
        for item in items:
            if not isinstance(item, _Append):
                out.append(next(others))
                continue
            reply = next(appended)
            if reply and reply[0] == "err":
                reply = redis.ResponseError(reply[1])
            out.append(reply)
        return out

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
        hash_key, stream_key, _ = self._keys(session_id)
        since = f"0-{max(after, 0)}"
        count = self._read_count(stream_key)
        # A reader following a log live: the tail's last read brought what comes
        # next, or the reader has all the tail has seen and waits for its next
        # read; either way no round trip of its own (a reader's idle checks, every
        # few seconds, see a session that went away).
        entries = self._tail.entries_after(stream_key, after)
        if entries:
            events = self._entry_events(entries)
            self._learn_size(stream_key, events)
            return events
        if self._tail.at_end(stream_key, after):
            events = []
        else:
            # One round trip: is the session there, and has it events already?
            pipe = self._redis.pipeline(transaction=False)
            pipe.hmget(hash_key, ["expires_at", "claimed", "finished_at"])
            pipe.xread({stream_key: since}, count=count)
            fields, response = pipe.execute()
            if scripts.gone(fields, self.clock(), self.replay_ttl):
                return []
            events = self._events(response)
        if not events and timeout > 0:
            while self._tail.wait(stream_key, after, deadline - time.monotonic()):
                # brought by the tail's own read, usually; else read them
                entries = self._tail.entries_after(stream_key, after)
                if entries:
                    events = self._entry_events(entries)
                else:
                    events = self._events(self._redis.xread({stream_key: since}, count=count))
                if events:
                    break
        if events:
            self._learn_size(stream_key, events)
        return events

    def _read_count(self, stream_key: str) -> int:
        """Events to ask of one ``XREAD``: about :data:`READ_BYTES` of them, by the
        size of this stream's last events, so that a reader far behind a log of
        large events holds a bounded amount, not its whole backlog.
        """
        size = self._event_sizes.get(stream_key)
        if size is None:
            return min(self.read_batch, 16)
        return max(1, min(self.read_batch, READ_BYTES // size))

    def _learn_size(self, stream_key: str, events: list[Event]) -> None:
        if len(self._event_sizes) >= 10_000:
            self._event_sizes.clear()  # bounded: forget every stream at once
        size = sum(len(event.data) for event in events) // len(events)
        self._event_sizes[stream_key] = max(1, size)

    @classmethod
    def _events(cls, response: t.Any) -> list[Event]:
        return cls._entry_events(stream_entries(response))

    @staticmethod
    def _entry_events(entries: t.Iterable[t.Any]) -> list[Event]:
        return [
            Event(id=int(entry_id.partition("-")[2]), name=fields["n"], data=fields["d"])
            for entry_id, fields in entries
        ]

    @_wrap_errors
    def cancel(self, session_id: str) -> bool:
        """Set the cancel flag, and tell the process running the session's
        generation (its :meth:`cancels`); ``False`` when the session is unknown.

        :param session_id: the session to cancel.
        """
        owner = self._cancel_script(session_id)
        if owner == 0:
            return False
        if owner:
            self._tell_cancelled(str(owner), session_id)
        return True

    def _cancel_script(self, session_id: str) -> t.Any:
        """Run the cancel script (:data:`~ngai_chat.store.redis_scripts.CANCEL`)."""
        return self._cancel(keys=[self._keys(session_id)[0]], args=self._args(self.clock()))

    def _tell_cancelled(self, owner: str, session_id: str) -> None:
        """Put ``session_id`` in the cancel inbox of the process ``owner``."""
        inbox = self._inbox_key(owner)
        pipe = self._redis.pipeline(transaction=False)
        pipe.rpush(inbox, _text(session_id))
        pipe.pexpire(inbox, scripts.ms(INBOX_TTL))
        pipe.execute()

    @_wrap_errors
    def cancels(self) -> list[str]:
        """Sessions whose generations run in this process and were cancelled since
        the last call (by any process): one ``LPOP`` however many generations run,
        so the relay asks a few times a second.
        """
        return t.cast("list[str] | None", self._redis.lpop(self._inbox, INBOX_MAX)) or []

    @_wrap_errors
    def attach(self, session_id: str, reader_id: str) -> None:
        """Record (or refresh) an attached reader. Readers call it at least once
        per heartbeat interval while attached.

        :param session_id: the session being read.
        :param reader_id: unique per open stream, in every process.
        """
        hash_key, _, readers_key = self._keys(session_id)
        args = self._args(
            self.clock(), reader_id, repr(self.presence_ttl), scripts.ms(self.presence_ttl)
        )
        self._together.call((self._attach, [hash_key, readers_key], args))

    @_wrap_errors
    def detach(self, session_id: str, reader_id: str) -> None:
        """Forget an attached reader.

        :param session_id: the session that was read.
        :param reader_id: as given to :meth:`attach`.
        """
        self._redis.zrem(self._keys(session_id)[2], reader_id)

    def tick(self, session_id: str) -> GenerationSignals:
        """Report cancel and readers (see :meth:`tick_many`)."""
        return self.tick_many([session_id])[session_id]

    @_wrap_errors
    def tick_many(self, session_ids: t.Sequence[str]) -> dict[str, GenerationSignals]:
        """Report cancel and readers of every running session of this process, keep
        their keys from expiring, and renew this process's liveness: one round trip
        however many sessions. A gone session reports ``cancelled`` so its
        generation stops.

        :param session_ids: the sessions whose generations run here.
        """
        args = self._args(self.clock(), scripts.ms(self.running_ttl), self.key_prefix)
        calls = [
            (self._tick, [*self._keys(session_id), self._live_key], args)
            for session_id in session_ids
        ]
        signals: dict[str, GenerationSignals] = {}
        for session_id, reply in zip(session_ids, self._eval_all(calls, renew=True), strict=True):
            cancelled, readers = _reply(reply)
            signals[session_id] = GenerationSignals(cancelled=bool(cancelled), readers=int(readers))
        return signals

    @_wrap_errors
    def generation_alive(self, session_id: str) -> bool:
        """Whether the process that claimed the session still lives (renewed its
        alive key within ``liveness_ttl``); ``False`` for a session nobody claimed.

        This one follows Redis's clock (the alive key's TTL), not ``clock``: the
        generation and its readers may run on hosts whose clocks differ by more
        than a few seconds.

        :param session_id: the claimed session.
        """
        owner = self._redis.hget(self._keys(session_id)[0], "owner")
        return owner is not None and bool(self._redis.exists(self._process_key(str(owner))))

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
    def put_chat(self, chat_key: str, value: str, ttl: float) -> None:
        """Remember what a chat id names, for ``ttl`` seconds (see :class:`Store`)."""
        self._redis.set(f"{self.key_prefix}chat:{chat_key}", value, px=scripts.ms(ttl))

    @_wrap_errors
    def get_chat(self, chat_key: str) -> str | None:
        """What :meth:`put_chat` stored, or ``None``."""
        return t.cast("str | None", self._redis.get(f"{self.key_prefix}chat:{chat_key}"))

    @_wrap_errors
    def ping(self) -> None:
        """Raise :class:`~ngai_chat.errors.StoreUnavailable` if unreachable."""
        self._redis.ping()

    def close(self) -> None:
        """Stop the heartbeat (this process's generations then lapse) and close every
        connection of both pools.
        """
        self._closed.set()
        self._tail.close()
        self._redis.close()
        self._blocking_redis.close()
        self._pool.disconnect()
        self._blocking_pool.disconnect()
