"""Run load-generator jobs in subprocesses (``python -m bench.loadgen``), with
bounded waits everywhere: a job that overruns its timeout is killed."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import typing as t
from pathlib import Path

from .jobs import FanoutJob
from .jobs import IdleJob
from .jobs import Job
from .jobs import PrepareJob
from .jobs import SessionsJob
from .jobs import WaveJob

__all__ = [
    "LoadGen",
    "LoadGenError",
    "finish_profile",
    "job_timeout",
    "py_spy",
    "record_profile",
    "run_job",
]

ROOT = Path(__file__).resolve().parents[1]
#: seconds a load-generator job may overrun its own bounds before it is killed
JOB_SLACK = 30.0


class LoadGenError(RuntimeError):
    """The load generator failed, or did not answer in time."""


class LoadGen:
    """One load-generator process running one job; a context manager.

    Messages come back as JSON lines, read by a thread so that every wait has a
    timeout.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._messages: queue.Queue[dict[str, t.Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(json.dumps(dataclasses.asdict(job)))

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._messages.put(json.loads(line))
        self._messages.put(None)

    def send(self, line: str) -> None:
        """Send one line to the job (an idle job goes on to its next step)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def message(self, timeout: float) -> dict[str, t.Any]:
        """The next message from the job.

        :raises LoadGenError: none came within ``timeout`` seconds, or the job died.
        """
        try:
            message = self._messages.get(timeout=timeout)
        except queue.Empty:
            raise LoadGenError(f"no answer from the load generator within {timeout:g} s") from None
        if message is None:
            self._proc.wait(5)
            raise LoadGenError(
                f"the load generator exited ({self._proc.returncode}):\n{self._stderr_text()}"
            )
        return message

    def result(self, timeout: float) -> dict[str, t.Any]:
        """Wait for the job's result (skipping nothing: it must be the next message)."""
        message = self.message(timeout)
        if message.get("type") != "result":
            raise LoadGenError(f"expected a result, got {message!r}")
        return message

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-4000:]

    def close(self) -> None:
        """End the process: close its stdin, then kill it if it lingers."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        try:
            self._proc.wait(10 if isinstance(self.job, IdleJob) else 2)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._stderr.close()

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def job_timeout(job: Job) -> float:
    """Seconds after which a job that has not answered is killed."""
    if isinstance(job, SessionsJob):
        return job.duration + job.session_timeout + JOB_SLACK
    if isinstance(job, FanoutJob):
        return job.repeats * job.session_timeout + JOB_SLACK
    if isinstance(job, PrepareJob):
        return 4 * job.timeout + JOB_SLACK
    if isinstance(job, WaveJob):
        waves = math.ceil(job.sessions / job.concurrency)
        return job.ramp + waves * job.session_timeout + JOB_SLACK
    return job.step_timeout + JOB_SLACK


def run_job(job: Job, timeout: float) -> dict[str, t.Any]:
    """Run a job that needs no steering and return its result."""
    with LoadGen(job) as gen:
        return gen.result(timeout)


def py_spy() -> str | None:
    """The py-spy executable: next to this Python, else on ``PATH``."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record_profile(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy until it exits, then write a raw profile (collapsed
    stacks, one line per stack with its sample count: ``flamegraph.pl`` reads it).

    :raises LoadGenError: py-spy is not installed.
    """
    executable = py_spy()
    if executable is None:
        raise LoadGenError("py-spy is not installed: .venv/bin/pip install py-spy")
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [executable, "record", "--nonblocking", "--format", "raw"]
    return subprocess.Popen(
        [*command, "-o", str(output), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finish_profile(spy: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait for py-spy to write its profile (its target has exited); kill it if it hangs."""
    try:
        spy.wait(timeout)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(5)
