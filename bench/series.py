"""Issue 7's scenarios S1-S4: ngai_chat next to direct, nginx and Node/Express.

Every relay of the run (:data:`bench.compare.RELAYS`) gets the same waves of
sessions from the load generator, in alternating rounds, against the same fake
upstream, whose chunks carry the moment they were written (:class:`Stamped`):
a chunk's latency is its arrival at the client minus that moment, both read from
``CLOCK_MONOTONIC``, which every process on the machine shares. Each relay's CPU
is read from ``/proc`` over each wave (the gunicorn worker; nginx's worker; the
node process), set-up of the sessions included.

- **S1** ``50 streams x 200 chunks x 20 ms``: chunk latency p50/p99 at a modest pace.
- **S2** ``1,000 streams x 100 chunks x 50 ms``: 20,000 chunks/s offered. Did all
  complete, latency p99, time to first chunk p50/p99, relay CPU per chunk.
- **S3** ``20 streams x 2,000 chunks``, no gap: relay CPU per chunk, and chunk
  latency p50, the fairness figure (a fast upstream must not starve the others).
- **S4** ``200 sequential sessions x 5 chunks``: time to first chunk added over
  direct, relay CPU per session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import threading
import time
import typing as t

from bench.fake_upstream import Chunk
from bench.fake_upstream import Connection
from bench.fake_upstream import Done
from bench.fake_upstream import FakeUpstream
from bench.fake_upstream import Recorded
from bench.fake_upstream import Step
from bench.fake_upstream import make_chunk
from bench.fake_upstream import new_generation_id
from bench.fake_upstream import usage_chunk

from . import procinfo
from .baselines import BaselineError
from .baselines import Nginx
from .baselines import NodeRelay
from .baselines import nginx_unavailable
from .baselines import node_unavailable
from .compare import RELAYS
from .compare import Compare
from .compare import Goal
from .harness import Bench
from .harness import ScenarioResult
from .harness import Wave as Wave
from .jobs import Target
from .jobs import WaveJob
from .runner import job_timeout
from .runner import run_job

__all__ = ["SERIES", "Contender", "Stamped", "Wave", "register_stamped", "run_series"]

SERIES = ("s1", "s2", "s3", "s4")
#: stands for the stamp while a chunk's JSON is encoded once
_PLACEHOLDER = "\x00stamp\x00"


class Lateness:
    """How late the fake wrote its paced chunks, against their schedule.

    Direct, it is the fake's own lag (a fake that cannot keep its pace offers less
    than the scenario says); through a relay it also holds the time the fake's
    writes waited for a relay that did not read. Filled by the fake's connection
    threads; read between waves (they run one at a time).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._us: list[int] = []

    def add(self, late_us: list[int]) -> None:
        with self._lock:
            self._us += late_us

    def take(self) -> list[int]:
        """Everything since the last call, in microseconds."""
        with self._lock:
            taken, self._us = self._us, []
        return taken


LATENESS = Lateness()


@dataclasses.dataclass(frozen=True)
class Stamped:
    """A fake-upstream step: ``count`` content chunks ``gap`` seconds apart, on a
    fixed schedule from the first one (a late write does not delay the next ones).

    Each chunk's text is ``ts=<CLOCK_MONOTONIC in us>; ``, read just before its
    write: :data:`bench.httpclient.STAMP` finds it in whatever frame a relay makes.
    The chunk's JSON is encoded once; only the stamp changes.
    """

    count: int
    gap: float
    model: str
    gen_id: str

    def play(self, conn: Connection) -> None:
        encoded = json.dumps(
            make_chunk(_PLACEHOLDER, model=self.model, gen_id=self.gen_id),
            separators=(",", ":"),
        ).encode()
        head, tail = encoded.split(json.dumps(_PLACEHOLDER).encode()[1:-1])
        head, tail = b"data: " + head + b"ts=", b"; " + tail + b"\n\n"
        start = time.monotonic_ns() // 1000
        gap_us = round(self.gap * 1e6)
        late: list[int] = []
        try:
            for index in range(self.count):
                now = time.monotonic_ns() // 1000
                if gap_us:
                    due = start + index * gap_us
                    if now < due:
                        conn.wait((due - now) / 1e6)
                        now = time.monotonic_ns() // 1000
                    late.append(now - due)
                elif not index % 100:
                    conn.check()
                conn.write(b"%s%d%s" % (head, now, tail))
        finally:
            LATENESS.add(late)


