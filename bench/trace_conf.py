"""gunicorn settings for :mod:`bench.idle_trace`: ngai_chat's own, plus a
tracemalloc snapshot of the worker on demand.

The worker starts tracing its allocations once it is set up
(``BENCH_TRACE_FRAMES`` frames each; tracing the imports too would take
minutes). On ``SIGUSR2`` it collects garbage and writes a snapshot to
``$BENCH_TRACE_DIR/<n>.snapshot`` (n counting from 0), then ``<n>.done`` once
it is complete. Only for measuring: never in production.
"""

from __future__ import annotations

import os
import signal
import typing as t

from ngai_chat.gunicorn_conf import *  # noqa: F403
from ngai_chat.gunicorn_conf import post_worker_init as _ngai_post_worker_init


def post_worker_init(worker: t.Any) -> None:
    _ngai_post_worker_init(worker)
    import gc
    import tracemalloc
    from pathlib import Path

    import gevent

    folder = Path(os.environ["BENCH_TRACE_DIR"])
    taken = [0]
    tracemalloc.start(int(os.environ.get("BENCH_TRACE_FRAMES", "30")))

    def dump() -> None:
        gc.collect()
        index = taken[0]
        taken[0] += 1
        tracemalloc.take_snapshot().dump(str(folder / f"{index}.snapshot"))
        (folder / f"{index}.done").write_text("")

    def on_signal(sig: int, frame: t.Any) -> None:
        gevent.get_hub().loop.run_callback(dump)

    signal.signal(signal.SIGUSR2, on_signal)
