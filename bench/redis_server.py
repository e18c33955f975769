"""A private ``redis-server`` for the bench and the tests: :class:`RedisServer`
runs one on a free port of 127.0.0.1 and can stop and restart it on the same port;
:func:`redis_answers` says whether a server answers ``PING``. (The tests' fixtures
over it are in ``tests/support/redis_server.py``.)
"""

from __future__ import annotations

import importlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.live import free_port

__all__ = ["INSTALL_HINT", "SHARED_REDIS", "RedisServer", "redis_answers"]

#: host and port of the Redis that CI (and ``make``) runs for everyone
SHARED_REDIS = ("127.0.0.1", 6379)

INSTALL_HINT = (
    "redis-server is not installed, and these tests need a private Redis server. "
    "Install it (`make system-deps`, or `apt-get install redis-server`), "
    "or deselect them with `-m 'not redis'`."
)


def redis_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers ``PING`` at ``host:port``.

    Speaks the protocol over a plain socket, so it needs no client library and
    leaves no pooled connection behind.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1, without persistence.

    :param port: port to listen on; a free one when ``None``. It stays the same
        across :meth:`stop` and :meth:`start`, so clients can reconnect.
    :param executable: the server binary.
    """

    def __init__(self, port: int | None = None, *, executable: str = "redis-server") -> None:
        self.port = port or free_port()
        self.executable = executable
        #: ``redis://`` URL of database 0
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="ngai-redis-"))
        self._log_path = self._dir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers ``PING``.

        :param timeout: seconds to wait for the first ``PONG``.
        :raises RuntimeError: the binary is missing, or the server exited or
            did not answer in time (the message has its log).
        """
        if self.running:
            return self
        binary = shutil.which(self.executable)
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not redis_answers("127.0.0.1", self.port, timeout=0.2):
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"redis-server exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer in {timeout}s:\n{self.log()}")
            time.sleep(0.01)  # polling a condition with a deadline, not hoping
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop, then start again on the same port (with an empty dataset)."""
        self.stop(timeout)
        return self.start(timeout)

    def log(self) -> str:
        """The server's log so far, for failure messages."""
        try:
            return self._log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: the shared Redis the bench compares against
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_unavailable() -> str | None:
    """Why the Redis store cannot be benchmarked, or None when it can."""
    try:
        importlib.import_module("ngai_chat.store.redis")
    except ImportError as exc:
        return f"ngai_chat.store.redis does not import ({exc})"
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:
        return f"no Redis answers at {REDIS_URL} ({exc})"
    return None


def delete_keys(prefix: str) -> int:
    """Delete the run's keys from the shared Redis; returns how many there were."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)