def stamped_steps(wave: Wave) -> list[Step]:
    """A normal stream with stamped content: role chunk, chunks, finish, usage, ``[DONE]``."""
    gen_id, model = new_generation_id(), wave.model
    usage = {"prompt_tokens": 1, "completion_tokens": wave.chunks, "total_tokens": wave.chunks + 1}
    return [
        Chunk(make_chunk("", model=model, gen_id=gen_id)),
        Stamped(wave.chunks, wave.gap, model, gen_id),
        Chunk(make_chunk("", finish_reason="stop", model=model, gen_id=gen_id)),
        Chunk(usage_chunk(usage, model=model, gen_id=gen_id)),
        Done(),
    ]


def register_stamped(fake: FakeUpstream, waves: t.Iterable[Wave]) -> None:
    """Script the fake's model of every wave."""
    for wave in waves:

        def script(_request: Recorded, wave: Wave = wave) -> list[Step]:
            return stamped_steps(wave)

        fake.script(wave.model, script)


# -- the relays --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Contender:
    """A relay of the comparison: where clients go, and whose CPU is the relay's."""

    name: str
    target: Target
    #: None for ``direct``: no relay, nothing to measure
    pid: int | None


@contextlib.contextmanager
def contenders(bench: Bench) -> t.Iterator[tuple[list[Contender], dict[str, str]]]:
    """Every relay that can run here, started and warmed up, in :data:`RELAYS`
    order; and, by name, why the others are left out."""
    skipped: dict[str, str] = {}
    found: dict[str, Contender] = {"direct": Contender("direct", bench.direct, None)}
    with contextlib.ExitStack() as stack:
        reason = nginx_unavailable()
        if reason is None:
            nginx = Nginx(bench.fake.port)
            try:
                stack.enter_context(nginx)
            except BaselineError as exc:
                reason = f"nginx did not start: {exc}"
            else:
                stack.callback(
                    lambda: bench.app_logs.update(nginx=_nginx_problems(nginx.log_text()))
                )
                found["nginx"] = Contender("nginx", nginx.target, nginx.pid)
        if reason is not None:
            skipped["nginx"] = reason
        reason = node_unavailable()
        if reason is None:
            node = NodeRelay(bench.fake.base_url)
            try:
                stack.enter_context(node)
            except BaselineError as exc:
                reason = f"the node relay did not start: {exc}"
            else:
                stack.callback(lambda: bench.app_logs.update(node=_node_problems(node.log_text())))
                found["node"] = Contender("node", node.target, node.pid)
        if reason is not None:
            skipped["node"] = reason
        served = stack.enter_context(bench.serve("ngai_chat"))
        found["ngai_chat"] = Contender("ngai_chat", served.target, served.worker)
        for contender in found.values():
            if contender.name in ("nginx", "node"):
                _warm_up(bench, contender)
        yield [found[name] for name in RELAYS if name in found], skipped


def _warm_up(bench: Bench, contender: Contender) -> None:
    """A few sessions first: Node's JIT and every relay's first connections."""
    job = WaveJob(contender.target, "bench/20", 50, 10, 0.0, bench.profile.session_timeout)
    run_job(job, job_timeout(job))


def _nginx_problems(text: str) -> dict[str, t.Any]:
    lines = text.splitlines()
    problems = [line for line in lines if any(f"[{level}]" in line for level in _NGINX_LEVELS)]
    return {"lines": len(lines), "problems": len(problems), "first": problems[:5]}


