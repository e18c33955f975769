"""The background sweep that frees expired sessions and logs.

Expiry itself is exact without it (the store checks deadlines on every access);
the sweep only gives the memory back. One greenlet per worker process, started
lazily on the first request — after gunicorn forked, never in a preloading master
— idempotently, and started again if it died.
"""

from __future__ import annotations

import logging
import time
import typing as t

import gevent
import gevent.greenlet

from .errors import StoreUnavailable
from .store import Store

__all__ = ["Sweeper", "sweep_once"]

log = logging.getLogger(__name__)


def sweep_once(store: Store, now: float) -> int:
    """Free every session expired at ``now``; returns how many."""
    try:
        freed = store.sweep(now)
    except StoreUnavailable:
        log.warning("sweep skipped: the store is unreachable")
        return 0
    if freed:
        log.debug("swept %d expired sessions", freed)
    return freed


class Sweeper:
    """Runs :func:`sweep_once` every ``interval`` seconds in a greenlet.

    :param store: the store to sweep.
    :param interval: seconds between sweeps.
    :param clock: wall-clock source.
    :param spawn: starts a greenlet (a seam for tests).
    """

    def __init__(
        self,
        store: Store,
        interval: float,
        *,
        clock: t.Callable[[], float] = time.time,
        spawn: t.Callable[..., gevent.greenlet.Greenlet] = gevent.spawn,
    ) -> None:
        self.store = store
        self.interval = interval
        self.clock = clock
        self.spawn = spawn
        self._greenlet: gevent.greenlet.Greenlet | None = None

    @property
    def running(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead

    def ensure_running(self) -> None:
        """Start the sweep greenlet unless it runs already (cheap; call often)."""
        if not self.running:
            self._greenlet = self.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _loop(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                sweep_once(self.store, self.clock())
            except Exception:  # keep sweeping whatever one pass hit
                log.exception("sweep failed")
