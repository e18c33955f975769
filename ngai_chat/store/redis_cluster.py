"""The Redis Cluster store: :class:`~ngai_chat.store.redis.RedisStore` on a cluster.

``REDIS_URL=redis+cluster://host:port[,host:port…]`` (or ``rediss+cluster://``
for TLS) selects it. Keys are those of the single-server store, with hash tags::

    <prefix>s:{<id>}  <prefix>e:{<id>}  <prefix>r:{<id>}  <prefix>a:{<id>}
                      one session's hash, stream, readers and alive key: one
                      slot, so every script on a session runs on one node, and
                      sessions spread over every master
    <prefix>n:{<id>}  the session's shard channel (``SPUBLISH``): "its log grew"
    <prefix>{<prefix>i}:live / :done   the instance-wide indexes, one slot
    <prefix>c:{<client>}               one client's live sessions
    <prefix>p:{<process>}  <prefix>k:{<process>}   a process's alive key and
                      cancel inbox

A script may only touch one slot, so the indexes are updated by a second command
after a session's script (:mod:`~ngai_chat.store.redis_cluster_scripts`); what
the single-server store does in one step is done here in an order that errs on
the safe side (a client's share is checked and taken before its session is
written; dead or finished sessions are pruned from it before the check).

**Failover.** Every command is retried, with the cluster's topology refreshed,
for up to ``failover_wait`` seconds while a node is unreachable or its slots
have no master yet; so every write is idempotent: a claim carries a token, and
an append says which event id it expects the log to end at. Replication is
asynchronous, so a master that dies may take its newest writes with it: an
append that finds the log shorter than it expects restores the missing events
from this process's copy of the log and goes on, every event in order; when it
cannot, it ends the log with a ``store_unavailable`` error event numbered after
every event it wrote, never writing past a hole. An append that failed without
telling whether it was written counts as written: the next event is numbered past
it. Past ``failover_wait`` a command fails with
:class:`~ngai_chat.errors.StoreUnavailable` as on one Redis.

**Tails.** A blocking ``XREAD`` cannot span slots in a cluster, so readers here
wait on their sessions' shard channels instead: one connection per master node
(``SSUBSCRIBE`` to every session someone here waits on), moved to the new master
when a node fails over or answers ``MOVED``; every waiter then reads its log
again, so nothing published meanwhile is missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import typing as t
import urllib.parse
import uuid

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import AskError
from redis.exceptions import AuthenticationError
from redis.exceptions import AuthorizationError
from redis.exceptions import ClusterDownError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import NoScriptError
from redis.exceptions import ReadOnlyError
from redis.exceptions import RedisClusterException
from redis.exceptions import SlotNotCoveredError
from redis.exceptions import TryAgainError
from redis.retry import Retry

from .. import errors
from ..config import ConfigError
from . import redis_cluster_scripts as cscripts
from . import redis_scripts as scripts
from .base import TERMINAL_EVENTS
from .base import ClientAtLimit
from .base import Event
from .base import GenerationSignals
from .base import SessionInfo
from .redis import RedisStore
from .redis import _Append
from .redis import _Call
from .redis import _encoded
from .redis import _LocalLog
from .redis import _LocalLogs
from .redis import _reply
from .redis import _text
from .redis import _Together
from .redis import _unavailable
from .redis import _wrap_errors

__all__ = ["CLUSTER_SCHEMES", "ClusterStore", "ClusterTail", "parse_cluster_url"]

log = logging.getLogger(__name__)

#: URL schemes that name a Redis Cluster
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

_HOLE_MESSAGE = (
    "The session store failed over and lost the newest part of this answer. Send the message again."
)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, t.Any]]:
    """The nodes and connection options of a ``redis+cluster://`` URL.

    :return: ``[(host, port), …]`` and ``username``/``password``/``ssl``.
    :raises ConfigError: not such a URL, no host, a bad port or a database other
        than 0 (never showing the password).
    """
    scheme, _, rest = url.partition("://")
    if f"{scheme}://" not in CLUSTER_SCHEMES:
        raise ConfigError("Invalid REDIS_URL: a Redis Cluster URL starts with redis+cluster://.")
    netloc, _, tail = rest.partition("/")
    path, _, _query = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    options: dict[str, t.Any] = {"ssl": scheme == "rediss+cluster"}
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            options["password"] = urllib.parse.unquote(password)
        if user:
            options["username"] = urllib.parse.unquote(user)
    if path not in ("", "0"):
        raise ConfigError(
            "Invalid REDIS_URL: a Redis Cluster has only database 0; "
            "use redis+cluster://host:port[,host:port…]."
        )
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [IPv6]:port
            host, _, port_text = item[1:].partition("]")
            port_text = port_text.removeprefix(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        try:
            port = int(port_text) if port_text else 6379
        except ValueError:
            port = -1
        if not host or not 0 < port < 65536:
            raise ConfigError(
                f"Invalid REDIS_URL: {item!r} is not host:port in a redis+cluster:// URL."
            )
        nodes.append((host, port))
    if not nodes:
        raise ConfigError(
            "Invalid REDIS_URL: a redis+cluster:// URL names at least one node, "
            "e.g. redis+cluster://10.0.0.1:6379,10.0.0.2:6379."
        )
    return nodes, options


def _transient(exc: BaseException) -> bool:
    """Whether a failure is one a failover causes (and ends)."""
    if isinstance(exc, AuthenticationError | AuthorizationError | MaxConnectionsError):
        return False
    return isinstance(
        exc,
        RedisClusterException  # no node reachable, no slots map yet (not a RedisError)
        | redis.ConnectionError
        | redis.TimeoutError
        | ClusterDownError
        | TryAgainError
        | SlotNotCoveredError
        | ReadOnlyError
        | AskError,
    )


class _FailoverCluster(RedisCluster):
    """A :class:`RedisCluster` whose commands wait out a failover.

    redis-py follows ``MOVED``/``ASK`` itself; on top of that every command that
    fails the way a failover fails is retried, the topology refreshed each time,
    until ``failover_wait`` seconds have passed. Callers make their writes
    idempotent, so a retry after a lost reply does no harm.
    """

    def __init__(self, *args: t.Any, failover_wait: float, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.failover_wait = failover_wait
        self._refreshed = 0.0

    def refresh(self) -> None:
        """Reload the slots map (at most every 0.1 s, however many callers ask)."""
        now = time.monotonic()
        if now - self._refreshed < 0.1:
            return
        self._refreshed = now
        try:
            self.nodes_manager.initialize()
        except (redis.RedisError, OSError) as exc:
            log.debug("cluster topology refresh failed: %s", exc)

    def execute_command(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return self._execute_waiting(*args, **kwargs)
        except RedisClusterException as exc:  # a RedisError, as the store expects
            raise redis.ConnectionError(f"Redis Cluster: {exc}") from exc

    def _execute_waiting(self, *args: t.Any, **kwargs: t.Any) -> t.Any:
        deadline: float | None = None
        delay = 0.05
        while True:
            try:
                return super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError, RedisClusterException) as exc:
                if not _transient(exc):
                    if not isinstance(exc, NoScriptError):  # the script object loads it
                        log.warning("Redis Cluster: %s failed: %r", args[0], exc)
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.failover_wait
                if now + delay > deadline:
                    log.warning(
                        "Redis Cluster: %s failed for %.0f s: %r",
                        args[0],
                        now - (deadline - self.failover_wait),
                        exc,
                    )
                    raise
                self.refresh()
                time.sleep(delay)
                delay = min(delay * 2, 0.5)


class _Waited:
    """A session's channel someone waits on: the newest id heard, its waiters."""

    __slots__ = ("changed", "home", "idle_since", "latest", "resyncs", "waiters")

    def __init__(self, latest: int, lock: threading.Lock) -> None:
        self.latest = latest
        self.waiters = 0
        self.idle_since = 0.0
        #: times the waiters were told to read again (a subscription started)
        self.resyncs = 0
        self.changed = threading.Condition(lock)
        #: name of the node whose tail follows it
        self.home = ""