#: nginx's log levels that mean a failure (``setrlimit`` failing is an ``alert`` but
#: harmless: the limit asked for is capped at the hard limit, see baselines.py)
_NGINX_LEVELS = ("error", "crit", "alert", "emerg")


def _node_problems(text: str) -> dict[str, t.Any]:
    """The Node relay writes nothing to stderr unless something fails."""
    lines = [line for line in text.splitlines() if line.strip()]
    return {"lines": len(lines), "problems": len(lines), "first": lines[:5]}


# -- one wave, and rounds of them ---------------------------------------------------------


@dataclasses.dataclass
class WaveRun:
    """One wave of sessions on one relay."""

    records: list[dict[str, t.Any]]
    #: every stamped chunk's latency, microseconds
    latencies_us: list[int]
    wall: float
    #: the relay's CPU seconds over the wave (None: direct)
    relay_cpu_s: float | None
    #: how late the fake wrote each paced chunk (:class:`Lateness`), microseconds
    fake_late_us: list[int]
    fake_cpu_s: float
    loadgen_cpu_s: float


def run_wave(bench: Bench, contender: Contender, wave: Wave) -> WaveRun:
    """The wave's sessions on ``contender``, with its CPU over the whole wave."""
    timeout = max(30.0, 3 * wave.chunks * wave.gap + bench.profile.session_timeout)
    job = WaveJob(contender.target, wave.model, wave.sessions, wave.concurrency, wave.ramp, timeout)
    LATENESS.take()
    fake = procinfo.CpuMeter().start()
    relay = procinfo.CpuMeter(contender.pid).start() if contender.pid else None
    result = run_job(job, job_timeout(job))
    return WaveRun(
        records=result["records"],
        latencies_us=result["latencies_us"],
        wall=result["wall"],
        relay_cpu_s=relay.stop()[0] if relay is not None else None,
        fake_late_us=LATENESS.take(),
        fake_cpu_s=fake.stop()[0],
        loadgen_cpu_s=result["cpu"],
    )


