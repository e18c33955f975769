"""What every scenario is given, below both :mod:`bench.scenarios` and
:mod:`bench.series` (which import it, and not each other both ways): the
profile of sizes and durations with its :class:`Wave` loads, the results'
shapes, and :class:`Bench`, which serves the app and runs closed loops against it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import subprocess
import typing as t
from pathlib import Path

from . import procinfo
from .compare import Compare
from .fake_upstream import FakeUpstream
from .jobs import SessionsJob
from .jobs import Target
from .live import LiveApp
from .runner import finish_profile
from .runner import job_timeout
from .runner import record_profile
from .runner import run_job
from .stats import StreamStats
from .stats import summarize

__all__ = [
    "FULL",
    "QUICK",
    "SHORT_MODEL",
    "TINY",
    "Bench",
    "Profile",
    "Row",
    "Run",
    "ScenarioResult",
    "Served",
    "Wave",
    "log_problems",
]

#: a short answer, for latency
SHORT_MODEL = "bench/20"
#: share of a closed-loop round before its steady window starts
WARMUP_SHARE = 0.2
#: a log line that reports a failure, in text or JSON log format
_PROBLEM = re.compile(r'Traceback|\b(ERROR|CRITICAL)\b|"level": ?"(error|critical)"')


@dataclasses.dataclass(frozen=True)
class Wave:
    """A scenario's load: ``sessions`` of ``chunks`` content chunks ``gap`` seconds
    apart, ``concurrency`` sessions at a time, the first ones started over ``ramp``
    seconds."""

    sessions: int
    concurrency: int
    chunks: int
    gap: float
    ramp: float = 0.0

    @property
    def model(self) -> str:
        """The fake's model for this wave (see :func:`register_stamped`)."""
        return f"bench-stamped/{self.chunks}/{1000 * self.gap:g}ms"

    def describe(self) -> str:
        gap = f" x {1000 * self.gap:g} ms" if self.gap else ", no gap"
        if self.concurrency == 1:
            return f"{self.sessions} sequential sessions x {self.chunks} chunks{gap}"
        return f"{self.sessions} streams x {self.chunks} chunks{gap}"


@dataclasses.dataclass(frozen=True)
class Profile:
    """How big and how long: :data:`FULL` (a few minutes), :data:`QUICK` (tens of
    seconds) or :data:`TINY` (seconds: that it runs, not what it measures)."""

    name: str
    #: issue 7's scenarios (:mod:`bench.series`)
    s1: Wave
    s2: Wave
    s3: Wave
    s4: Wave
    #: alternating rounds of S1-S4 (each relay runs each wave once per round)
    series_rounds: int
    #: alternating rounds of every baseline/measurement pair
    rounds: int
    #: seconds a closed-loop round keeps starting sessions
    round_seconds: float
    #: concurrent sessions of the throughput scenario
    throughput_clients: tuple[int, ...]
    #: content chunks per throughput session (``bench/<n>``)
    chunks: int
    latency_clients: int
    #: seconds of each latency round
    latency_seconds: float
    #: seconds the thinking model is silent before its first byte
    think: float
    #: idle streams held open, opened in two equal steps
    idle_streams: int
    #: bare idle connections opened after them (the baseline)
    idle_bare: int
    #: seconds the idle streams are held while the worker's CPU is measured
    idle_hold: float
    fanout_readers: int
    fanout_chunks: int
    #: concurrent sessions of the store comparison
    store_clients: int
    #: sessions created before ``POST /prepare`` is timed again
    prepare_fill: int
    #: sequential ``POST /prepare`` timed on the empty and on the filled store
    prepare_probes: int
    session_timeout: float = 30.0


