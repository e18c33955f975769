"""The ``v1`` scenario: the OpenAI-compatible door (``/v1/chat/completions``) next to
the NGAI door (``/stream``) of the same app, and next to LiteLLM's proxy, the
gateway people run for exactly this job.

- **S3-like** (the profile's S3 wave: 20 streams x 2,000 chunks, no gap): the relay's
  CPU per chunk through ``/v1`` streamed against ``/stream``, same app, same run
  (target: at most 1.0x: the door does less, no splice); and LiteLLM's.
- **S4-like** (the profile's S4 wave: sequential sessions of 5 chunks): time to
  first chunk p50 added over calling the fake upstream directly, for ``/stream``,
  ``/v1`` streamed, ``/v1`` not streamed (the whole answer is its first chunk),
  and LiteLLM streamed (not streamed, LiteLLM asks the upstream for a
  non-streamed answer, which the fake upstream does not give).

LiteLLM runs from its own virtualenv under the bench's work directory
(``bench/results/litellm-venv``, never the project's requirements), created on
first use: PyPI ``litellm`` 1.110.x, plus its ``[proxy]`` extra's packages named
one by one (the extra pins a package the index does not have). One uvicorn
worker, no master key, no database: its cheapest setup, offline
(``LITELLM_LOCAL_MODEL_COST_MAP=True``). When it cannot be installed or started,
its columns are left out with the reason.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from bench.live import free_port

from .baselines import BaselineError
from .baselines import _stop
from .baselines import _tail
from .harness import Bench
from .harness import Row
from .harness import ScenarioResult
from .jobs import Target
from .series import Contender
from .series import Pooled
from .series import run_rounds

__all__ = ["LITELLM_VENV", "LiteLLM", "litellm_unavailable", "v1"]

#: the bench's own virtualenv for LiteLLM (git-ignored, like the results)
LITELLM_VENV = Path(__file__).resolve().parent / "results" / "litellm-venv"
LITELLM = "litellm==1.110.*"
#: prints the ``[proxy]`` extra's requirements (without their markers), but for
#: ``litellm-proxy``, which the index does not have
_PROXY_REQUIREMENTS = """
import importlib.metadata, re
for req in importlib.metadata.requires("litellm") or []:
    spec, _, marker = req.partition(";")
    proxy = re.search(r"extra\\s*==\\s*.proxy.(\\s|$)", marker)
    if proxy and not re.match(r"litellm-proxy(?![-\\w])", spec.strip()):
        if "python_full_version >= '3.15'" not in marker:
            print(spec.strip())