class ClusterTail:
    """Waits for events of many sessions with one subscriber connection per node.

    :param cluster: the store's cluster client (for the slots map).
    :param connect: makes a plain client to one node.
    :param block: seconds a node's tail waits for a message before it looks at
        new and idle channels.
    :param linger: seconds a channel stays subscribed without waiters.
    """

    def __init__(
        self,
        cluster: _FailoverCluster,
        connect: t.Callable[[str, int], redis.Redis],
        *,
        block: float = 0.1,
        linger: float = 2.0,
    ) -> None:
        self._cluster = cluster
        self._connect = connect
        self._block = block
        self._linger = linger
        self._lock = threading.Lock()
        self._channels: dict[str, _Waited] = {}
        #: node name -> its channels, for the node's tail thread
        self._nodes: dict[str, set[str]] = {}
        self._closed = False

    def wait(self, channel: str, after: int, timeout: float) -> bool:
        """Wait until ``channel`` says its log passed ``after``, or its waiters
        must read again (the channel was (re)subscribed: what was published
        before is not heard).

        :return: ``False`` when ``timeout`` passed first.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            waited = self._channels.get(channel)
            if waited is None:
                waited = self._channels[channel] = _Waited(after, self._lock)
                self._home(channel, waited)
            waited.waiters += 1
            resyncs = waited.resyncs
            try:
                while waited.latest <= after and waited.resyncs == resyncs:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    waited.changed.wait(remaining)
                return True
            finally:
                waited.waiters -= 1
                waited.idle_since = time.monotonic()

    def _home(self, channel: str, waited: _Waited) -> None:
        """Give ``channel`` to the tail of the node that serves it (lock held)."""
        try:
            node = self._cluster.get_node_from_key(channel)  # type: ignore[no-untyped-call]
        except (redis.RedisError, OSError, IndexError):
            node = None
        name = node.name if node is not None else ""
        waited.home = name
        channels = self._nodes.get(name)
        if channels is None:
            channels = self._nodes[name] = set()
            thread = threading.Thread(target=self._follow, args=(name,), daemon=True)
            thread.start()
        channels.add(channel)

    def _rehome(self, channels: t.Iterable[str]) -> None:
        """Move channels to the nodes that serve them now; their waiters read
        again (lock held)."""
        for channel in list(channels):
            waited = self._channels.get(channel)
            owned = self._nodes.get(waited.home if waited else "")
            if owned is not None:
                owned.discard(channel)
            if waited is not None:
                waited.resyncs += 1
                waited.changed.notify_all()
                self._home(channel, waited)

    def _follow(self, name: str) -> None:
        """One node's tail: subscribe, listen, unsubscribe idle channels."""
        pubsub: t.Any = None
        subscribed: set[str] = set()
        try:
            if not name:
                raise redis.ConnectionError("no node serves the slot yet")
            host, _, port = name.rpartition(":")
            pubsub = self._connect(host, int(port)).pubsub()  # type: ignore[no-untyped-call]
            while True:
                with self._lock:
                    wanted = self._nodes.get(name)
                    if self._closed or wanted is None:
                        return
                    now = time.monotonic()
                    for channel in list(wanted):
                        waited = self._channels[channel]
                        if not waited.waiters and now - waited.idle_since >= self._linger:
                            wanted.discard(channel)
                            del self._channels[channel]
                    if not wanted and not subscribed:
                        del self._nodes[name]
                        return
                    new = wanted - subscribed
                    gone = subscribed - wanted
                for channel in new:
                    pubsub.ssubscribe(channel)
                    subscribed.add(channel)
                for channel in gone:
                    pubsub.sunsubscribe(channel)
                    subscribed.discard(channel)
                message = pubsub.get_message(timeout=self._block)
                while message is not None:
                    self._heard(name, message, subscribed)
                    message = pubsub.get_message(timeout=0.0)
        except (redis.RedisError, OSError, ValueError) as exc:
            # The node failed or gave its slots away: every channel of it goes to
            # the node that serves its slot once the topology says so.
            log.debug("cluster tail on %s: %s", name or "(none)", exc)
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError) or not name:
                time.sleep(0.1)
            self._cluster.refresh()
            with self._lock:
                channels = self._nodes.pop(name, set())
                self._rehome(channels)
        finally:
            if pubsub is not None:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def _heard(self, name: str, message: dict[str, t.Any], subscribed: set[str]) -> None:
        kind, channel = message.get("type"), message.get("channel")
        with self._lock:
            waited = self._channels.get(t.cast("str", channel))
            if kind == "smessage" and waited is not None:
                waited.latest = max(waited.latest, int(message["data"]))
                waited.changed.notify_all()
            elif kind == "ssubscribe" and waited is not None:
                # heard from now on: what came before, the waiters read themselves
                waited.resyncs += 1
                waited.changed.notify_all()
            elif kind == "sunsubscribe" and t.cast("str", channel) in subscribed:
                # the server dropped it: its slot moved (a failover, a reshard)
                subscribed.discard(t.cast("str", channel))
                if waited is not None and channel in self._nodes.get(name, set()):
                    self._cluster.refresh()
                    self._rehome([t.cast("str", channel)])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for waited in self._channels.values():
                waited.changed.notify_all()