FULL = Profile(
    name="full",
    s1=Wave(sessions=50, concurrency=50, chunks=200, gap=0.020, ramp=0.2),
    s2=Wave(sessions=1000, concurrency=1000, chunks=100, gap=0.050, ramp=1.0),
    s3=Wave(sessions=20, concurrency=20, chunks=2000, gap=0.0),
    s4=Wave(sessions=200, concurrency=1, chunks=5, gap=0.0),
    series_rounds=2,
    rounds=3,
    round_seconds=2.0,
    throughput_clients=(50, 200),
    chunks=200,
    latency_clients=4,
    latency_seconds=1.0,
    think=0.3,
    idle_streams=5000,
    idle_bare=1000,
    idle_hold=3.0,
    fanout_readers=50,
    fanout_chunks=1000,
    store_clients=50,
    prepare_fill=5000,
    prepare_probes=200,
)
QUICK = dataclasses.replace(
    FULL,
    name="quick",
    s1=Wave(sessions=20, concurrency=20, chunks=50, gap=0.020, ramp=0.1),
    s2=Wave(sessions=200, concurrency=200, chunks=30, gap=0.050, ramp=0.2),
    s3=Wave(sessions=10, concurrency=10, chunks=500, gap=0.0),
    s4=Wave(sessions=50, concurrency=1, chunks=5, gap=0.0),
    series_rounds=1,
    rounds=1,
    round_seconds=0.8,
    throughput_clients=(50,),
    latency_seconds=0.4,
    idle_streams=200,
    idle_bare=100,
    idle_hold=1.0,
    prepare_fill=1000,
    prepare_probes=100,
)
TINY = dataclasses.replace(
    QUICK,
    name="tiny",
    s1=Wave(sessions=3, concurrency=3, chunks=5, gap=0.010),
    s2=Wave(sessions=10, concurrency=10, chunks=5, gap=0.020),
    s3=Wave(sessions=3, concurrency=3, chunks=50, gap=0.0),
    s4=Wave(sessions=5, concurrency=1, chunks=5, gap=0.0),
    round_seconds=0.3,
    throughput_clients=(5,),
    chunks=20,
    latency_clients=2,
    latency_seconds=0.2,
    idle_streams=10,
    idle_bare=5,
    idle_hold=0.2,
    fanout_readers=3,
    fanout_chunks=20,
    store_clients=5,
    prepare_fill=20,
    prepare_probes=5,
)


@dataclasses.dataclass
class Row:
    """One line of the report: a measurement next to its baseline."""

    scenario: str
    metric: str
    unit: str
    baseline: float | None
    measured: float | None
    #: what the baseline and the measurement are, e.g. ``"direct / relay"``
    versus: str = ""
    note: str = ""
    errors: int = 0

    @property
    def ratio(self) -> float | None:
        """``measured / baseline``, when both are known."""
        if self.baseline is None or self.measured is None or not self.baseline:
            return None
        if math.isnan(self.baseline) or math.isnan(self.measured):
            return None
        return self.measured / self.baseline


@dataclasses.dataclass
class ScenarioResult:
    name: str
    rows: list[Row] = dataclasses.field(default_factory=list)
    #: issue 7's scenarios: one figure for every relay
    compare: list[Compare] = dataclasses.field(default_factory=list)
    #: the baselines left out of a comparison, and why
    skipped_relays: dict[str, str] = dataclasses.field(default_factory=dict)
    details: dict[str, t.Any] = dataclasses.field(default_factory=dict)
    #: why the scenario did not run
    skipped: str | None = None
    #: why it failed, if it did
    failed: str | None = None
    seconds: float = 0.0


@dataclasses.dataclass
class Served:
    """An app under bench: its gunicorn and the one worker that does the work."""

    app: LiveApp
    worker: int

    @property
    def target(self) -> Target:
        return Target("relay", self.app.port)


@dataclasses.dataclass
class Run:
    """One load-generator run: the streams' summary, their records, and CPU use."""

    stats: StreamStats
    records: list[dict[str, t.Any]]
    #: ``fake_cpu_s``, ``loadgen_cpu_s``, and ``worker_cpu_s`` when an app served
    cpu: dict[str, float]
    #: events and seconds of the steady window of a closed loop
    steady: dict[str, float] | None = None

    @property
    def rate(self) -> float:
        """Events/s: in the steady window when there is one, else over the run."""
        if self.steady and self.steady["seconds"] > 0:
            return self.steady["events"] / self.steady["seconds"]
        return self.stats.events_per_s

    def cpu_per_event(self, process: str) -> float:
        """Microseconds of ``process``'s CPU per delivered event."""
        events = self.stats.events
        return 1e6 * self.cpu[f"{process}_cpu_s"] / events if events else math.nan

    def core_share(self, process: str) -> float:
        """``process``'s CPU as a share of one core over the run."""
        return self.cpu[f"{process}_cpu_s"] / self.stats.wall if self.stats.wall else math.nan

    def summary(self) -> dict[str, t.Any]:
        return {
            **dataclasses.asdict(self.stats),
            "steady": self.steady,
            "steady_events_per_s": self.rate,
            "cpu": self.cpu,
        }


