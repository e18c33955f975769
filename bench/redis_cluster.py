"""A real Redis Cluster for the tests: 3 masters + 3 replicas on free ports.

The ``redis_cluster`` fixture (session-scoped) starts six ``redis-server
--cluster-enabled yes`` processes, joins them with ``redis-cli --cluster create
… --cluster-replicas 1``, waits (with a deadline) until every node reports the
cluster ``ok``, and stops them by PID at the end. Tests that fail a node over
(``CLUSTER FAILOVER``, SIGKILL) first wait for :meth:`RedisCluster.wait_healthy`
(3 masters, each with a replica in sync), and restart what they killed
(:meth:`RedisCluster.restart_killed`: it rejoins as a replica).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import typing as t
from pathlib import Path

import redis
from redis.crc import key_slot

from .live import free_ports
from .live import wait_until
from .redis_server import redis_answers

__all__ = ["ClusterNode", "RedisCluster"]

#: seconds a master may be unreachable before its replica takes over: short, so a
#: SIGKILLed master fails over within a couple of seconds in the tests
NODE_TIMEOUT_MS = 1000
REPLICAS = ("--cluster-replicas", "1", "--cluster-yes")


class ClusterNode:
    """One ``redis-server`` of the cluster, restartable on the same port and
    directory (so it keeps its ``nodes.conf`` and rejoins as the same node)."""

    def __init__(self, directory: Path, port: int, bus_port: int) -> None:
        self.port = port
        #: the cluster bus port, set explicitly: the default (port + 10000) may be
        #: taken, or past 65535
        self.bus_port = bus_port
        self.dir = directory / str(self.port)
        self.dir.mkdir(parents=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (`make system-deps`)")
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor", "0",
            "--save", "",
            "--appendonly", "no",
            "--shutdown-timeout", "0",  # a master stops without waiting for replicas
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def wait_up(self, timeout: float = 30.0) -> None:
        """Wait until the started node answers ``PING``."""

        def up() -> bool:
            if self.process is None or self.process.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"redis-server on {self.port} exited:\n{log}")
            return redis_answers("127.0.0.1", self.port, 1.0)

        wait_until(up, timeout, f"node {self.port}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: the node dies without a word, as a crashed host would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def role(self) -> str:
        with self.client() as client:
            return str(client.execute_command("ROLE")[0])


class RedisCluster:
    """Six nodes, three of them masters, each with a replica."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="ngai-cluster-"))
        ports = free_ports(12)  # all different: a clash would fail a node's start
        self.nodes = [ClusterNode(self._dir, ports[i], ports[6 + i]) for i in range(6)]

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming two of the nodes (any one would do)."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes[:2])

    def start(self, timeout: float = 60.0) -> RedisCluster:
        try:
            self._create(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _create(self, timeout: float) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_up(timeout)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (`make system-deps`)")
        subprocess.run(
            [cli, "--cluster", "create", *(n.address for n in self.nodes), *REPLICAS],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=timeout,
        )
        self.wait_healthy(timeout)

    def _healthy(self) -> bool:
        masters = 0
        for node in self.nodes:
            if not node.running:
                return False
            try:
                with node.client() as client:
                    info = client.cluster("info")
                    if info.get("cluster_state") != "ok":
                        return False
                    if int(info.get("cluster_slots_ok", 0)) != 16384:
                        return False
                    if node.role() == "master":
                        masters += 1
                    elif client.info("replication").get("master_link_status") != "up":
                        return False
            except redis.RedisError:
                return False
        return masters == 3

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until all six nodes run, 3 are masters and every replica is in sync."""
        wait_until(self._healthy, timeout, "a healthy cluster")

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.running and n.role() == "master"]

    def node_of(self, key: str) -> ClusterNode:
        """The master that serves ``key`` now."""
        return self.owners()(key)

    def owners(self) -> t.Callable[[str], ClusterNode]:
        """Which master serves a key, by the slots map as it is now (one query)."""
        node = next(n for n in self.nodes if n.running)
        with node.client() as client:
            ranges = [
                (int(start), int(end), int(master[1]))
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS")
            ]

        def owner(key: str) -> ClusterNode:
            slot = key_slot(key.encode())
            port = next(port for start, end, port in ranges if start <= slot <= end)
            return next(n for n in self.nodes if n.port == port)

        return owner

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        for node in self.nodes:
            if node is master or not node.running:
                continue
            with node.client() as client:
                replication = client.info("replication")
                if (
                    replication.get("role") == "slave"
                    and int(replication.get("master_port", 0)) == master.port
                ):
                    return node
        raise AssertionError(f"no replica of {master.address}")

    def restart_killed(self, timeout: float = 60.0) -> None:
        """Restart killed nodes: they rejoin as replicas (and sync in the background;
        :meth:`wait_healthy` waits for that)."""
        for node in self.nodes:
            if not node.running:
                node.start()
                node.wait_up(timeout)

    def flush(self) -> None:
        for node in self.masters():
            with node.client() as client:
                client.flushall()

    def close(self) -> None:
        for node in self.nodes:  # all at once, then wait for each
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
