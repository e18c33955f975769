"""The scenarios. Each measures the relay next to baselines taken in the same
run, and reports ratios (``bench/README.md`` says how to read them): issue 7's
S1-S4 against direct, nginx and Node/Express (:mod:`bench.series`), and six
older ones against direct, one reader, the memory store or an empty store.

Every scenario gets a :class:`Bench`: the profile (sizes and durations), the fake
upstream (in this process, on its own threads) and a way to serve the app with
gunicorn's gevent worker (:class:`tests.support.live.LiveApp`). Load always comes
from a separate load-generator process (:mod:`bench.loadgen`).

The machine is shared (other processes, other engineers' test runs), so a
baseline and its measurement run in alternating rounds (:func:`alternate`): a
disturbance from outside lands on both alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import re
import subprocess
import time
import typing as t
import uuid
from pathlib import Path

from tests.support.fake_upstream import Chunk
from tests.support.fake_upstream import FakeUpstream
from tests.support.fake_upstream import Hang
from tests.support.fake_upstream import Pause
from tests.support.fake_upstream import make_chunk
from tests.support.fake_upstream import text_chunks
from tests.support.live import LiveApp

from . import procinfo
from .compare import Compare
from .jobs import FanoutJob
from .jobs import IdleJob
from .jobs import PrepareJob
from .jobs import SessionsJob
from .jobs import Target
from .runner import LoadGen
from .runner import finish_profile
from .runner import job_timeout
from .runner import record_profile
from .runner import run_job
from .series import SERIES
from .series import Wave
from .series import register_stamped
from .series import run_series
from .stats import StreamStats
from .stats import percentiles
from .stats import summarize

__all__ = [
    "FULL",
    "QUICK",
    "REDIS_URL",
    "SCENARIOS",
    "TINY",
    "Bench",
    "Profile",
    "Row",
    "ScenarioResult",
    "register_scripts",
    "run_scenarios",
]

#: a model that answers with its role chunk, then stays silent until the client leaves
IDLE_MODEL = "bench-idle"
#: a model that "thinks" (sends nothing) for :attr:`Profile.think` seconds first
THINK_MODEL = "bench-think"
#: a short answer, for latency
SHORT_MODEL = "bench/20"
REDIS_URL = "redis://127.0.0.1:6379/0"
#: seconds for the worker's allocations to settle before its RSS is read
SETTLE = 0.3
#: share of a closed-loop round before its steady window starts
WARMUP_SHARE = 0.2
SCENARIOS = (*SERIES, "throughput", "latency", "idle", "store", "fanout", "prepare", "v1")
#: issue 7's targets for the idle streams and the Redis store
IDLE_TARGET_KIB = 32.0
IDLE_TARGET_STREAMS = 5000
REDIS_TARGET = 1.5

_T = t.TypeVar("_T")
#: a log line that reports a failure, in text or JSON log format
_PROBLEM = re.compile(r'Traceback|\b(ERROR|CRITICAL)\b|"level": ?"(error|critical)"')


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


def register_scripts(fake: FakeUpstream, profile: Profile) -> None:
    """The scripted models the scenarios use besides the built-in ``bench/<n>``."""
    fake.script(IDLE_MODEL, [Chunk(make_chunk("", model=IDLE_MODEL)), Hang()])
    fake.script(
        THINK_MODEL, [Pause(profile.think), *text_chunks(["w1 ", "w2 "], model=THINK_MODEL)]
    )
    register_stamped(fake, (profile.s1, profile.s2, profile.s3, profile.s4))


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


def pooled(runs: list[Run]) -> StreamStats:
    """Every stream of ``runs`` summarized together."""
    records = [record for run in runs for record in run.records]
    return summarize(records, sum(run.stats.wall for run in runs))


# --- 1. throughput ------------------------------------------------------------------


def _cores(run: Run) -> str:
    """The CPU each process used during ``run``, in cores."""
    names = [name for name in ("worker", "fake", "loadgen") if f"{name}_cpu_s" in run.cpu]
    return " ".join(f"{name} {run.core_share(name):.2f}" for name in names)


def _throughput_rows(clients: int, direct: Run, relay: Run, rounds: int, chunks: int) -> list[Row]:
    errors = direct.stats.errors + relay.stats.errors
    workload = f"{clients} sessions x {chunks} chunks"
    return [
        Row(
            "throughput",
            workload,
            "events/s",
            direct.rate,
            relay.rate,
            "direct / relay",
            note=f"median of {rounds}; cores used: {_cores(direct)} | {_cores(relay)}",
            errors=errors,
        ),
        Row(
            "throughput",
            f"CPU per event, {clients} sessions",
            "us",
            direct.cpu_per_event("fake"),
            relay.cpu_per_event("worker"),
            "fake upstream / worker",
            note="what relaying an event costs next to what producing it costs the fake",
        ),
    ]


def throughput(bench: Bench, served: Served, result: ScenarioResult) -> None:
    """Scenario 1: concurrent sessions of ``bench/<chunks>``, direct and relayed."""
    profile = bench.profile
    model = f"bench/{profile.chunks}"
    for clients in profile.throughput_clients:

        def direct(clients: int = clients) -> Run:
            return bench.closed_loop(
                bench.direct, model, clients=clients, seconds=profile.round_seconds
            )

        def relay(clients: int = clients) -> Run:
            return bench.closed_loop(
                served.target,
                model,
                clients=clients,
                seconds=profile.round_seconds,
                worker=served.worker,
            )

        runs = alternate(profile.rounds, {"direct": direct, "relay": relay})
        medians = {name: median_run(each) for name, each in runs.items()}
        result.rows += _throughput_rows(
            clients, medians["direct"], medians["relay"], profile.rounds, profile.chunks
        )
        result.details[f"clients_{clients}"] = {
            name: {
                "median": medians[name].summary(),
                "steady_events_per_s": [run.rate for run in each],
            }
            for name, each in runs.items()
        }


# --- 2. latency -----------------------------------------------------------------------


def _latency_rows(stats: dict[str, StreamStats], think: float) -> list[Row]:
    fast_d, fast_r = stats["fast_direct"], stats["fast_relay"]
    think_d, think_r = stats["thinking_direct"], stats["thinking_relay"]
    fast_errors = fast_d.errors + fast_r.errors
    think_errors = think_d.errors + think_r.errors
    versus = "direct / relay"
    return [
        Row("latency", "first chunk p50", "ms", fast_d.ttfc.p50, fast_r.ttfc.p50, versus,
            note=f"relay adds {fast_r.ttfc.p50 - fast_d.ttfc.p50:.1f} ms; "
                 f"POST /prepare before it: p50 {fast_r.prepare.p50:.1f} ms",
            errors=fast_errors),
        Row("latency", "first chunk p95", "ms", fast_d.ttfc.p95, fast_r.ttfc.p95, versus,
            note=f"POST /prepare p95 {fast_r.prepare.p95:.1f} ms", errors=fast_errors),
        Row("latency", f"first byte p50, upstream silent {think:g} s", "ms",
            think_d.ttfb.p50, think_r.ttfb.p50, versus,
            note="the relay answers before the upstream does", errors=think_errors),
        Row("latency", f"first byte p95, upstream silent {think:g} s", "ms",
            think_d.ttfb.p95, think_r.ttfb.p95, versus, errors=think_errors),
    ]  # fmt: skip


def latency(bench: Bench, served: Served, result: ScenarioResult) -> None:
    """Scenario 2: first chunk from a fast upstream; first byte from a silent one."""
    profile = bench.profile
    specs = {
        "fast": (SHORT_MODEL, profile.latency_clients),
        "thinking": (THINK_MODEL, 2 * profile.latency_clients),
    }
    targets = {"direct": bench.direct, "relay": served.target}
    calls: dict[str, t.Callable[[], Run]] = {}
    for label, (model, clients) in specs.items():
        for kind, target in targets.items():

            def call(target: Target = target, model: str = model, clients: int = clients) -> Run:
                return bench.closed_loop(
                    target, model, clients=clients, seconds=profile.latency_seconds
                )

            calls[f"{label}_{kind}"] = call
    stats = {name: pooled(runs) for name, runs in alternate(profile.rounds, calls).items()}
    result.rows += _latency_rows(stats, profile.think)
    result.details.update({name: dataclasses.asdict(each) for name, each in stats.items()})


# --- 3. idle streams ------------------------------------------------------------------


def _hold_idle(bench: Bench, served: Served, job: IdleJob) -> dict[str, t.Any]:
    """Open the job's steps one by one, reading the worker's RSS after each; measure
    the worker's CPU while the idle streams (the first steps) are held."""
    rss = [procinfo.rss_kib(served.worker)]
    opened: list[int] = []
    idle_cpu = (math.nan, math.nan)
    with LoadGen(job) as gen:
        for index, (kind, _) in enumerate(job.steps):
            opened.append(gen.message(job_timeout(job))["open"])
            time.sleep(SETTLE)
            rss.append(procinfo.rss_kib(served.worker))
            next_kind = job.steps[index + 1][0] if index + 1 < len(job.steps) else None
            if kind == "stream" and next_kind != "stream":
                meter = procinfo.CpuMeter(served.worker).start()
                time.sleep(bench.profile.idle_hold)
                idle_cpu = meter.stop()
            gen.send("next")
        summary = gen.result(job_timeout(job))
    return {"rss_kib": rss, "open": opened, "idle_cpu": idle_cpu, "loadgen": summary}


