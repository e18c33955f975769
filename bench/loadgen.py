"""The load generator: ``python -m bench.loadgen``, one gevent process per job.

It runs apart from the orchestrator so that, on a small machine, the clients
neither share a GIL with the fake upstream nor get starved by it. Protocol: the
first line on stdin is a job (:mod:`bench.jobs`, as JSON); every message back is
one JSON line on stdout: ``{"type": "ready", ...}`` while an :class:`IdleJob`
holds its streams open (the orchestrator answers with any line to go on), then
``{"type": "result", ...}``. A closed stdin ends an idle job early.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
import typing as t
import uuid

import gevent
import gevent.event
import gevent.pool
import gevent.select
from gevent import socket

from .httpclient import FrameCounter
from .httpclient import HttpError
from .httpclient import Response
from .httpclient import connect
from .httpclient import fetch_json
from .httpclient import open_response
from .jobs import MESSAGES
from .jobs import UI_MESSAGES
from .jobs import FanoutJob
from .jobs import IdleJob
from .jobs import Job
from .jobs import PrepareJob
from .jobs import Record
from .jobs import SessionsJob
from .jobs import Target
from .jobs import WaveJob
from .jobs import job_from_json

__all__ = ["main"]

#: the start of a request head that never ends: the server waits for the rest
HALF_REQUEST = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def _prepare(target: Target, model: str, timeout: float) -> str:
    """Create a relay session; returns its stream path."""
    status, body = fetch_json(
        target.port,
        "POST",
        f"{target.path}/prepare",
        {"model": model, "messages": MESSAGES},
        timeout=timeout,
    )
    if status != 200 or not isinstance(body, dict):
        raise HttpError(f"POST /prepare answered {status}: {body!r}"[:300])
    return str(body["streamUrl"])


def _open_stream(
    target: Target, model: str, stream_path: str | None, timeout: float | None
) -> Response:
    if target.kind == "relay":
        assert stream_path is not None
        return open_response(target.port, "GET", stream_path, timeout=timeout)
    if target.kind == "get":
        return open_response(target.port, "GET", f"{target.path}?model={model}", timeout=timeout)
    if target.kind == "chat":
        chat = {"id": uuid.uuid4().hex, "messages": UI_MESSAGES, "model": model}
        body = json.dumps(chat).encode()
        return open_response(target.port, "POST", f"{target.path}/chat", body, timeout=timeout)
    payload: dict[str, t.Any] = {"model": model, "messages": MESSAGES}
    if target.kind != "completion":
        payload["stream"] = True
    body = json.dumps(payload).encode()
    return open_response(target.port, "POST", target.path, body, timeout=timeout)


def _read_completion(response: Response, started: float, record: Record, begun: float) -> None:
    """A non-streamed answer: its arrival, whole, is its first (and only) chunk."""
    if response.status != 200:
        raise HttpError(f"the completion answered {response.status}")
    record.ttfb = response.first_byte_at - started
    body = response.read_all()
    now = time.perf_counter()
    record.ttfc = record.total = now - started
    record.first_chunk = now - begun
    record.events = 1
    if b'"chat.completion"' not in body:
        record.error = f"not a chat.completion: {body[:200]!r}"


class Tally:
    """Events received by every stream of a job so far."""

    events = 0


def _read_stream(
    response: Response,
    started: float,
    record: Record,
    tally: Tally,
    begun: float,
    latencies: list[int] | None,
) -> None:
    """Count the stream's events into ``record`` until its terminal frame.

    :param started: when the stream request was sent; ``begun``: when the session
        began (before its ``POST /prepare``).
    :param latencies: where the stamped chunks' latencies go, if anywhere.
    """
    if response.status != 200:
        raise HttpError(f"the stream answered {response.status}")
    record.ttfb = response.first_byte_at - started
    frames = FrameCounter(latencies)
    for piece in response.body_pieces():
        new = frames.feed(piece)
        if new:
            tally.events += new
            if record.ttfc is None:
                now = time.perf_counter()
                record.ttfc = now - started
                record.first_chunk = now - begun
        if frames.finished:
            break
    record.events = frames.events
    record.total = time.perf_counter() - started
    if frames.error is not None:
        record.error = f"error event: {frames.error}"[:300]
    elif not frames.finished:
        record.error = "the stream ended without a terminal event"


def _stream_session(
    target: Target,
    model: str,
    timeout: float,
    origin: float,
    tally: Tally,
    stream_path: str | None = None,
    latencies: list[int] | None = None,
) -> Record:
    """One whole session (prepare unless ``stream_path`` is given, then stream),
    bounded by ``timeout``; failures are recorded, never raised."""
    begun = time.perf_counter()
    record = Record(started=begun - origin)
    try:
        with gevent.Timeout(timeout, HttpError(f"no terminal event within {timeout} s")):
            if target.kind == "relay" and stream_path is None:
                stream_path = _prepare(target, model, timeout)
                record.prepare = time.perf_counter() - begun
            started = time.perf_counter()
            response = _open_stream(target, model, stream_path, timeout)
            try:
                if target.kind == "completion":
                    _read_completion(response, started, record, begun)
                    tally.events += 1
                else:
                    _read_stream(response, started, record, tally, begun, latencies)
            finally:
                response.close()
    except (HttpError, OSError, ValueError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:300]
    return record


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _steady_window(tally: Tally, start: float, end: float) -> dict[str, float]:
    """Events received between ``start`` and ``end`` (``perf_counter`` times)."""
    gevent.sleep(max(0.0, start - time.perf_counter()))
    events, began = tally.events, time.perf_counter()
    gevent.sleep(max(0.0, end - began))
    return {"events": tally.events - events, "seconds": time.perf_counter() - began}


def run_sessions(job: SessionsJob) -> dict[str, t.Any]:
    """Closed-loop load: each client starts its next session when one ends.

    Besides every session's record, it counts the events received in the steady
    window from ``warmup`` seconds to the end of ``duration``, when every client
    is busy: no ramp-up, no tail of last sessions finishing.
    """
    origin = time.perf_counter()
    deadline = origin + job.duration
    records: list[Record | None] = []
    tally = Tally()

    def client() -> None:
        while time.perf_counter() < deadline and len(records) < job.max_sessions:
            slot = len(records)
            records.append(None)  # counts against max_sessions at once
            records[slot] = _stream_session(
                job.target, job.model, job.session_timeout, origin, tally
            )

    cpu = _cpu_seconds()
    window = gevent.spawn(_steady_window, tally, origin + job.warmup, deadline)
    gevent.joinall([gevent.spawn(client) for _ in range(job.concurrency)])
    wall = time.perf_counter() - origin
    return {
        "wall": wall,
        "cpu": _cpu_seconds() - cpu,
        "steady": window.get(),
        "records": records,
    }


def run_fanout(job: FanoutJob) -> dict[str, t.Any]:
    """``readers`` clients on one session, ``repeats`` sessions in a row."""
    rounds = []
    cpu = _cpu_seconds()
    for _ in range(job.repeats):
        origin = time.perf_counter()
        stream_path = _prepare(job.target, job.model, job.session_timeout)
        readers = [
            gevent.spawn(
                _stream_session,
                job.target,
                job.model,
                job.session_timeout,
                origin,
                Tally(),
                stream_path,
            )
            for _ in range(job.readers)
        ]
        gevent.joinall(readers)
        wall = time.perf_counter() - origin
        rounds.append({"wall": wall, "records": [reader.value for reader in readers]})
    return {"cpu": _cpu_seconds() - cpu, "rounds": rounds}


def run_wave(job: WaveJob) -> dict[str, t.Any]:
    """``sessions`` sessions, ``concurrency`` at a time, with every stamped chunk's
    latency (microseconds, in arrival order)."""
    origin = time.perf_counter()
    records: list[Record | None] = []
    latencies: list[int] = []
    tally = Tally()

    def client(index: int) -> None:
        gevent.sleep(job.ramp * index / job.concurrency)
        while len(records) < job.sessions:
            slot = len(records)
            records.append(None)  # claimed at once: no other client takes it
            records[slot] = _stream_session(
                job.target, job.model, job.session_timeout, origin, tally, latencies=latencies
            )

    cpu = _cpu_seconds()
    gevent.joinall([gevent.spawn(client, index) for index in range(job.concurrency)])
    return {
        "wall": time.perf_counter() - origin,
        "cpu": _cpu_seconds() - cpu,
        "records": records,
        "latencies_us": latencies,
    }


class _Idle:
    """A connection held open: ready once its stream sent its first data frame, or,
    for a bare connection, once half a request head went out."""

    def __init__(self, job: IdleJob, bare: bool) -> None:
        self.job = job
        self.ready = gevent.event.Event()
        self.sock: socket.socket | None = None
        self.error: str | None = None
        self.greenlet = gevent.spawn(self._bare if bare else self._stream)

    def _bare(self) -> None:
        try:
            self.sock = connect(self.job.target.port, self.job.step_timeout)
            self.sock.sendall(HALF_REQUEST)
            self.ready.set()
            if not self.sock.recv(1):
                self.error = "the server closed an idle connection"
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.ready.set()

    def _stream(self) -> None:
        target, model = self.job.target, self.job.model
        try:
            path = (
                _prepare(target, model, self.job.step_timeout) if target.kind == "relay" else None
            )
            response = _open_stream(target, model, path, None)
            self.sock = response.sock
            frames = FrameCounter()
            for piece in response.body_pieces():
                if frames.feed(piece):
                    self.ready.set()
                if frames.finished:
                    self.error = frames.error or "the stream ended while idle"
                    return
            self.error = "the stream ended while idle"
        except (HttpError, OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            self.ready.set()

    def close(self) -> None:
        self.greenlet.kill(block=False)
        if self.sock is not None:
            self.sock.close()


def _open_idle(job: IdleJob, kind: str, count: int) -> list[_Idle]:
    """Open ``count`` idle connections, ``concurrency`` at a time; wait for them all."""
    pool = gevent.pool.Pool(job.concurrency)
    opened: list[_Idle] = []
    deadline = time.monotonic() + job.step_timeout
    for _ in range(count):
        pool.wait_available(timeout=max(0.0, deadline - time.monotonic()))
        idle = _Idle(job, bare=kind == "bare")
        opened.append(idle)
        pool.add(gevent.spawn(idle.ready.wait, max(0.0, deadline - time.monotonic())))
    pool.join(timeout=max(0.0, deadline - time.monotonic()))
    return opened


def _wait_for_line(timeout: float) -> bool:
    """Wait for a line on stdin; False on timeout or end of input."""
    readable, _, _ = gevent.select.select([sys.stdin], [], [], timeout)
    return bool(readable) and bool(sys.stdin.readline())


def run_idle(job: IdleJob) -> dict[str, t.Any]:
    """Open idle connections step by step; the orchestrator measures between steps."""
    held: list[_Idle] = []
    steps = []
    try:
        for kind, count in job.steps:
            begun = time.perf_counter()
            batch = _open_idle(job, kind, count)
            held += batch
            ready = sum(idle.ready.is_set() and idle.error is None for idle in batch)
            steps.append({"kind": kind, "open": ready, "seconds": time.perf_counter() - begun})
            _emit({"type": "ready", **steps[-1]})
            if not _wait_for_line(job.hold_timeout):
                break
    finally:
        for idle in held:
            idle.close()
    errors = [idle.error for idle in held if idle.error is not None]
    return {"steps": steps, "failed": len(errors), "errors": sorted(set(errors))[:5]}


def _timed_prepare(job: PrepareJob) -> float:
    begun = time.perf_counter()
    _prepare(job.target, job.model, job.timeout)
    return time.perf_counter() - begun


def run_prepare(job: PrepareJob) -> dict[str, t.Any]:
    """Session creation latency in an empty store, then in a filled one."""
    empty = [_timed_prepare(job) for _ in range(job.probes)]
    begun = time.perf_counter()
    pool = gevent.pool.Pool(job.concurrency)
    for _ in range(job.fill):
        pool.spawn(_timed_prepare, job)
    pool.join(raise_error=True)
    fill_seconds = time.perf_counter() - begun
    filled = [_timed_prepare(job) for _ in range(job.probes)]
    return {"empty": empty, "filled": filled, "fill_seconds": fill_seconds}


def run(job: Job) -> dict[str, t.Any]:
    if isinstance(job, SessionsJob):
        return run_sessions(job)
    if isinstance(job, FanoutJob):
        return run_fanout(job)
    if isinstance(job, PrepareJob):
        return run_prepare(job)
    if isinstance(job, WaveJob):
        return run_wave(job)
    return run_idle(job)


def _emit(message: dict[str, t.Any]) -> None:
    print(json.dumps(message, default=_encode), flush=True)


def _encode(value: t.Any) -> t.Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def main() -> int:
    job = job_from_json(json.loads(sys.stdin.readline()))
    _emit({"type": "result", **run(job)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