@dataclasses.dataclass
class Bench:
    profile: Profile
    fake: FakeUpstream
    #: when set, every app's worker is profiled with py-spy into this directory
    profile_dir: Path | None = None
    #: by app label: the problems each app logged (see :func:`log_problems`)
    app_logs: dict[str, dict[str, t.Any]] = dataclasses.field(default_factory=dict)

    @property
    def direct(self) -> Target:
        return Target("direct", self.fake.port, "/api/v1/chat/completions")

    def app_env(self, **extra: str) -> dict[str, str]:
        return {
            "OPENROUTER_API_KEY": "bench-key",
            "OPENROUTER_BASE_URL": self.fake.base_url,
            # above the 5000 idle streams, and below gunicorn's connections (which
            # also hold the bare connections of the idle scenario)
            "NGAI_MAX_STREAMS": "8000",
            "GUNICORN_WORKER_CONNECTIONS": "10000",
            "NGAI_MAX_SESSIONS": "1000000",
            # every client of the benchmark is 127.0.0.1
            "NGAI_MAX_SESSIONS_PER_CLIENT": "0",
            "GUNICORN_GRACEFUL_TIMEOUT": "2",
            **extra,
        }

    @contextlib.contextmanager
    def serve(self, label: str, **extra_env: str) -> t.Iterator[Served]:
        """Serve the app (one gevent worker), warmed up with a few sessions.

        :param label: names the app in messages and profiles.
        """
        app = LiveApp(self.app_env(**extra_env))
        spy: subprocess.Popen[bytes] | None = None
        try:
            app.start(timeout=30)
            assert app.proc is not None
            served = Served(app, procinfo.worker_pid(app.proc.pid))
            if self.profile_dir is not None:
                spy = record_profile(served.worker, self.profile_dir / f"{label}.py-spy.txt")
            self.closed_loop(served.target, SHORT_MODEL, clients=10, seconds=0.5)
            yield served
        finally:
            app.stop()
            self.app_logs[label] = log_problems(app.log_text())
            app.__exit__()
            if spy is not None:
                finish_profile(spy)

    def closed_loop(
        self,
        target: Target,
        model: str,
        *,
        clients: int,
        seconds: float,
        worker: int | None = None,
    ) -> Run:
        """``clients`` clients streaming one session after another for ``seconds``;
        the CPU of the fake upstream, the load generator and ``worker`` is measured."""
        job = SessionsJob(
            target=target,
            model=model,
            concurrency=clients,
            duration=seconds,
            max_sessions=100_000,
            session_timeout=self.profile.session_timeout,
            warmup=WARMUP_SHARE * seconds,
        )
        fake_cpu = procinfo.CpuMeter().start()
        worker_cpu = procinfo.CpuMeter(worker).start() if worker else None
        result = run_job(job, job_timeout(job))
        cpu = {"fake_cpu_s": fake_cpu.stop()[0], "loadgen_cpu_s": result["cpu"]}
        if worker_cpu is not None:
            cpu["worker_cpu_s"] = worker_cpu.stop()[0]
        stats = summarize(result["records"], result["wall"])
        return Run(stats, result["records"], cpu, result["steady"])


def log_problems(text: str) -> dict[str, t.Any]:
    """What an app's log says went wrong: error lines and tracebacks."""
    lines = text.splitlines()
    problems = [line for line in lines if _PROBLEM.search(line)]
    return {"lines": len(lines), "problems": len(problems), "first": problems[:5]}


_T = t.TypeVar("_T")


def alternate(rounds: int, runs: t.Mapping[str, t.Callable[[], _T]]) -> dict[str, list[_T]]:
    """Call each of ``runs`` ``rounds`` times, round-robin."""
    results: dict[str, list[_T]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
    return results


def median_run(runs: list[Run]) -> Run:
    """The run with the median rate (the lower one of an even count)."""
    return sorted(runs, key=lambda run: run.rate)[(len(runs) - 1) // 2]
