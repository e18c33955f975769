"""What starting the server says and where it listens (issue 8 "Defaults", issue 9
"The first minute"), read from the real launcher's output: ``python -m ngai_chat``
as ``make run`` starts it, and the Procfile's command as a PaaS runs it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import requests
from flask import Flask

from bench.fake_upstream import FakeUpstream
from bench.live import ROOT
from bench.live import LiveApp
from ngai_chat import chat_blueprint
from ngai_chat.config import ConfigError
from ngai_chat.config import load_server_settings
from ngai_chat.store import store_from_url
from tests.conftest import API_KEY

LAUNCHER = [sys.executable, "-m", "ngai_chat"]


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (from /proc)."""
    found = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


LOOPBACK = "0100007F"  # 127.0.0.1, as /proc/net/tcp writes it
ANY = "00000000"  # 0.0.0.0


def start(env: dict[str, str], cwd: Path) -> LiveApp:
    """``make run``'s server (started by ``with``), in ``cwd`` (no ``.env`` there)."""
    return LiveApp(env, command=LAUNCHER, cwd=cwd)


def notice_lines(log: str, needle: str) -> list[str]:
    return [line for line in log.splitlines() if needle in line]


@pytest.mark.live
def test_open_relay_warns_in_one_line_once(fake: FakeUpstream, tmp_path: Path) -> None:
    env = {"OPENROUTER_API_KEY": API_KEY, "OPENROUTER_BASE_URL": fake.base_url}
    with start(env, tmp_path) as live:
        log = live.log_text()
    (warning,) = notice_lines(log, "open relay")
    assert "WARNING" in warning and "OPENROUTER_API_KEY" in warning
    for setting in ("NGAI_API_TOKENS", "NGAI_MODEL_ALLOWLIST", "NGAI_RATE_LIMIT"):
        assert setting in warning
    assert API_KEY not in log
    # before "serving on": each thing once, in order
    (serving,) = notice_lines(log, "serving on")
    assert log.index(warning) < log.index(serving)


@pytest.mark.live
@pytest.mark.parametrize(
    "closing",
    [
        {"NGAI_API_TOKENS": "secret-token"},
        {"NGAI_MODEL_ALLOWLIST": "*:free"},
        {"NGAI_RATE_LIMIT": "20/minute"},
    ],
    ids=["tokens", "allowlist", "rate-limit"],
)
def test_any_closing_setting_silences_the_warning(
    fake: FakeUpstream, tmp_path: Path, closing: dict[str, str]
) -> None:
    env = {"OPENROUTER_API_KEY": API_KEY, "OPENROUTER_BASE_URL": fake.base_url, **closing}
    with start(env, tmp_path) as live:
        log = live.log_text()
    assert notice_lines(log, "open relay") == []
    assert len(notice_lines(log, "relaying to")) == 1


@pytest.mark.live
def test_make_run_listens_on_loopback_only(fake: FakeUpstream, tmp_path: Path) -> None:
    env = {"OPENROUTER_API_KEY": API_KEY, "OPENROUTER_BASE_URL": fake.base_url}
    with start(env, tmp_path) as live:
        assert listening_addresses(live.port) == {LOOPBACK}
        (serving,) = notice_lines(live.log_text(), "serving on")
        assert f"http://127.0.0.1:{live.port}/" in serving


@pytest.mark.live
def test_host_setting_opens_every_interface(tmp_path: Path) -> None:
    with start({"NGAI_DEMO": "1", "HOST": "0.0.0.0"}, tmp_path) as live:
        assert listening_addresses(live.port) == {ANY}


@pytest.mark.live
def test_procfile_listens_on_every_interface(tmp_path: Path) -> None:
    (line,) = (ROOT / "Procfile").read_text().splitlines()
    kind, command = line.split(":", 1)
    assert kind == "web"
    # a PaaS runs the line through a shell from the repository, with PORT set
    # with this virtualenv's gunicorn first on PATH, as a PaaS has its own
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {"NGAI_DEMO": "1", "PATH": path}
    live = LiveApp(env, command=["/bin/sh", "-c", f"exec {command}"])
    with live:
        assert listening_addresses(live.port) == {ANY}
        assert requests.get(live.url("/health"), timeout=5).json()["status"] == "ok"


@pytest.mark.live
def test_demo_notice_once_then_serving(tmp_path: Path) -> None:
    with start({}, tmp_path) as live:  # no key anywhere: the launcher picks demo mode
        assert requests.get(live.url("/health"), timeout=5).json()["upstream"] == "demo"
        log = live.log_text()
    (demo,) = notice_lines(log, "demo mode")
    (serving,) = notice_lines(log, "serving on")
    assert log.index(demo) < log.index(serving)
    assert "OPENROUTER_API_KEY" in demo
    assert notice_lines(log, "open relay") == []


@pytest.mark.live
def test_bad_setting_shows_only_the_error(tmp_path: Path) -> None:
    env = {**LiveApp().env, "NGAI_SESSION_TTL": "abc"}
    done = subprocess.run(
        LAUNCHER, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    output = (done.stdout + done.stderr).strip()
    assert output.count("\n") == 0, output  # one line
    assert "NGAI_SESSION_TTL" in output and "'abc'" in output
    assert "serving" not in output and "gunicorn" not in output


# --- in-process -------------------------------------------------------------------


def test_server_settings_need_no_key() -> None:
    settings = load_server_settings({"PORT": "8123", "NGAI_LOG_FORMAT": "JSON"}, {})
    assert (settings.host, settings.port, settings.log_format) == ("127.0.0.1", 8123, "json")
    with pytest.raises(ConfigError, match="PORT"):
        load_server_settings({"PORT": "http"}, {})


@pytest.mark.parametrize("url", ["http://localhost:6379", "redis:/localhost", "localhost:6379"])
def test_store_url_of_no_store_names_redis_url(url: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL"):
        store_from_url(url, replay_ttl=1.0)


def test_bad_redis_url_stops_startup_naming_it(make_app: t.Any) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as raised:
        make_app(REDIS_URL="mysql://user:hunter2@localhost/db")
    assert "hunter2" not in str(raised.value)  # a URL may carry a password
    with pytest.raises(ConfigError, match=r"scheme \(none\)") as raised:
        store_from_url("user:hunter2@localhost:6379", replay_ttl=1.0)
    assert "hunter2" not in str(raised.value)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def logged() -> t.Iterator[list[str]]:
    """What the ``ngai_chat`` loggers say (they do not propagate to pytest's)."""
    handler = Records()
    logger = logging.getLogger("ngai_chat")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def test_mounted_app_warns_once_about_the_memory_store(
    monkeypatch: pytest.MonkeyPatch, logged: list[str]
) -> None:
    monkeypatch.setenv("NGAI_DEMO", "1")
    host = Flask("host")
    host.register_blueprint(chat_blueprint, url_prefix="/api/chat")
    memory = [m for m in logged if "REDIS_URL" in m]
    assert len(memory) == 1 and "one worker process" in memory[0]
    assert len([m for m in logged if "demo mode" in m]) == 1


def test_standalone_app_does_not_warn_about_the_memory_store(
    make_app: t.Any, logged: list[str]
) -> None:
    make_app()
    assert not [m for m in logged if "REDIS_URL" in m]
    # an app outside gunicorn (flask run, a test) still says its notices itself
    assert len([m for m in logged if "open relay" in m]) == 1