def idle_memory(bench: Bench, served: Served, result: ScenarioResult) -> None:
    """Scenario 3: the worker's RSS per idle stream, next to a bare idle connection."""
    profile = bench.profile
    half = profile.idle_streams // 2
    job = IdleJob(
        target=served.target,
        model=IDLE_MODEL,
        steps=(
            ("stream", half),
            ("stream", profile.idle_streams - half),
            ("bare", profile.idle_bare),
        ),
        concurrency=100,
        step_timeout=60.0,
        hold_timeout=60.0,
    )
    time.sleep(SETTLE)
    held = _hold_idle(bench, served, job)
    rss, opened = held["rss_kib"], held["open"]
    streams = opened[0] + opened[1]
    per_stream = (rss[2] - rss[0]) / streams if streams else math.nan
    marginal = (rss[2] - rss[1]) / opened[1] if opened[1] else math.nan
    per_bare = (rss[3] - rss[2]) / opened[2] if opened[2] else math.nan
    idle_cpu_s, idle_share = held["idle_cpu"]
    if streams < IDLE_TARGET_STREAMS:
        verdict = f"not checked, {streams} streams held"
    else:
        verdict = "met" if per_stream < IDLE_TARGET_KIB else "NOT met"
    goal = f"target {IDLE_TARGET_STREAMS} streams at < {IDLE_TARGET_KIB:g} KiB each: {verdict}; "
    result.rows += [
        Row("idle streams", f"memory per idle stream, {streams} streams", "KiB", per_bare,
            per_stream, "bare connection / stream",
            note=f"{goal}worker RSS {rss[0] / 1024:.0f} -> {rss[2] / 1024:.0f} MiB; "
                 f"second half {marginal:.1f} KiB each",
            errors=held["loadgen"]["failed"]),
        Row("idle streams", f"worker CPU, {streams} idle streams", "% core", None,
            100 * idle_share, note=f"over {profile.idle_hold:g} s with no event flowing"),
    ]  # fmt: skip
    result.details.update(
        held,
        kib_per_stream=per_stream,
        kib_per_stream_second_half=marginal,
        kib_per_bare_connection=per_bare,
        idle_cpu_s=idle_cpu_s,
        idle_core_share=idle_share,
    )


