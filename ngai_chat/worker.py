"""A gunicorn gevent worker with a client timeout (``NGAI_CLIENT_TIMEOUT``).

gunicorn's ``--timeout`` under gevent is the worker's heartbeat, not a limit on
a request: a client that sends half its headers or body, or a stream reader that
stops reading, holds a connection (of ``--worker-connections``) for ever. This
worker puts a timeout on each client socket, so that:

* a read of the request (headers or body) that waits longer than the timeout
  fails, and the connection is closed; the headers as a whole must also arrive
  within it (gunicorn's keep-alive timer, lowered to the client timeout);
* a write that cannot hand its bytes to the client within the timeout fails
  (gevent's ``sendall`` applies the socket timeout to the whole write), so a
  reader that stops reading is dropped. The response is still closed the usual
  way: the stream's ``finally`` and ``call_on_close`` run.

A stream that waits for the model writes nothing in the meantime, so long
answers with heartbeats are not cut; only a write the client does not take is.

Use it with ``worker_class = "ngai_chat.worker.ClientTimeoutWorker"`` (as
``ngai_chat/gunicorn_conf.py`` does).
"""

from __future__ import annotations

import contextlib
import gc
import typing as t

import gevent
import gevent.socket
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from .config import ConfigError
from .config import Settings
from .config import load_settings

__all__ = ["GC_THRESHOLDS", "ClientTimeoutWorker", "tune_gc"]


class _ClientSocket(gevent.socket.socket):  # type: ignore[misc]
    """A client socket whose ``sendall`` hands a write that fits the socket's
    buffer over in one ``send``: gevent's own asks the buffer's size first (a
    ``getsockopt`` system call on every write, one per event of every stream).
    A write the buffer does not take whole goes on through gevent's ``sendall``,
    under the same timeout.
    """

    __slots__ = ()

    def sendall(self, data: t.Any, flags: int = 0) -> None:
        sent = self.send(data, flags)  # waits (the socket's timeout) only when full
        if sent < len(data):
            super().sendall(memoryview(data)[sent:], flags)


class ClientTimeoutWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker, with ``NGAI_CLIENT_TIMEOUT`` on every client socket."""

    #: seconds; read from the settings when the worker starts
    client_timeout: float = Settings.client_timeout

    def init_process(self) -> None:
        # the master checked the settings already: on an error keep the default
        with contextlib.suppress(ConfigError):
            self.client_timeout = load_settings().client_timeout
        super().init_process()

    def timeout_ctx(self) -> gevent.Timeout:
        # gunicorn waits this long for a request's headers (keep-alive or not)
        return gevent.Timeout(min(float(self.cfg.keepalive), self.client_timeout), False)

    def handle(self, listener: t.Any, client: t.Any, addr: t.Any) -> None:
        # GeventWorker.handle makes the socket blocking (no timeout) and defers to
        # AsyncWorker.handle; give it the client timeout instead.
        client.settimeout(self.client_timeout)
        if type(client) is gevent.socket.socket:
            client.__class__ = _ClientSocket
        AsyncWorker.handle(self, listener, client, addr)

    def handle_request(self, listener_name: t.Any, req: t.Any, sock: t.Any, addr: t.Any) -> t.Any:
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except TimeoutError:
            # gunicorn would log an expected client failure with a traceback;
            # StopIteration is its own "close this connection" signal.
            self.log.info(
                "closed a connection from %s: it took no bytes for %g s (NGAI_CLIENT_TIMEOUT)",
                _peer(addr),
                self.client_timeout,
            )
            raise StopIteration from None


def _peer(addr: t.Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


#: ``gc.set_threshold`` in a worker: a young collection every 10,000 objects (not
#: 700), the older generations 50 and 100 times less often
GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    """Tune the garbage collector for a worker holding thousands of streams: what
    start-up made is frozen (never scanned again) and collections run far less
    often. With Python's defaults a worker holding 500 streams ran a full
    collection every few seconds, ~140 ms each, stopping every stream, and spent
    a fifth of its time collecting (bench/README.md, "Round 4"). Reference counting
    frees almost everything here; collections only find cycles.
    ``gunicorn_conf.post_worker_init`` calls it, and so does the soak's load
    generator.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