def _rank(values: t.Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``; nan when empty."""
    if not values:
        return math.nan
    return values[max(0, math.ceil(q * len(values)) - 1)]


@dataclasses.dataclass
class Pooled:
    """Waves of one relay taken together (all rounds, or one)."""

    runs: list[WaveRun]

    @property
    def records(self) -> list[dict[str, t.Any]]:
        return [record for run in self.runs for record in run.records]

    @property
    def completed(self) -> int:
        """Sessions that ended with their terminal event and no error."""
        return sum(record["error"] is None for record in self.records)

    @property
    def errors(self) -> int:
        return sum(record["error"] is not None for record in self.records)

    @property
    def chunks(self) -> int:
        """Stamped chunks delivered: the fake's content chunks, whatever the relay's framing."""
        return sum(len(run.latencies_us) for run in self.runs)

    @functools.cached_property
    def _latencies(self) -> list[int]:
        return sorted(v for run in self.runs for v in run.latencies_us)

    @functools.cached_property
    def _fake_late(self) -> list[int]:
        return sorted(v for run in self.runs for v in run.fake_late_us)

    def latency_ms(self, q: float) -> float:
        return _rank(self._latencies, q) / 1000

    def fake_late_ms(self, q: float) -> float:
        return _rank(self._fake_late, q) / 1000

    def first_chunk_ms(self, q: float, field: str = "first_chunk") -> float:
        """Time to first chunk from the session's first request; or, with ``field``,
        another duration of the records (``ttfc``: from the stream request)."""
        values = sorted(r[field] for r in self.records if r[field] is not None)
        return 1000 * _rank(values, q)

    def relay_cpu_per_chunk_us(self) -> float | None:
        cpu = [run.relay_cpu_s for run in self.runs]
        if None in cpu or not self.chunks:
            return None
        return 1e6 * sum(t.cast(list[float], cpu)) / self.chunks

    def relay_cpu_per_session_ms(self) -> float | None:
        cpu = [run.relay_cpu_s for run in self.runs]
        sessions = len(self.records)
        if None in cpu or not sessions:
            return None
        return 1e3 * sum(t.cast(list[float], cpu)) / sessions

    def cores(self) -> dict[str, float | None]:
        """The CPU each process used, in cores (CPU seconds over wall seconds)."""
        wall = sum(run.wall for run in self.runs)
        relay = [run.relay_cpu_s for run in self.runs]
        return {
            "relay": None if None in relay or not wall else sum(t.cast(list[float], relay)) / wall,
            "fake": sum(run.fake_cpu_s for run in self.runs) / wall if wall else None,
            "loadgen": sum(run.loadgen_cpu_s for run in self.runs) / wall if wall else None,
        }

    def summary(self) -> dict[str, t.Any]:
        failed = [r["error"] for r in self.records if r["error"] is not None]
        return {
            "sessions": len(self.records),
            "completed": self.completed,
            "errors": len(failed),
            "first_errors": sorted(set(failed))[:3],
            "chunks": self.chunks,
            "latency_ms": {f"p{int(100 * q)}": self.latency_ms(q) for q in (0.5, 0.9, 0.99, 1.0)},
            **{
                name: {f"p{int(100 * q)}": self.first_chunk_ms(q, field) for q in (0.5, 0.99)}
                for name, field in (
                    ("first_chunk_ms", "first_chunk"),
                    ("stream_first_chunk_ms", "ttfc"),
                    ("prepare_ms", "prepare"),
                )
            },
            "fake_late_ms": {f"p{int(100 * q)}": self.fake_late_ms(q) for q in (0.5, 0.99, 1.0)},
            "relay_cpu_s": [run.relay_cpu_s for run in self.runs],
            "fake_cpu_s": [run.fake_cpu_s for run in self.runs],
            "loadgen_cpu_s": [run.loadgen_cpu_s for run in self.runs],
            "wall_s": [run.wall for run in self.runs],
            "cores": self.cores(),
            "relay_cpu_per_chunk_us": self.relay_cpu_per_chunk_us(),
            "relay_cpu_per_session_ms": self.relay_cpu_per_session_ms(),
        }


Figure = t.Callable[[Pooled], float | None]


@dataclasses.dataclass
class Rounds:
    """Every relay's waves of one scenario, run in alternating rounds."""

    by_relay: dict[str, list[WaveRun]]

    @functools.cached_property
    def pooled(self) -> dict[str, Pooled]:
        """Each relay's rounds taken together."""
        return {name: Pooled(runs) for name, runs in self.by_relay.items()}

    @functools.cached_property
    def each_round(self) -> dict[str, list[Pooled]]:
        """Each relay's rounds one by one."""
        return {name: [Pooled([run]) for run in runs] for name, runs in self.by_relay.items()}

    def compare(
        self,
        scenario: str,
        metric: str,
        unit: str,
        figure: Figure,
        goals: tuple[Goal, ...] = (),
        note: str = "",
    ) -> Compare:
        """A row with ``figure`` over all rounds for each relay, and its per-round spread."""
        values: dict[str, float | None] = {}
        spread: dict[str, tuple[float, float]] = {}
        for name, pooled in self.pooled.items():
            values[name] = figure(pooled)
            each = [figure(one) for one in self.each_round[name]]
            known = [v for v in each if v is not None and not math.isnan(v)]
            if len(known) > 1:
                spread[name] = (min(known), max(known))
        errors = sum(pooled.errors for pooled in self.pooled.values())
        return Compare(scenario, metric, unit, values, goals, note, errors, spread)

    def details(self) -> dict[str, t.Any]:
        return {name: pooled.summary() for name, pooled in self.pooled.items()}

    def cores_note(self) -> str:
        """The cores each process used, per relay: who was saturated."""
        parts = []
        for name, pooled in self.pooled.items():
            used = " ".join(
                f"{process} {share:.2f}"
                for process, share in pooled.cores().items()
                if share is not None
            )
            parts.append(f"{name}: {used}")
        return "cores used (relay, fake, load generator) " + "; ".join(parts)

    def fake_pace(self) -> str:
        """How late the fake wrote its chunks (p99): direct, its own lag; through a
        relay, also the relay not reading."""
        late = {
            name: pooled.fake_late_ms(0.99)
            for name, pooled in self.pooled.items()
            if pooled.chunks and not math.isnan(pooled.fake_late_ms(0.99))
        }
        shown = ", ".join(f"{name} {value:.1f}" for name, value in late.items())
        return f"fake's writes late vs schedule, p99 ms: {shown}" if late else ""


def run_rounds(bench: Bench, relays: list[Contender], wave: Wave) -> Rounds:
    """``bench.profile.series_rounds`` rounds; in each, every relay runs the wave once."""
    by_relay: dict[str, list[WaveRun]] = {relay.name: [] for relay in relays}
    for _ in range(bench.profile.series_rounds):
        for relay in relays:
            by_relay[relay.name].append(run_wave(bench, relay, wave))
    return Rounds(by_relay)


# -- the scenarios -----------------------------------------------------------------------


def _latency(q: float) -> Figure:
    return lambda pooled: pooled.latency_ms(q)


def _first_chunk(q: float) -> Figure:
    return lambda pooled: pooled.first_chunk_ms(q)


def _cpu_per_chunk(pooled: Pooled) -> float | None:
    return pooled.relay_cpu_per_chunk_us()


def _cpu_per_session(pooled: Pooled) -> float | None:
    return pooled.relay_cpu_per_session_ms()


def _completed(pooled: Pooled) -> float:
    return float(pooled.completed)


AT_MOST_NODE = Goal("<= node", 1.0, "node")


def s1(bench: Bench, relays: list[Contender], result: ScenarioResult) -> None:
    """S1: chunk latency at a modest pace."""
    wave = bench.profile.s1
    rounds = run_rounds(bench, relays, wave)
    name = "S1"
    result.details["workload"] = f"S1: {wave.describe()}"
    result.compare += [
        rounds.compare(name, "chunk latency p50", "ms", _latency(0.5)),
        rounds.compare(
            name,
            "chunk latency p99",
            "ms",
            _latency(0.99),
            (AT_MOST_NODE, Goal("< 2x nginx", 2.0, "nginx", "<", stretch=True)),
            note=rounds.fake_pace(),
        ),
        rounds.compare(name, "relay CPU per chunk", "us", _cpu_per_chunk),
        rounds.compare(name, "relay CPU per session", "ms", _cpu_per_session),
    ]
    result.details.update(wave=dataclasses.asdict(wave), relays=rounds.details())


def s2(bench: Bench, relays: list[Contender], result: ScenarioResult) -> None:
    """S2: many paced streams; does the relay keep up, and what does a chunk cost?"""
    wave = bench.profile.s2
    rounds = run_rounds(bench, relays, wave)
    sessions = wave.sessions * bench.profile.series_rounds
    name = "S2"
    result.details["workload"] = f"S2: {wave.describe()}"
    offered = wave.concurrency / wave.gap if wave.gap else math.nan
    result.compare += [
        rounds.compare(
            name,
            "sessions complete",
            f"of {sessions}",
            _completed,
            (Goal(f"all {sessions}", sessions, op=">="),),
            note=f"{offered:,.0f} chunks/s offered; {rounds.cores_note()}",
        ),
        rounds.compare(
            name,
            "chunk latency p99",
            "ms",
            _latency(0.99),
            (Goal("<= 2x node", 2.0, "node"),),
            note=rounds.fake_pace(),
        ),
        rounds.compare(name, "time to first chunk p50", "ms", _first_chunk(0.5)),
        rounds.compare(
            name,
            "time to first chunk p99",
            "ms",
            _first_chunk(0.99),
            (AT_MOST_NODE, Goal("< 1 s", 1000.0, op="<", stretch=True)),
            note="from the session's first request (POST /prepare on a two-step relay)",
        ),
        rounds.compare(
            name,
            "relay CPU per chunk",
            "us",
            _cpu_per_chunk,
            (Goal("<= 0.6x node", 0.6, "node"),),
            note="session set-up included",
        ),
        rounds.compare(name, "relay CPU per session", "ms", _cpu_per_session),
    ]
    result.details.update(wave=dataclasses.asdict(wave), relays=rounds.details())


def s3(bench: Bench, relays: list[Contender], result: ScenarioResult) -> None:
    """S3: an upstream as fast as it can: CPU per chunk, and fairness."""
    wave = bench.profile.s3
    rounds = run_rounds(bench, relays, wave)
    name = "S3"
    result.details["workload"] = f"S3: {wave.describe()}"
    result.compare += [
        rounds.compare(
            name,
            "relay CPU per chunk",
            "us",
            _cpu_per_chunk,
            (Goal("<= 0.8x node", 0.8, "node"), Goal("< 2x nginx", 2.0, "nginx", "<", True)),
            note=rounds.cores_note(),
        ),
        rounds.compare(
            name,
            "chunk latency p50",
            "ms",
            _latency(0.5),
            (AT_MOST_NODE,),
            note="fairness: a fast upstream must not starve the other streams",
        ),
        rounds.compare(name, "relay CPU per session", "ms", _cpu_per_session),
    ]
    result.details.update(wave=dataclasses.asdict(wave), relays=rounds.details())


def s4(bench: Bench, relays: list[Contender], result: ScenarioResult) -> None:
    """S4: sequential short sessions: what setting one up costs."""
    wave = bench.profile.s4
    rounds = run_rounds(bench, relays, wave)
    name = "S4"
    result.details["workload"] = f"S4: {wave.describe()}"
    direct = rounds.pooled["direct"].first_chunk_ms(0.5)

    def added(pooled: Pooled) -> float:
        return pooled.first_chunk_ms(0.5) - direct

    result.compare += [
        rounds.compare(
            name,
            "time to first chunk p50, added over direct",
            "ms",
            added,
            (AT_MOST_NODE, Goal("< 2 ms", 2.0, op="<", stretch=True)),
            note=f"direct: {direct:.2f} ms; from the session's first request",
        ),
        rounds.compare(
            name,
            "relay CPU per session",
            "ms",
            _cpu_per_session,
            (Goal("<= 0.8x node", 0.8, "node"), Goal("< 2 ms", 2.0, op="<", stretch=True)),
        ),
        rounds.compare(name, "relay CPU per chunk", "us", _cpu_per_chunk),
    ]
    result.details.update(wave=dataclasses.asdict(wave), relays=rounds.details())


SCENARIO: dict[str, t.Callable[[Bench, list[Contender], ScenarioResult], None]] = {
    "s1": s1,
    "s2": s2,
    "s3": s3,
    "s4": s4,
}


def run_series(
    bench: Bench,
    selected: t.AbstractSet[str],
    recorded: t.Callable[[str], t.ContextManager[ScenarioResult]],
) -> list[str]:
    """Run the selected S scenarios on one set of relays (started once).

    :param recorded: makes each scenario's result (it records failures).
    :returns: the scenarios that ran.
    """
    names = [name for name in SERIES if name in selected]
    if not names:
        return []
    with contenders(bench) as (relays, skipped):
        for name in names:
            with recorded(name) as result:
                result.skipped_relays = skipped
                SCENARIO[name](bench, relays, result)
    return names