# --- 4. store comparison ----------------------------------------------------------------


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


def _delete_keys(prefix: str) -> int:
    """Delete the run's keys from the shared Redis; returns how many there were."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


def _verdict(memory: Run, redis: Run) -> str:
    ratio = redis.cpu_per_event("worker") / memory.cpu_per_event("worker")
    return "?" if math.isnan(ratio) else ("met" if ratio < REDIS_TARGET else "NOT met")


def store_comparison(bench: Bench, memory_app: Served, result: ScenarioResult) -> None:
    """Scenario 4: the throughput scenario on the Redis store and on the memory one."""
    reason = redis_unavailable()
    if reason is not None:
        result.skipped = reason
        return
    profile = bench.profile
    model = f"bench/{profile.chunks}"
    prefix = f"bench-{uuid.uuid4()}:"

    def on(served: Served) -> t.Callable[[], Run]:
        return lambda: bench.closed_loop(
            served.target,
            model,
            clients=profile.store_clients,
            seconds=profile.round_seconds,
            worker=served.worker,
        )

    try:
        env = {"REDIS_URL": REDIS_URL, "NGAI_REDIS_KEY_PREFIX": prefix}
        with bench.serve("redis", **env) as redis_app:
            runs = alternate(profile.rounds, {"memory": on(memory_app), "redis": on(redis_app)})
    finally:
        result.details["keys_deleted"] = _delete_keys(prefix)
    memory, redis = median_run(runs["memory"]), median_run(runs["redis"])
    result.rows += [
        Row("store", f"{profile.store_clients} sessions x {profile.chunks} chunks", "events/s",
            memory.rate, redis.rate, "memory / redis",
            note=f"median of {profile.rounds}; worker {redis.core_share('worker'):.0%} "
                 "of a core on redis",
            errors=memory.stats.errors + redis.stats.errors),
        Row("store", "worker CPU per chunk", "us", memory.cpu_per_event("worker"),
            redis.cpu_per_event("worker"), "memory / redis",
            note=f"target redis / memory < {REDIS_TARGET:g}: {_verdict(memory, redis)}"),
    ]  # fmt: skip
    result.details.update(
        {
            name: {"median": median.summary(), "steady_events_per_s": [r.rate for r in runs[name]]}
            for name, median in (("memory", memory), ("redis", redis))
        }
    )


# --- 5. fan-out -------------------------------------------------------------------------


def _fanout_round(bench: Bench, served: Served, readers: int) -> Run:
    """One session read by ``readers`` clients at once."""
    job = FanoutJob(
        target=served.target,
        model=f"bench/{bench.profile.fanout_chunks}",
        readers=readers,
        repeats=1,
        session_timeout=bench.profile.session_timeout,
    )
    result = run_job(job, job_timeout(job))
    records = [record for round_ in result["rounds"] for record in round_["records"]]
    wall = sum(round_["wall"] for round_ in result["rounds"])
    return Run(summarize(records, wall), records, {"loadgen_cpu_s": result["cpu"]})


def fanout(bench: Bench, served: Served, result: ScenarioResult) -> None:
    """Scenario 5: events/s delivered to R readers of one session against one reader."""
    profile = bench.profile
    readers = profile.fanout_readers
    runs = alternate(
        profile.rounds,
        {
            "single": lambda: _fanout_round(bench, served, 1),
            "many": lambda: _fanout_round(bench, served, readers),
        },
    )
    single, many = pooled(runs["single"]), pooled(runs["many"])
    result.rows.append(
        Row(
            "fan-out",
            f"{readers} readers x {profile.fanout_chunks} chunks",
            "events/s",
            single.events_per_s,
            many.events_per_s,
            "1 reader / many",
            note=f"ideal: {readers}x; last reader done at p95 {many.total.p95:.0f} ms",
            errors=single.errors + many.errors,
        )
    )
    result.details.update(single=dataclasses.asdict(single), many=dataclasses.asdict(many))


# --- 6. session creation as the store fills ------------------------------------------


def prepare_scaling(bench: Bench, served: Served, result: ScenarioResult) -> None:
    """Scenario 6: ``POST /prepare`` with ``prepare_fill`` sessions stored against an
    empty store. Creating a session should not cost more as sessions pile up (the
    store keeps every session until its TTL or replay TTL ends)."""
    profile = bench.profile
    job = PrepareJob(
        target=served.target,
        model=SHORT_MODEL,
        probes=profile.prepare_probes,
        fill=profile.prepare_fill,
        concurrency=10,
        timeout=profile.session_timeout,
    )
    answer = run_job(job, job_timeout(job))
    empty, filled = percentiles(answer["empty"]), percentiles(answer["filled"])
    result.rows.append(
        Row(
            "prepare",
            f"POST /prepare p50, {profile.prepare_fill} sessions stored",
            "ms",
            empty.p50,
            filled.p50,
            "empty / filled store",
            note=(
                f"p95 {empty.p95:.1f} -> {filled.p95:.1f} ms; "
                f"filling took {answer['fill_seconds']:.1f} s"
            ),
        )
    )
    result.details.update(
        empty=dataclasses.asdict(empty),
        filled=dataclasses.asdict(filled),
        fill_seconds=answer["fill_seconds"],
    )


# --- the run --------------------------------------------------------------------------


@contextlib.contextmanager
def _recorded(results: list[ScenarioResult], name: str) -> t.Iterator[ScenarioResult]:
    """A scenario's result, timed; a failure is recorded and the run goes on."""
    result = ScenarioResult(name)
    began = time.monotonic()
    try:
        yield result
    except Exception as exc:
        result.failed = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        result.seconds = time.monotonic() - began
        results.append(result)