class ClusterStore(RedisStore):
    """Sessions and event logs in a Redis Cluster (see the module's docstring).

    Takes the options of :class:`~ngai_chat.store.redis.RedisStore`, and:

    :param url: ``redis+cluster://[user:password@]host:port[,host:port…]``.
    :param failover_wait: seconds a command waits out a failover (a node
        unreachable, slots without a master) before it fails.
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
        failover_wait: float = 20.0,
    ) -> None:
        self.replay_ttl = float(replay_ttl)
        self.clock = clock
        self.key_prefix = key_prefix
        self.presence_ttl = 2 * heartbeat + presence_grace
        self.liveness_ttl = liveness_ttl
        self.running_ttl = max(self.replay_ttl, 60.0) if running_ttl is None else running_ttl
        self.max_events = max_events + 16
        self.read_batch = read_batch
        self.failover_wait = failover_wait
        self._event_sizes: dict[str, int] = {}
        self._local = _LocalLogs(linger=min(10.0, self.replay_ttl), clock=clock)
        self._nodes, auth = parse_cluster_url(url)
        #: options of every connection, to a node or through the cluster client
        self._options: dict[str, t.Any] = {
            "decode_responses": True,
            "encoding_errors": "surrogatepass",
            "protocol": 2,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "client_name": client_name,
            **auth,
        }
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._cluster: _FailoverCluster | None = None
        self._tail_: ClusterTail | None = None
        self._scripts: dict[str, Script] = {}
        tag = "{" + key_prefix + "i}"
        self._live_key = f"{key_prefix}{tag}:live"
        self._done_key = f"{key_prefix}{tag}:done"
        #: by session: the id of the last event this process appended (0 once
        #: claimed here), what its next append expects the log to end at
        self._written: dict[str, int] = {}
        #: by session claimed here: when its client's share last had its TTL pushed
        self._client_extended: dict[str, float] = {}
        self._live_extended = 0.0
        #: by session: the highest id a failed append of this process may have taken
        self._unsure: dict[str, int] = {}
        #: by session claimed here: its client, for its share's update at the end
        self._clients: dict[str, str] = {}
        #: when this store's heartbeat started (it renews the process's key)
        self._heartbeat_since = math.inf
        #: this store's process, as the ``owner`` of the sessions it claims
        self.process_id = uuid.uuid4().hex
        self._inbox = self._inbox_key(self.process_id)
        self._heartbeat: threading.Thread | None = None
        self._closed = threading.Event()
        #: the appends of every generation of this process, pipelined together
        # only script calls are queued here (appends are per session in a cluster)
        self._together = t.cast("_Together[_Call | _Append]", _Together(self._eval_all))

    # -- connections -------------------------------------------------------

    @property
    def _redis(self) -> _FailoverCluster:  # type: ignore[override]
        """The cluster client, connected on first use (so that a process starts
        while the cluster is unreachable, as it does with one Redis)."""
        cluster = self._cluster
        if cluster is None:
            with self._lock:
                if self._cluster is None:
                    self._cluster = self._connect()
                    self._scripts = {
                        name: self._cluster.register_script(getattr(cscripts, name))
                        for name in cscripts.__all__
                    }
                    self._scripts["CANCEL"] = self._cluster.register_script(scripts.CANCEL)
                    self._scripts["ATTACH"] = self._cluster.register_script(scripts.ATTACH)
                cluster = self._cluster
        return cluster

    def _connect(self) -> _FailoverCluster:
        try:
            return _FailoverCluster(
                startup_nodes=[
                    ClusterNode(host, port)  # type: ignore[no-untyped-call]
                    for host, port in self._nodes
                ],
                retry=Retry(NoBackoff(), 0),
                failover_wait=self.failover_wait,
                max_connections=self._max_connections,
                **self._options,
            )
        except RedisClusterException as exc:  # no node answered: a RedisError
            raise redis.ConnectionError(f"Redis Cluster: {exc}") from exc

    @property
    def _cluster_tail(self) -> ClusterTail:
        tail = self._tail_
        if tail is None:
            cluster = self._redis
            with self._lock:
                if self._tail_ is None:
                    self._tail_ = ClusterTail(cluster, self._node_client)
                tail = self._tail_
        return tail

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None and not self._closed.is_set():
            self._heartbeat_since = time.monotonic()
        super()._start_heartbeat()

    def _node_client(self, host: str, port: int) -> redis.Redis:
        options = {**self._options, "socket_timeout": None}  # pubsub waits in get_message
        return redis.Redis(host=host, port=port, **options)

    def _run(self, name: str, keys: list[t.Any], args: list[t.Any]) -> t.Any:
        self._redis  # noqa: B018 - connects, registering the scripts
        return self._scripts[name](keys=keys, args=args)

    def _call(self, name: str, keys: list[t.Any], args: list[t.Any]) -> _Call:
        """A script call for :meth:`_eval_all`."""
        self._redis  # noqa: B018 - connects, registering the scripts
        return (self._scripts[name], keys, args)

    # -- keys --------------------------------------------------------------

    def _keys(self, session_id: str) -> tuple[str, str, str]:
        """Hash, stream and readers keys of one session: one hash tag."""
        p, tag = self.key_prefix, "{" + session_id + "}"
        return (f"{p}s:{tag}", f"{p}e:{tag}", f"{p}r:{tag}")

    def _process_key(self, process_id: str) -> str:
        """The key present while the process ``process_id`` lives (its own tag)."""
        return f"{self.key_prefix}p:{{{process_id}}}"

    def _inbox_key(self, process_id: str) -> str:
        """The cancel inbox of the process ``process_id`` (its own tag)."""
        return f"{self.key_prefix}k:{{{process_id}}}"

    def _channel(self, session_id: str) -> str:
        return f"{self.key_prefix}n:{{{session_id}}}"

    def _client_key(self, client: str) -> bytes:
        return _text(f"{self.key_prefix}c:{{{client}}}")

    def _client_sizes_key(self, client: str) -> bytes:
        """The sizes of the request bodies of a client's sessions (its own slot)."""
        return _text(f"{self.key_prefix}cb:{{{client}}}")

    # -- the store ---------------------------------------------------------

    @_wrap_errors
    def create(
        self, session: SessionInfo, client_limit: int = 0, client_bytes: int = 0
    ) -> ClientAtLimit | None:
        """Store a new pending session (see :meth:`RedisStore.create`).

        The client's share is checked and taken first (in its own slot), then the
        session written, then the ``live`` index: a failure in between leaves at
        most a place in the share that frees at the session's deadline.
        """
        now = self.clock()
        if session.claimed:
            ttl_ms, score = scripts.ms(self.running_ttl), "+inf"
        else:
            ttl_ms, score = scripts.ms(session.expires_at - now), repr(session.expires_at)
        calls: list[_Call] = []
        if session.client:
            client_key = self._client_key(session.client)
            share = [client_key, self._client_sizes_key(session.client)]
            admit = self._args(
                now, session.id, ttl_ms, score, client_limit, client_bytes, session.size
            )
            reply: t.Any = None
            if client_limit <= 0 and client_bytes <= 0:
                # nothing to refuse: taken with the session's writes
                calls.append(self._call("ADMIT", share, admit))
            else:
                reply = self._run("ADMIT", share, admit)
                if isinstance(reply, list):
                    # refused: drop what died or finished (a round trip each, so
                    # only now, not at every create), then ask again
                    self._prune_client(client_key, now)
                    reply = self._run("ADMIT", share, admit)
            if isinstance(reply, list):
                held, first, held_bytes, by_bytes = reply
                first_score = float(first)
                return ClientAtLimit(
                    held=int(held),
                    next_expiry=first_score if math.isfinite(first_score) else None,
                    held_bytes=int(held_bytes),
                    by_bytes=bool(int(by_bytes)),
                )
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
        pairs = [item for pair in fields.items() for item in pair]
        calls.append(
            self._call("CREATE", list(self._keys(session.id)), self._args(now, ttl_ms, *pairs))
        )
        calls.append(self._call("INDEX_ADD", [self._live_key], [score, session.id, ttl_ms]))
        for created in self._eval_all(calls):  # a pipeline per node
            _reply(created)
        return None

    def _prune_client(self, client_key: bytes, now: float) -> None:
        """Drop from a client's share the running sessions that died or finished
        (their hashes live on other nodes, so no script of the share's slot can
        look). Only what can never come back is dropped, so this may race."""
        running = t.cast("list[str]", self._redis.zrangebyscore(client_key, "+inf", "+inf"))
        for session_id in running:
            fields: list[str | None] = self._redis.hmget(  # type: ignore[assignment]
                self._keys(session_id)[0], ["expires_at", "claimed", "finished_at"]
            )
            if fields[2] is not None or scripts.gone(fields, now, self.replay_ttl):
                self._redis.zrem(client_key, session_id)

    @_wrap_errors
    def claim(self, session_id: str) -> bool:
        """Mark the session running; ``True`` for the one caller that wins."""
        hash_key, stream_key, _ = self._keys(session_id)
        self._start_heartbeat()
        if time.monotonic() - self._heartbeat_since < self.liveness_ttl / 2:
            # alive from the claim on, before the heartbeat's first beats
            self._redis.set(
                self._process_key(self.process_id), "1", px=scripts.ms(self.liveness_ttl)
            )
        token = uuid.uuid4().hex  # the same through this call's retries
        reply = self._run(
            "CLAIM",
            [hash_key, stream_key],
            self._args(self.clock(), scripts.ms(self.running_ttl), self.process_id, token),
        )
        if not int(reply[0]):
            return False
        self._written[session_id] = 0
        # Readers here wait on this process's copy of the log from the claim on,
        # not on the session's channel (a subscription, then a message per append).
        self._local._logs.setdefault(session_id, _LocalLog())
        running_ms = scripts.ms(self.running_ttl)
        calls = [self._call("INDEX_ADD", [self._live_key], ["+inf", session_id, running_ms])]
        client = reply[1] if len(reply) > 1 else None
        if client:
            self._clients[session_id] = client
            share = self._client_key(client)
            calls.append(self._call("INDEX_ADD", [share], ["+inf", session_id, running_ms]))
            self._client_extended[session_id] = time.monotonic()
        for indexed in self._eval_all(calls):
            _reply(indexed)
        return True

    _failures = (redis.RedisError, OSError, RedisClusterException)

    def _append_call(
        self, session_id: str, events: t.Sequence[tuple[str, str]]
    ) -> tuple[_Call, tuple[int, int, int | None]]:
        self._redis  # noqa: B018 - connects (or fails) before anything is taken
        expected, floor = self._written.get(session_id, -1), 0
        unsure = self._unsure.pop(session_id, None)
        if unsure is not None:
            # An append of ours failed without telling whether it was written (and
            # read, and then lost to a failover): what comes next is numbered after
            # every id it may have taken, whatever the log holds now.
            expected, floor = -1, unsure
        call = self._append_script_call(session_id, events, expected, floor)
        return call, (expected, floor, unsure)

    @_wrap_errors
    def _appended(
        self,
        session_id: str,
        events: t.Sequence[tuple[str, str]],
        plan: tuple[int, int, int | None],
        reply: t.Any,
    ) -> list[int]:
        expected, floor, unsure = plan
        if isinstance(reply, self._failures):
            if expected >= 0 or unsure is not None:
                if len(self._unsure) >= 100_000:
                    self._unsure.clear()
                self._unsure[session_id] = max(expected, floor) + len(events)
            raise _unavailable(reply)
        ids = [int(i) for i in reply]
        if ids and ids[0] == -1:
            ids = self._after_mismatch(session_id, events, expected, ids[1])
        if ids:
            if len(self._written) >= 100_000:
                self._written.clear()  # bounded; a forgotten session appends unchecked
                self._clients.clear()
            self._written[session_id] = ids[-1]
        if len(ids) < len(events) or (ids and events[len(ids) - 1][0] in TERMINAL_EVENTS):
            self._written.pop(session_id, None)
            self._client_extended.pop(session_id, None)
            if ids:
                self._log_ended(session_id)
        return ids

    def _append_script(
        self, session_id: str, events: t.Sequence[tuple[str, str]], expected: int, floor: int
    ) -> list[int]:
        call = self._append_script_call(session_id, events, expected, floor)
        return [int(i) for i in self._together.call(call)]

    def _append_script_call(
        self, session_id: str, events: t.Sequence[tuple[str, str]], expected: int, floor: int
    ) -> _Call:
        args = self._args(
            self.clock(),
            self.max_events,
            scripts.ms(self.replay_ttl),
            expected,
            floor,
            self._channel(session_id),
        )
        return self._call("APPEND", list(self._keys(session_id)), [*args, *_encoded(events)])

    def _after_mismatch(
        self, session_id: str, events: t.Sequence[tuple[str, str]], expected: int, last: int
    ) -> list[int]:
        """The log does not end where this writer's last append left it."""
        if last > expected:
            # someone else wrote after us (a reader that took us for dead ended it)
            log.warning("session %s: its log was ended elsewhere", session_id)
            return []
        # A failover lost events [last + 1, expected]: put them back from this
        # process's copy of the log, then the new ones, in one script.
        kept = self._local._logs.get(session_id)
        lost: list[tuple[str, str]] = []
        if kept is not None and len(kept.log) >= expected:
            lost = [(e.name, e.data) for e in kept.log.read(last)][: expected - last]
        if len(lost) == expected - last:
            log.warning(
                "session %s: a failover lost events %d-%d; restored", session_id, last + 1, expected
            )
            ids = self._append_script(session_id, [*lost, *events], last, 0)
            if ids and ids[0] == -1:
                return []
            return ids[len(lost) :]
        log.warning(
            "session %s: a failover lost events %d-%d; ending its log",
            session_id,
            last + 1,
            expected,
        )
        data = json.dumps(errors.StoreUnavailable(_HOLE_MESSAGE).to_dict())
        self._append_script(session_id, [("error", data)], -1, expected)
        self._log_ended(session_id)
        return []

    def _log_ended(self, session_id: str) -> None:
        """Move an ended session from ``live`` to ``done`` and out of its client's
        share (each in its own slot, after the session's script)."""
        now = self.clock()
        replay_ms = scripts.ms(self.replay_ttl)
        calls = [
            self._call(
                "INDEX_END",
                [self._live_key, self._done_key],
                [session_id, repr(now + self.replay_ttl), replay_ms],
            )
        ]
        client = self._clients.pop(session_id, None)
        if client is None:  # claimed elsewhere (a reader here ended the log)
            client = t.cast("str | None", self._redis.hget(self._keys(session_id)[0], "client"))
        if client:
            calls.append(self._call("INDEX_REM", [self._client_key(client)], [session_id]))
        for reply in self._eval_all(calls):
            _reply(reply)

    @_wrap_errors
    def read(self, session_id: str, after: int, timeout: float) -> list[Event]:
        """Events after ``after`` (see :meth:`RedisStore.read`); waits on the
        session's shard channel through this node's tail."""
        local = self._local.read(session_id, after, timeout)
        if local is not None:
            return local
        deadline = time.monotonic() + timeout
        keys = list(self._keys(session_id)[:2])
        stream_key = keys[1]
        count = self._read_count(stream_key)
        gone, entries = self._run("READ", keys, self._args(self.clock(), max(after, 0), count))
        if int(gone):
            return []
        events = self._entries(entries)
        if not events and timeout > 0:
            tail = self._cluster_tail
            channel = self._channel(session_id)
            while tail.wait(channel, after, deadline - time.monotonic()):
                gone, entries = self._run(
                    "READ", keys, self._args(self.clock(), max(after, 0), count)
                )
                events = self._entries(entries)
                if events or int(gone):
                    break
        if events:
            self._learn_size(stream_key, events)
        return events

    @staticmethod
    def _entries(entries: t.Any) -> list[Event]:
        events = []
        for entry_id, fields in entries:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            events.append(
                Event(id=int(entry_id.partition("-")[2]), name=values["n"], data=values["d"])
            )
        return events

    def _cancel_script(self, session_id: str) -> t.Any:
        return self._run("CANCEL", [self._keys(session_id)[0]], self._args(self.clock()))

    @_wrap_errors
    def attach(self, session_id: str, reader_id: str) -> None:
        """Record (or refresh) an attached reader."""
        hash_key, _, readers_key = self._keys(session_id)
        self._run(
            "ATTACH",
            [hash_key, readers_key],
            self._args(
                self.clock(), reader_id, repr(self.presence_ttl), scripts.ms(self.presence_ttl)
            ),
        )

    def _eval_all(self, calls: t.Sequence[_Call], renew: bool = False) -> list[t.Any]:
        """Run script calls in one pipeline per node (after renewing this process's
        alive key, with ``renew``), waiting out a failover like every command.

        Calls whose node failed or answered ``MOVED``/``TRYAGAIN`` are sent again,
        with the slots map refreshed, until ``failover_wait`` passes (every script
        sent this way is idempotent); ``NOSCRIPT`` ones after loading the script.

        :return: each call's reply, or the :class:`redis.RedisError` it got.
        :raises redis.RedisError: the renewal failed.
        """
        cluster = self._redis
        if renew:
            cluster.set(self._process_key(self.process_id), "1", px=scripts.ms(self.liveness_ttl))
        replies: list[t.Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        deadline: float | None = None
        delay = 0.05
        while True:
            by_node: dict[str, tuple[t.Any, list[int]]] = {}
            again: list[int] = []
            for i in pending:
                try:
                    node = cluster.get_node_from_key(calls[i][1][0])  # type: ignore[no-untyped-call]
                except (RedisClusterException, IndexError) as exc:  # no master for the slot yet
                    replies[i] = redis.ConnectionError(f"Redis Cluster: {exc}")
                    again.append(i)
                    continue
                by_node.setdefault(node.name, (node, []))[1].append(i)
            for node, indexes in by_node.values():
                try:
                    pipe = cluster.get_redis_connection(node).pipeline(transaction=False)
                    for i in indexes:
                        script, keys, args = calls[i]
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
                    out = pipe.execute(raise_on_error=False)
                except (redis.RedisError, OSError) as exc:
                    if not _transient(exc):
                        log.warning("Redis Cluster: a pipeline to %s failed: %r", node.name, exc)
                        raise
                    for i in indexes:
                        replies[i] = exc
                    again += indexes
                    continue
                for i, reply in zip(indexes, out, strict=True):
                    replies[i] = reply
                    if isinstance(reply, NoScriptError):
                        script = calls[i][0]
                        script.sha = cluster.script_load(script.script)
                        again.append(i)
                    elif isinstance(reply, Exception):
                        if _transient(reply):
                            again.append(i)
                        else:
                            log.warning(
                                "Redis Cluster: a script on %s failed: %r", node.name, reply
                            )
            if not again:
                return replies
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.failover_wait
            if now + delay > deadline:
                return replies  # the failures, as replies
            cluster.refresh()
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
            pending = again

    @_wrap_errors
    def tick_many(self, session_ids: t.Sequence[str]) -> dict[str, GenerationSignals]:
        """Report cancel and readers of every running session of this process and
        renew its liveness (see :meth:`RedisStore.tick_many`): a pipeline per node;
        now and then also push the TTL of the indexes the sessions are in."""
        self._redis  # noqa: B018 - connects, registering the scripts
        args = self._args(self.clock(), scripts.ms(self.running_ttl))
        script = self._scripts["TICK"]
        calls = [(script, list(self._keys(session_id)), args) for session_id in session_ids]
        now = time.monotonic()
        every = self.running_ttl / 4
        extend: list[str | bytes] = []
        signals: dict[str, GenerationSignals] = {}
        for session_id, reply in zip(session_ids, self._eval_all(calls, renew=True), strict=True):
            cancelled, readers, *rest = _reply(reply)
            signals[session_id] = GenerationSignals(cancelled=bool(cancelled), readers=int(readers))
            client = rest[0] if rest else None
            if client and now - self._client_extended.get(session_id, 0.0) >= every:
                self._client_extended[session_id] = now
                extend.append(self._client_key(client))
        if session_ids and now - self._live_extended >= every:
            self._live_extended = now
            extend.append(self._live_key)
        for key in extend:  # "GT": only ever longer
            self._redis.execute_command("PEXPIRE", key, scripts.ms(self.running_ttl), "GT")
        return signals

    @_wrap_errors
    def sweep(self, now: float) -> int:
        """Delete the keys of sessions expired at ``now``; returns how many."""
        deadline = time.monotonic() + self.failover_wait
        while True:  # pipelines wait out a failover here (a sweep is idempotent)
            try:
                return self._sweep_cluster(now)
            except (redis.RedisError, OSError, RedisClusterException) as exc:
                if not _transient(exc) or time.monotonic() + 0.5 > deadline:
                    if isinstance(exc, RedisClusterException):  # not a RedisError
                        raise redis.ConnectionError(f"Redis Cluster: {exc}") from exc
                    raise
                self._redis.refresh()
                time.sleep(0.5)

    def _sweep_cluster(self, now: float) -> int:
        client = self._redis
        doomed: list[tuple[str, str]] = [
            (index, session_id)
            for index in (self._live_key, self._done_key)
            for session_id in t.cast("list[str]", client.zrangebyscore(index, "-inf", repr(now)))
        ]
        running = t.cast("list[str]", client.zrangebyscore(self._live_key, "+inf", "+inf"))
        if running:  # one pipeline: a round trip per node, not per session
            pipe = client.pipeline()  # type: ignore[no-untyped-call]
            for session_id in running:
                pipe.exists(self._keys(session_id)[0])
            for session_id, exists in zip(running, pipe.execute(), strict=True):
                if not exists:
                    doomed.append((self._live_key, session_id))
        if doomed:
            pipe = client.pipeline()  # type: ignore[no-untyped-call]
            for index, session_id in doomed:
                for key in self._keys(session_id):
                    pipe.delete(key)
                pipe.zrem(index, session_id)
            pipe.execute()
        return len(doomed)

    def close(self) -> None:
        """Stop the heartbeat (this process's generations then lapse) and close
        every connection."""
        self._closed.set()
        with self._lock:
            cluster, self._cluster = self._cluster, None
            tail, self._tail_ = self._tail_, None
        if tail is not None:
            tail.close()
        if cluster is not None:
            cluster.close()
