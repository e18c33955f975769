"""The scenarios. Each measures the relay next to baselines taken in the same
run, and reports ratios (``bench/README.md`` says how to read them): issue 7's
S1-S4 against direct, nginx and Node/Express (:mod:`bench.series`), and six
older ones against direct, one reader, the memory store or an empty store.

Every scenario gets a :class:`Bench`: the profile (sizes and durations), the fake
upstream (in this process, on its own threads) and a way to serve the app with
gunicorn's gevent worker (:class:`bench.live.LiveApp`). Load always comes
from a separate load-generator process (:mod:`bench.loadgen`).

The machine is shared (other processes, other engineers' test runs), so a
baseline and its measurement run in alternating rounds (:func:`alternate`): a
disturbance from outside lands on both alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import typing as t
import uuid

from bench.fake_upstream import Chunk
from bench.fake_upstream import FakeUpstream
from bench.fake_upstream import Hang
from bench.fake_upstream import Pause
from bench.fake_upstream import make_chunk
from bench.fake_upstream import text_chunks

from . import procinfo
from .cluster import cluster_comparison
from .harness import FULL as FULL
from .harness import QUICK as QUICK
from .harness import SHORT_MODEL
from .harness import TINY as TINY
from .harness import Bench as Bench
from .harness import Profile as Profile
from .harness import Row as Row
from .harness import Run
from .harness import ScenarioResult as ScenarioResult
from .harness import Served
from .harness import alternate
from .harness import median_run
from .jobs import FanoutJob
from .jobs import IdleJob
from .jobs import PrepareJob
from .jobs import Target
from .openai_door import v1
from .redis_server import REDIS_URL
from .redis_server import delete_keys
from .redis_server import redis_unavailable
from .runner import LoadGen
from .runner import job_timeout
from .runner import run_job
from .series import SERIES
from .series import register_stamped
from .series import run_series
from .stats import StreamStats
from .stats import percentiles
from .stats import summarize
from .uichat import chat_vs_stream

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
#: seconds for the worker's allocations to settle before its RSS is read
SETTLE = 0.3
SCENARIOS = (
    *SERIES,
    "throughput",
    "latency",
    "idle",
    "store",
    "fanout",
    "prepare",
    "uichat",
    "cluster",
    "v1",
)
#: issue 7's targets for the idle streams and the Redis store
IDLE_TARGET_KIB = 32.0
IDLE_TARGET_STREAMS = 5000
REDIS_TARGET = 1.5


def register_scripts(fake: FakeUpstream, profile: Profile) -> None:
    """The scripted models the scenarios use besides the built-in ``bench/<n>``."""
    fake.script(IDLE_MODEL, [Chunk(make_chunk("", model=IDLE_MODEL)), Hang()])
    fake.script(
        THINK_MODEL, [Pause(profile.think), *text_chunks(["w1 ", "w2 "], model=THINK_MODEL)]
    )
    register_stamped(fake, (profile.s1, profile.s2, profile.s3, profile.s4))


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
        result.details["keys_deleted"] = delete_keys(prefix)
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


def ui_chat(bench: Bench, served: Served, result: ScenarioResult) -> None:
    """``POST /chat`` against ``/stream`` (:mod:`bench.uichat`)."""

    chat_vs_stream(bench, served, result)


_ON_SHARED_APP: dict[str, t.Callable[[Bench, Served, ScenarioResult], None]] = {
    "throughput": throughput,
    "latency": latency,
    "fanout": fanout,
    "store": store_comparison,
    "uichat": ui_chat,
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
    if "cluster" in selected:  # apps of its own, on a cluster of its own
        with _recorded(results, "cluster") as result:
            cluster_comparison(bench, result)
    if "v1" in selected:  # the OpenAI door; its app and LiteLLM are its own
        with _recorded(results, "v1") as result:
            v1(bench, result)
    return results