_ON_SHARED_APP: dict[str, t.Callable[[Bench, Served, ScenarioResult], None]] = {
    "throughput": throughput,
    "latency": latency,
    "fanout": fanout,
    "store": store_comparison,
}


def run_scenarios(bench: Bench, selected: t.AbstractSet[str]) -> list[ScenarioResult]:
    """Run the selected scenarios. One app (memory store) serves throughput,
    latency, fan-out and the memory side of the store comparison; idle streams and
    session creation get fresh apps of their own, so that they start from an empty
    store."""
    results: list[ScenarioResult] = []
    try:
        run_series(bench, selected, lambda name: _recorded(results, name))
    except Exception as exc:  # a relay did not start (or stop)
        done = {result.name for result in results}
        failure = f"the relays failed: {type(exc).__name__}: {exc}"[:2000]
        results += [
            ScenarioResult(name, failed=failure)
            for name in SERIES
            if name in selected and name not in done
        ]
    shared = [name for name in _ON_SHARED_APP if name in selected]
    if shared:
        try:
            with bench.serve("memory") as served:
                for name in shared:
                    with _recorded(results, name) as result:
                        _ON_SHARED_APP[name](bench, served, result)
        except Exception as exc:  # the app did not start (or stop)
            done = {result.name for result in results}
            failure = f"the app failed: {type(exc).__name__}: {exc}"[:2000]
            results += [ScenarioResult(name, failed=failure) for name in shared if name not in done]
    on_own_app = {"idle": idle_memory, "prepare": prepare_scaling}
    for name, scenario in on_own_app.items():
        if name in selected:
            with _recorded(results, name) as result, bench.serve(name) as served:
                scenario(bench, served, result)
    if "v1" in selected:  # the OpenAI door; its app and LiteLLM are its own
        from .openai_door import v1

        with _recorded(results, "v1") as result:
            v1(bench, result)
    return results
