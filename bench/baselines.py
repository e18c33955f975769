"""The relays ngai_chat is measured against, run side by side with it in one run.

- :class:`Nginx`: nginx with ``proxy_buffering off`` in front of the fake upstream,
  the C pass-through (one worker process). The client's one ``GET /stream?model=M``
  goes straight through it (as the upstream's ``POST``, with a fixed body): no
  ``POST /prepare``, no parsing, no re-framing.
- :class:`NodeRelay`: ``bench/node_relay``, a typical two-step Node/Express relay
  (in-memory sessions, ``fetch()`` upstream, ``JSON.parse`` per chunk, re-emitted
  as ``event: chunk``). Its packages come from its ``package-lock.json`` through
  ``npm ci``, on first use.

Each one is a context manager with the pid whose CPU is the relay's, and a
``*_unavailable()`` function that says why it cannot run here (the scenarios skip
it with that reason).
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import resource
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.live import free_port

from . import procinfo
from .jobs import MESSAGES
from .jobs import Target

__all__ = [
    "NODE_DIR",
    "BaselineError",
    "Nginx",
    "NodeRelay",
    "nginx_unavailable",
    "node_unavailable",
]

NODE_DIR = Path(__file__).resolve().parent / "node_relay"
#: seconds a baseline gets to start listening
START_TIMEOUT = 20.0
#: seconds ``npm ci`` may take
NPM_TIMEOUT = 300.0


class BaselineError(RuntimeError):
    """A baseline relay did not start."""


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-limit:]
    except OSError:
        return ""


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise BaselineError(f"exited with {proc.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BaselineError(f"not listening on {port} after {START_TIMEOUT:g} s: {_tail(log)}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- nginx -----------------------------------------------------------------------------


def nginx_unavailable() -> str | None:
    """Why nginx cannot run here, or None."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx is not installed (apt-get install -y nginx)"
    return None


def _nginx_executable() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


_NGINX_CONF = """\
{user}worker_processes 1;
worker_rlimit_nofile {files};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_read_timeout 300s;
        # GET /stream?model=M: the stream, as the upstream's POST with a fixed body
        location = /stream {{
            proxy_pass http://127.0.0.1:{upstream_port}/api/v1/chat/completions;
            proxy_method POST;
            proxy_set_header Content-Type application/json;
            proxy_set_body '{body}';
        }}
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
    }}
}}
"""


class Nginx:
    """nginx (one worker, ``proxy_buffering off``) proxying to ``127.0.0.1:upstream_port``.

    :param upstream_port: the fake upstream's port.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self._proc: subprocess.Popen[bytes] | None = None
        #: the worker process: the one that relays
        self.pid = 0

    @property
    def target(self) -> Target:
        return Target("get", self.port, "/stream")

    def start(self) -> Nginx:
        # As root, nginx would switch its worker to "nobody"; keep it as this user.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};\n" if os.getuid() == 0 else ""
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        files = 40_000 if hard == resource.RLIM_INFINITY else min(40_000, hard)
        conf = self._dir / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(
                user=user,
                prefix=self._dir,
                port=self.port,
                upstream_port=self.upstream_port,
                files=files,
                connections=max(1024, files - 64),
                body=json.dumps({"model": "$arg_model", "messages": MESSAGES, "stream": True}),
            )
        )
        log = self._dir / "error.log"
        try:
            with open(self._dir / "stderr.log", "wb") as stderr:
                self._proc = subprocess.Popen(
                    [_nginx_executable(), "-p", str(self._dir), "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                )
            _wait_listening(self.port, self._proc, log)
            self.pid = procinfo.worker_pid(self._proc.pid)
        except (OSError, RuntimeError) as exc:
            self.close()
            raise BaselineError(f"{exc} {_tail(log)}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def log_text(self) -> str:
        return _tail(self._dir / "error.log", 100_000) + _tail(self._dir / "stderr.log", 100_000)

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)

    def close(self) -> None:
        """Stop nginx and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- Node/Express ------------------------------------------------------------------------


def node_unavailable() -> str | None:
    """Why the Node relay cannot run here (no node, or its packages do not install), or None."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are not installed (apt-get install -y nodejs npm)"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return None
    try:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            check=True,
            timeout=NPM_TIMEOUT,
        )
    except subprocess.CalledProcessError as exc:
        return f"npm ci in {NODE_DIR} failed: {exc.stderr.decode(errors='replace')[-500:]}"
    except subprocess.TimeoutExpired:
        return f"npm ci in {NODE_DIR} took over {NPM_TIMEOUT:g} s"
    return None


class NodeRelay:
    """``node bench/node_relay/server.js`` against the fake upstream.

    :param upstream_base_url: the fake's ``base_url`` (``.../api/v1``).
    """

    def __init__(self, upstream_base_url: str) -> None:
        self.upstream_base_url = upstream_base_url
        self.port = 0
        self._log = Path(tempfile.mkstemp(prefix="bench-node-", suffix=".log")[1])
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The node process (its JavaScript thread and libuv's helpers all count)."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def target(self) -> Target:
        return Target("relay", self.port)

    def start(self) -> NodeRelay:
        node = shutil.which("node")
        if node is None:
            raise BaselineError("node is not installed")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "UPSTREAM_BASE_URL": self.upstream_base_url,
            "OPENROUTER_API_KEY": "bench-key",
            "PORT": "0",
            "NODE_ENV": "production",
        }
        try:
            with open(self._log, "wb") as log:
                self._proc = subprocess.Popen(
                    [node, "server.js"],
                    cwd=NODE_DIR,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
        except OSError as exc:
            raise BaselineError(str(exc)) from exc
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = self._proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            first = lines.get(timeout=START_TIMEOUT).decode()
            if not first.startswith("listening "):
                raise BaselineError(f"node relay said {first!r}: {_tail(self._log)}")
            self.port = int(first.split()[1])
            _wait_listening(self.port, self._proc, self._log)
        except queue.Empty:
            self.stop()
            raise BaselineError(f"node relay silent for {START_TIMEOUT:g} s") from None
        except BaseException:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        return _tail(self._log, 100_000)

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            if self._proc.stdout is not None:
                self._proc.stdout.close()

    def close(self) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> NodeRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
