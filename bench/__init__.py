"""The relay benchmark: ``python -m bench`` (``make bench``), ``--quick`` for a short run.

It serves the app as production does (gunicorn, one gevent worker) against the
fake upstream (which the tests use too), drives it from a separate load-generator process,
and reports every figure as a ratio against a baseline measured in the same
run: the same clients reading the fake upstream directly, one reader instead of
many, the memory store instead of Redis. Load goes only to ``127.0.0.1``; every
loop is bounded in count and time. See ``bench/README.md``.

Modules: :mod:`bench.scenarios` and :mod:`bench.series` (what is measured) over
:mod:`bench.harness` (the profile, :class:`~bench.harness.Bench`, the results),
:mod:`bench.loadgen` (the gevent client process) with :mod:`bench.httpclient` and
:mod:`bench.jobs`, :mod:`bench.runner` (its subprocesses), :mod:`bench.procinfo`
(RSS and CPU from ``/proc``), :mod:`bench.stats` and :mod:`bench.report`; the fake
upstream (:mod:`bench.fake_upstream`, :mod:`bench.fake_chunks`) and the gunicorn
runner (:mod:`bench.live`), which the tests use too.
"""

from __future__ import annotations
