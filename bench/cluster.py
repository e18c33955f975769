"""Scenario ``cluster``: the store comparison's load (closed-loop sessions of many
chunks) on a Redis Cluster against one Redis, in the same run.

The cluster is started for the scenario (3 masters + 3 replicas on free ports,
``bench/redis_cluster.py``) and stopped after it; one Redis is the shared
one of the store comparison (``REDIS_URL`` of :mod:`bench.scenarios`). The figure
that matters is the worker's CPU per chunk, cluster / one Redis (target under
:data:`CLUSTER_TARGET`).
"""

from __future__ import annotations

import math
import shutil
import typing as t
import uuid

from .harness import Bench
from .harness import Row
from .harness import Run
from .harness import ScenarioResult
from .harness import Served
from .harness import alternate
from .harness import median_run
from .redis_cluster import RedisCluster
from .redis_server import REDIS_URL
from .redis_server import delete_keys
from .redis_server import redis_unavailable

__all__ = ["CLUSTER_TARGET", "cluster_comparison"]

#: worker CPU per chunk on the cluster / on one Redis, at most
CLUSTER_TARGET = 1.2


def cluster_comparison(bench: Bench, result: ScenarioResult) -> None:
    """The store comparison's load on one Redis and on a cluster, alternating."""
    reason = redis_unavailable()
    if reason is None and not (shutil.which("redis-server") and shutil.which("redis-cli")):
        reason = "redis-server and redis-cli are needed to start a cluster"
    if reason is not None:
        result.skipped = reason
        return

    profile = bench.profile
    model = f"bench/{profile.chunks}"
    prefix = f"bench-{uuid.uuid4()}:"

    def on(served: Served) -> t.Callable[[], Run]:
        return lambda: bench.closed_loop(
            served.target,
            model,
            clients=profile.store_clients,
            seconds=profile.round_seconds,
            worker=served.worker,
        )

    cluster = RedisCluster().start()
    try:
        single = {"REDIS_URL": REDIS_URL, "NGAI_REDIS_KEY_PREFIX": prefix}
        on_cluster = {"REDIS_URL": cluster.url, "NGAI_REDIS_KEY_PREFIX": prefix}
        with (
            bench.serve("redis", **single) as redis_app,
            bench.serve("cluster", **on_cluster) as cluster_app,
        ):
            runs = alternate(profile.rounds, {"redis": on(redis_app), "cluster": on(cluster_app)})
    finally:
        result.details["keys_deleted"] = delete_keys(prefix)
        cluster.close()
    redis, clustered = median_run(runs["redis"]), median_run(runs["cluster"])
    ratio = clustered.cpu_per_event("worker") / redis.cpu_per_event("worker")
    verdict = "?" if math.isnan(ratio) else ("met" if ratio < CLUSTER_TARGET else "NOT met")
    result.rows += [
        Row("cluster", f"{profile.store_clients} sessions x {profile.chunks} chunks", "events/s",
            redis.rate, clustered.rate, "one Redis / cluster",
            note=f"median of {profile.rounds}; worker {clustered.core_share('worker'):.0%} "
                 "of a core on the cluster",
            errors=redis.stats.errors + clustered.stats.errors),
        Row("cluster", "worker CPU per chunk", "us", redis.cpu_per_event("worker"),
            clustered.cpu_per_event("worker"), "one Redis / cluster",
            note=f"target cluster / one Redis < {CLUSTER_TARGET:g}: {verdict}"),
    ]  # fmt: skip
    result.details.update(
        {
            name: {"median": median.summary(), "steady_events_per_s": [r.rate for r in runs[name]]}
            for name, median in (("redis", redis), ("cluster", clustered))
        }
    )
