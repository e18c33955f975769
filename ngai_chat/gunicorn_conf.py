"""gunicorn settings for ngai_chat (used by the Procfile, ``make run`` and the tests).

The gevent worker monkey-patches before it imports the app, so there is no
``preload_app``: preloading would import ``ssl`` and ``requests`` unpatched, and
start background greenlets in the master. Settings are checked once in the master
(``on_starting``) so a bad value stops the server with one clear line instead of
every worker failing to boot; the master also gives the startup notices (demo
mode, the open-relay warning) once for all its workers, and says where it serves
once it listens.

It binds ``HOST:PORT`` (``127.0.0.1:3000``: a person's machine) unless told
otherwise; the Procfile binds ``0.0.0.0:$PORT`` itself, as a PaaS needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import typing as t
from pathlib import Path

import ngai_chat.log
from ngai_chat.config import ConfigError
from ngai_chat.config import load_server_settings
from ngai_chat.config import load_settings
from ngai_chat.log import emit
from ngai_chat.log import startup_notices
from ngai_chat.worker import tune_gc

try:
    _server = load_server_settings()
except ConfigError as exc:
    emit(str(exc), level="error")
    sys.exit(1)

bind = f"{_server.host}:{_server.port}"
#: gunicorn's gevent worker, with a timeout on every client socket (NGAI_CLIENT_TIMEOUT)
worker_class = "ngai_chat.worker.ClientTimeoutWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
#: open connections per worker; NGAI_MAX_STREAMS stays below it
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "6000"))
#: seconds live answers get to finish on SIGTERM before the worker is stopped
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "120"))
#: under gevent this is the worker heartbeat, not a request time limit
timeout = 60
keepalive = 5
preload_app = False
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
# emit() and the workers read it from the environment, .env or not
os.environ["NGAI_LOG_FORMAT"] = _server.log_format
if _server.log_format == "json":
    #: gunicorn's own lines as JSON objects too
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "ngai_chat.log.JsonFormatter"}},
        "handlers": {
            "error_console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": ["error_console"]},
    }
#: gunicorn 25+ opens a control socket at one fixed path per user; several
#: instances on one host (tests, blue/green deploys) would fight over it
control_socket_disable = True


def on_starting(server: t.Any) -> None:
    """Check the configuration before forking any worker."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        emit(str(exc), level="error")
        sys.exit(1)
    if server.cfg.workers > 1 and not settings.store_shared:
        emit(
            f"{server.cfg.workers} workers need a shared store: set REDIS_URL to a Redis "
            "(e.g. redis://localhost:6379/0), or run one worker (WEB_CONCURRENCY=1 / -w 1). "
            "The in-memory store would split sessions between workers.",
            level="error",
        )
        sys.exit(1)
    if settings.max_streams >= server.cfg.worker_connections:
        emit(
            f"NGAI_MAX_STREAMS={settings.max_streams} is not below gunicorn's worker "
            f"connections ({server.cfg.worker_connections}): over-limit streams would queue "
            "instead of getting a quick capacity_exceeded. Lower NGAI_MAX_STREAMS or raise "
            "GUNICORN_WORKER_CONNECTIONS.",
            level="warning",
        )
    setup_metrics_dir(settings.metrics)
    for level, message in startup_notices(settings):
        server.log.log(level, "ngai_chat: %s", message)
    # the workers fork from here and inherit it: they do not say these again
    ngai_chat.log.notices_given_by_master = True


def when_ready(server: t.Any) -> None:
    """Say where the server listens, once it does."""
    for listener in server.LISTENERS:
        address = listener.sock.getsockname()
        if not isinstance(address, tuple):  # a unix socket
            server.log.info("ngai_chat: serving on %s", listener)
            continue
        host, port = address[0], address[1]
        if host in {"0.0.0.0", "::"}:
            server.log.info(
                "ngai_chat: serving on http://localhost:%s/ (and every interface of this host)",
                port,
            )
        else:
            server.log.info(
                "ngai_chat: serving on http://%s:%s/", f"[{host}]" if ":" in host else host, port
            )


#: the metrics directory this master made (and removes on exit), if any
_metrics_dir_made: str | None = None


def setup_metrics_dir(enabled: bool) -> None:
    """Give the workers a fresh ``PROMETHEUS_MULTIPROC_DIR`` (in the master, before any
    fork): a new temporary directory, or the operator's own emptied of the last
    run's files, so that a scrape sums this run's workers only.

    :param enabled: ``NGAI_METRICS``; off, nothing is set up.
    """
    global _metrics_dir_made
    if not enabled:
        return
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        path = _metrics_dir_made = tempfile.mkdtemp(prefix="ngai-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    emit(f"metrics: GET /metrics sums the workers' samples kept in {path}")


def child_exit(server: t.Any, worker: t.Any) -> None:
    """A worker exited (or was killed): its counters stay in the sum, its gauges go."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: t.Any) -> None:
    """Remove the metrics directory this master made."""
    if _metrics_dir_made is not None:
        shutil.rmtree(_metrics_dir_made, ignore_errors=True)


def post_worker_init(worker: t.Any) -> None:
    """Drain on SIGTERM: stop taking sessions at once, and end the streams still
    open shortly before gunicorn's graceful timeout with a terminal error event,
    rather than letting the worker be killed in the middle of them.
    """
    import gevent

    from ngai_chat.relay import begin_shutdown

    graceful = float(worker.cfg.graceful_timeout)
    grace = max(graceful - 5.0, graceful * 0.5)
    stop_accepting = worker.handle_exit

    def handle_exit(sig: int, frame: t.Any) -> None:
        # a signal handler runs between any two bytecodes: hand the work to the hub
        gevent.get_hub().loop.run_callback(begin_shutdown, grace)
        stop_accepting(sig, frame)

    worker.handle_exit = handle_exit
    signal.signal(signal.SIGTERM, handle_exit)
    tune_gc()
