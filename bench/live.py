"""Serve the app with gunicorn's gevent worker on 127.0.0.1, as production does.

Integration tests run the app as a subprocess rather than in-process: the gevent
worker monkey-patches before the app is imported, exactly like the ``Procfile``,
and the test process itself stays unpatched.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
import typing as t
from pathlib import Path

import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listens on right now
    (held open together while they are picked: one at a time, the kernel may hand
    out a port it just gave back).
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def wait_until(
    predicate: t.Callable[[], t.Any],
    timeout: float,
    what: str = "the condition",
    *,
    interval: float = 0.02,
    sleep: t.Callable[[float], t.Any] = time.sleep,
) -> t.Any:
    """Poll ``predicate`` until it returns something truthy, and return that; fail
    after ``timeout`` seconds.

    :param what: said in the failure, e.g. ``"gunicorn on port 3000"``.
    :param interval: seconds between polls.
    :param sleep: how to wait between polls (``gevent.sleep`` lets greenlets run).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        sleep(interval)


ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "ROOT",
    "LiveApp",
    "connect",
    "free_port",
    "pending_bytes",
    "readers_that_never_read",
    "vm_rss_kib",
    "wait_until",
]


class LiveApp:
    """One gunicorn process serving ``wsgi:app`` (or ``app_spec``) on a free port.

    :param env: settings for the app (``NGAI_*``, ``OPENROUTER_*``, ``REDIS_URL``);
        the test process's own ``NGAI_*``/``OPENROUTER_*``/``REDIS_URL`` are not
        inherited.
    :param workers: gunicorn ``-w``.
    :param app_spec: the WSGI app to load, ``module:attr``.
    :param command: run this instead of gunicorn (e.g. ``python -m ngai_chat``,
        which binds by itself from ``HOST``/``PORT``).
    :param cwd: the working directory (where a ``.env`` would be read).
    """

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        workers: int = 1,
        app_spec: str = "wsgi:app",
        port: int | None = None,
        extra_args: t.Sequence[str] = (),
        command: t.Sequence[str] | None = None,
        cwd: str | os.PathLike[str] = ROOT,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the app
            prefix="ngai-live-", suffix=".log", delete=False
        )
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NGAI_", "OPENROUTER_")) and k not in {"REDIS_URL", "HOST", "PORT"}
        }
        clean.update({"PYTHONUNBUFFERED": "1", "PORT": str(self.port)})
        clean.update(env or {})
        self.env = clean
        self.cwd = cwd
        self.args = (
            list(command)
            if command is not None
            else [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(ROOT / "gunicorn.conf.py"),
                "-b",
                f"127.0.0.1:{self.port}",
                "-w",
                str(workers),
                *extra_args,
                app_spec,
            ]
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> LiveApp:
        """Start gunicorn and wait until ``/health`` answers."""
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited early:\n{self.log_text()}")
            try:
                return requests.get(self.base_url + "/health", timeout=1).status_code < 600
            except requests.RequestException:
                return False

        wait_until(ready, timeout, f"gunicorn on port {self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def worker_pids(self) -> list[int]:
        """The pids of gunicorn's workers (the master's children)."""
        if self.proc is None:
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def kill(self) -> None:
        """SIGKILL the workers and the master at once: a crashed instance."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for pid in self.worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(10)

    def log_text(self) -> str:
        """Everything gunicorn and the app logged so far."""
        self._log.flush()
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def url(self, path: str) -> str:
        return self.base_url + path

    def __enter__(self) -> LiveApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the server and remove its log file."""
        self.stop()
        self._log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._log.name)


def vm_rss_kib(pid: int) -> int:
    """The resident memory of a process, from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def connect(app: LiveApp, rcvbuf: int | None = None) -> socket.socket:
    """A raw client socket to ``app``; a small ``rcvbuf`` makes a reader that
    stops reading fill up at once.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so that the window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", app.port))
    return sock


def pending_bytes(sock: socket.socket) -> int:
    """Bytes waiting, unread, in ``sock``'s receive buffer."""
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


@contextlib.contextmanager
def readers_that_never_read(app: LiveApp, path: str, count: int) -> t.Iterator[None]:
    """``count`` streams of ``path`` whose clients never read, held open until the
    block ends; it starts once the server has written to every one of them.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = connect(app, rcvbuf=4096)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sockets.append(sock)
        wait_until(lambda: all(pending_bytes(s) > 0 for s in sockets), 20, "first bytes")
        yield
    finally:
        for sock in sockets:
            sock.close()