"""
#: seconds the installation may take
INSTALL_TIMEOUT = 900.0


def _venv_python() -> Path:
    return LITELLM_VENV / "bin" / "python"


#: what the proxy needs besides litellm (found without importing: importing the
#: proxy takes tens of seconds)
_PROXY_MODULES = ("litellm", "uvicorn", "fastapi", "websockets", "apscheduler", "yaml")


def _importable() -> bool:
    python = _venv_python()
    if not python.exists():
        return False
    probe = (
        "import importlib.util as u, sys; "
        f"sys.exit(any(u.find_spec(m) is None for m in {_PROXY_MODULES!r}))"
    )
    try:
        found = subprocess.run([str(python), "-c", probe], timeout=120, check=False)
    except subprocess.TimeoutExpired:
        return False
    return found.returncode == 0


def litellm_unavailable() -> str | None:
    """Why LiteLLM's proxy cannot run here (installing it on first use), or None."""
    if _importable():
        return None
    try:
        if not _venv_python().exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=120
            )
        pip = [
            str(_venv_python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]
        subprocess.run([*pip, LITELLM], check=True, timeout=INSTALL_TIMEOUT, capture_output=True)
        listed = subprocess.run(
            [str(_venv_python()), "-c", _PROXY_REQUIREMENTS],
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        packages = listed.stdout.split()
        quiet = {"timeout": INSTALL_TIMEOUT, "check": False, "capture_output": True}
        if subprocess.run([*pip, *packages], **quiet).returncode:  # type: ignore[call-overload]
            for package in packages:  # what the index has of them, one by one
                subprocess.run([*pip, package], **quiet)  # type: ignore[call-overload]
    except (OSError, subprocess.SubprocessError) as exc:
        return f"LiteLLM could not be installed in {LITELLM_VENV}: {exc}"[:300]
    if not _importable():
        return f"LiteLLM's proxy does not import in {LITELLM_VENV}"
    return None


class LiteLLM:
    """LiteLLM's proxy in front of the fake upstream: every model name goes to it
    as an OpenAI-compatible server.

    :param upstream_base_url: the fake's ``base_url`` (``.../api/v1``).
    """

    def __init__(self, upstream_base_url: str) -> None:
        self.upstream_base_url = upstream_base_url
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
        self._log = self._dir / "litellm.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    @property
    def stream_target(self) -> Target:
        return Target("direct", self.port, "/v1/chat/completions")

    def start(self) -> LiteLLM:
        config = self._dir / "config.yaml"
        config.write_text(
            "model_list:\n"
            '  - model_name: "*"\n'
            "    litellm_params:\n"
            '      model: "openai/*"\n'
            f'      api_base: "{self.upstream_base_url}"\n'
            '      api_key: "bench-key"\n'
            "litellm_settings:\n"
            "  telemetry: false\n"
            "  drop_params: true\n"
            "general_settings:\n"
            "  dangerously_permit_weak_or_unset_master_key: true\n"
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self._dir),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_SCHEMA_UPDATE": "True",
            "NO_PROXY": "*",
        }
        command = [
            str(_venv_python()),
            "-m",
            "litellm.proxy.proxy_cli",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            "1",
        ]
        try:
            with open(self._log, "wb") as log:
                self._proc = subprocess.Popen(
                    command,
                    cwd=self._dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            _wait_listening(self.port, self._proc, self._log)
            self.pid = _serving_process(self._proc.pid)
        except (OSError, RuntimeError) as exc:
            self.close()
            raise BaselineError(f"{exc} {_tail(self._log)}") from exc
        except BaseException:
            self.close()
            raise
        return self

    def log_text(self) -> str:
        return _tail(self._log, 100_000)

    def close(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
        with contextlib.suppress(OSError):
            for path in self._dir.iterdir():
                path.unlink()
            self._dir.rmdir()

    def __enter__(self) -> LiteLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


#: seconds LiteLLM's proxy gets to start listening (it imports a great deal)
LITELLM_START_TIMEOUT = 180.0


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + LITELLM_START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise BaselineError(f"exited with {proc.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BaselineError(f"not listening on {port} after {LITELLM_START_TIMEOUT:g} s")
        time.sleep(0.1)


def _serving_process(pid: int) -> int:
    """The process that serves: ``pid`` itself, or its one child when the CLI
    starts a worker process."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children[0] if len(children) == 1 else pid


def _problems(text: str) -> dict[str, t.Any]:
    lines = [line for line in text.splitlines() if "Traceback" in line or "ERROR" in line]
    return {"lines": len(text.splitlines()), "problems": len(lines), "first": lines[:5]}


def _cpu_per_chunk(pooled: Pooled) -> float | None:
    return pooled.relay_cpu_per_chunk_us()


def v1(bench: Bench, result: ScenarioResult) -> None:
    """The OpenAI door against ``/stream`` and against LiteLLM."""
    reason = litellm_unavailable()
    with contextlib.ExitStack() as stack:
        served = stack.enter_context(bench.serve("v1"))
        port, worker = served.app.port, served.worker
        litellm: LiteLLM | None = None
        if reason is None:
            try:
                litellm = stack.enter_context(LiteLLM(bench.fake.base_url))
            except BaselineError as exc:
                reason = f"LiteLLM did not start: {exc}"[:600]
            else:
                stack.callback(lambda: bench.app_logs.update(litellm=_problems(litellm.log_text())))
        if reason is not None:
            result.skipped_relays["litellm"] = reason
            result.rows.append(
                Row("v1", "LiteLLM baseline", "", None, None, note=f"left out: {reason}")
            )
        stream = Contender("stream", Target("relay", port), worker)
        door = Contender("v1", Target("direct", port, "/v1/chat/completions"), worker)
        whole = Contender(
            "v1 completion", Target("completion", port, "/v1/chat/completions"), worker
        )
        streams = [stream, door]
        completions = [whole]
        if litellm is not None:
            # streamed only: LiteLLM asks the upstream for a non-streamed answer when
            # its client does, and the fake upstream answers streams only
            streams.append(Contender("litellm", litellm.stream_target, litellm.pid))
            _warm(bench, streams[-1])
        _warm(bench, door, whole)

        s3 = run_rounds(bench, streams, bench.profile.s3)
        cpu = {name: _cpu_per_chunk(pooled) for name, pooled in s3.pooled.items()}
        rows: list[Row] = [
            Row(
                "v1 (S3-like)",
                "relay CPU per chunk, /v1 streamed",
                "us",
                cpu["stream"],
                cpu["v1"],
                "/stream / /v1",
                _goal(cpu["v1"], cpu["stream"], 1.0) + f"; {bench.profile.s3.describe()}",
                s3.pooled["stream"].errors + s3.pooled["v1"].errors,
            )
        ]
        if "litellm" in cpu:
            rows.append(
                Row(
                    "v1 (S3-like)",
                    "relay CPU per chunk, LiteLLM",
                    "us",
                    cpu["v1"],
                    cpu["litellm"],
                    "/v1 / LiteLLM",
                    f"LiteLLM spends {_times(cpu['litellm'], cpu['v1'])} our /v1's CPU per chunk",
                    s3.pooled["litellm"].errors,
                )
            )

        direct = Contender("direct", bench.direct, None)
        s4 = run_rounds(bench, [direct, *streams, *completions], bench.profile.s4)
        base = s4.pooled["direct"].first_chunk_ms(0.5)
        for name, pooled in s4.pooled.items():
            if name == "direct":
                continue
            measured = pooled.first_chunk_ms(0.5)
            rows.append(
                Row(
                    "v1 (S4-like)",
                    f"time to first chunk p50, {_label(name)}",
                    "ms",
                    base,
                    measured,
                    f"direct / {_label(name)}",
                    f"added over direct: {measured - base:.2f} ms; CPU per session "
                    f"{pooled.relay_cpu_per_session_ms() or math.nan:.2f} ms",
                    pooled.errors,
                )
            )
        result.rows += rows
        result.details.update(
            s3={"wave": bench.profile.s3.describe(), "relays": s3.details()},
            s4={"wave": bench.profile.s4.describe(), "relays": s4.details()},
        )


_LABELS = {
    "stream": "/stream",
    "v1": "/v1 streamed",
    "v1 completion": "/v1 not streamed",
    "litellm": "LiteLLM streamed",
    "litellm completion": "LiteLLM not streamed",
}


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def _times(value: float | None, base: float | None) -> str:
    if value is None or base is None or not base:
        return "?"
    return f"{value / base:.1f}x"


def _goal(measured: float | None, base: float | None, limit: float) -> str:
    if measured is None or base is None or not base:
        return f"target <= {limit}x /stream: ?"
    ratio = measured / base
    return f"target <= {limit}x /stream: {'met' if ratio <= limit else 'NOT met'} ({ratio:.2f}x)"


def _warm(bench: Bench, *contenders: Contender) -> None:
    """A few sessions on each first (first connections, imports, caches)."""
    from .jobs import WaveJob
    from .runner import job_timeout
    from .runner import run_job

    for contender in contenders:
        job = WaveJob(contender.target, bench.profile.s4.model, 20, 4, 0.0, 30.0)
        run_job(job, job_timeout(job))
