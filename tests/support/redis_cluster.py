"""The ``redis_cluster`` fixture: a real 3 + 3 Redis Cluster for the test session
(:class:`bench.redis_cluster.RedisCluster` starts it on free ports and stops it by PID).
"""

from __future__ import annotations

import typing as t

import pytest

from bench.redis_cluster import RedisCluster

__all__ = ["RedisCluster", "redis_cluster"]


@pytest.fixture(scope="session")
def redis_cluster() -> t.Iterator[RedisCluster]:
    """A running 3 + 3 Redis Cluster for this test session."""
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
