"""``python -m bench.soak``: issue 15's soak, the shapes users make (``make soak``).

Paced streams (300 chunks 100 ms apart, as a model writes) from many concurrent
users, each session read by one client and, on a share of them, a second one that
joins later and replays from the start; every reader is checked for every chunk
exactly once and one terminal event (:mod:`bench.soak_load`), and follows a broken
connection with ``Last-Event-ID`` as a browser does. Over the run the workers' RSS,
open descriptors and CPU, Redis's memory and the time ``/health`` takes are sampled.
The fake upstream runs in a process of its own (:mod:`bench.soak_upstream`, one
asyncio loop), and the load generators in two more, so that what the workers get
of the machine's cores is measured, not the harness.

Two shapes:

- ``redis``: gunicorn with 2 workers on a private Redis, 1,000 users, a quarter of
  the sessions with a second reader, and one worker SIGKILLed halfway (gunicorn
  starts another). Readers whose generation died with it end with
  ``upstream_interrupted``; every other reader must end ``done`` and exact.
- ``memory``: 1 worker on the memory store, 2,000 users, the default replay TTL:
  is RSS flat once the replay window is full?

``--minutes`` sets the length (the issue's targets: 5 and 10 minutes; 1-2 on a
shared machine), ``--users`` the size. The figures go to ``bench/results/``
(JSON) and are printed as Markdown.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import typing as t
import uuid
from pathlib import Path

import requests

from bench.live import LiveApp
from bench.redis_server import RedisServer

from . import procinfo

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Shape:
    store: str
    workers: int
    users: int
    second_readers: float
    kill: bool


SHAPES = {
    "redis": Shape(store="redis", workers=2, users=1000, second_readers=0.25, kill=True),
    "memory": Shape(store="memory", workers=1, users=2000, second_readers=0.0, kill=False),
}


@contextlib.contextmanager
def upstream_process(model: str, chunks: int, gap: float) -> t.Iterator[str]:
    """The fake upstream in a gevent process of its own (:mod:`bench.soak_upstream`);
    yields its base URL.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.soak_upstream", model, str(chunks), str(gap)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        if not base_url.startswith("http://"):
            raise RuntimeError(f"the fake upstream did not start: {base_url!r}")
        yield base_url
    finally:
        proc.terminate()
        proc.wait(30)


class Sampler:
    """Samples the workers (RSS, descriptors, CPU), Redis's memory and ``/health``
    every ``interval`` seconds in a thread."""

    def __init__(self, app: LiveApp, redis_url: str | None, interval: float) -> None:
        self.app = app
        self.redis_url = redis_url
        self.interval = interval
        self.samples: list[dict[str, t.Any]] = []
        #: the last CPU seconds read of every worker ever seen
        self.cpu: dict[int, float] = {}
        #: the CPU seconds of the workers there at the start (their start-up)
        self.cpu_at_start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.began = time.monotonic()

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                self.sample()
                return

    def sample(self) -> None:
        sample: dict[str, t.Any] = {"t": round(time.monotonic() - self.began, 1), "workers": {}}
        for pid in self.app.worker_pids():
            try:
                cpu = procinfo.cpu_seconds(pid)
                sample["workers"][pid] = {
                    "rss_mib": round(procinfo.rss_kib(pid) / 1024, 1),
                    "fds": len(os.listdir(f"/proc/{pid}/fd")),
                    "cpu_s": round(cpu, 2),
                }
                self.cpu[pid] = cpu
                if not self.samples:
                    self.cpu_at_start[pid] = cpu
            except (OSError, RuntimeError):
                continue  # it died meanwhile
        started = time.monotonic()
        try:
            requests.get(self.app.url("/health"), timeout=30)
            sample["health_ms"] = round(1000 * (time.monotonic() - started), 1)
        except requests.RequestException:
            sample["health_ms"] = None
        if self.redis_url is not None:
            import redis

            with contextlib.suppress(redis.RedisError), redis.Redis.from_url(self.redis_url) as r:
                sample["redis_used_mib"] = round(int(r.info("memory")["used_memory"]) / 2**20, 1)
        self.samples.append(sample)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def analyse(
    loads: list[dict[str, t.Any]], kill_at: float | None, sampler: Sampler, shape: dict[str, t.Any]
) -> dict[str, t.Any]:
    records = [record for load in loads for record in load["records"]]
    latencies = sorted(lat for load in loads for lat in load["latencies_us"])
    # chunk lag per minute of the run (sampler's clock: CLOCK_MONOTONIC, as the
    # load generators'): does it hold, or grow as the run goes on?
    by_minute: dict[int, list[int]] = collections.defaultdict(list)
    for load in loads:
        for lat, at in zip(load["latencies_us"], load.get("latency_at_us", []), strict=False):
            by_minute[int((at / 1e6 - sampler.began) // 60)].append(lat)
    before = [r for r in records if kill_at is None or r["ended"] < kill_at]
    after = [r for r in records if kill_at is not None and r["ended"] >= kill_at]

    def outcomes(rows: list[dict[str, t.Any]]) -> dict[str, int]:
        return dict(collections.Counter(r["outcome"] for r in rows))

    exact = [r for r in records if r["outcome"] == "done" and r["lost"] == 0 and r["repeated"] == 0]
    received = sum(r["received"] for r in records)
    worker_cpu = sum(sampler.cpu.values()) - sum(sampler.cpu_at_start.values())
    ttfc = [r["ttfc"] for r in records if r["ttfc"] is not None and r["kind"] == "first"]
    rss = [
        (s["t"], round(sum(w["rss_mib"] for w in s["workers"].values()), 1))
        for s in sampler.samples
    ]
    health = [s["health_ms"] for s in sampler.samples if s.get("health_ms") is not None]
    return {
        "shape": shape,
        "sessions": sum(load["sessions"] for load in loads),
        "prepare_failed": sum(load["prepare_failed"] for load in loads),
        "prepare_failures": [f for load in loads for f in load["prepare_failures"]][:20],
        "readers": len(records),
        "readers_second": sum(r["kind"] == "second" for r in records),
        "exact_done": len(exact),
        "outcomes_before_kill": outcomes(before),
        "outcomes_after_kill": outcomes(after),
        "lost_chunks": sum(r["lost"] for r in records if r["outcome"] == "done"),
        "repeated_chunks": sum(r["repeated"] for r in records),
        "reconnects": sum(r["reconnects"] for r in records),
        "chunks_received": received,
        "worker_cpu_s": round(worker_cpu, 1),
        "worker_cpu_per_chunk_us": round(1e6 * worker_cpu / received, 1) if received else None,
        "chunk_lag_ms": {
            q: None if (v := percentile(latencies, p)) is None else round(v / 1000, 1)
            for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
        },
        "chunk_lag_ms_by_minute": {
            minute: {
                q: None if (v := percentile(sorted(lats), p)) is None else round(v / 1000, 1)
                for q, p in (("p50", 0.5), ("p99", 0.99))
            }
            for minute, lats in sorted(by_minute.items())
        },
        "ttfc_ms": {
            q: None if (v := percentile(ttfc, p)) is None else round(1000 * v)
            for q, p in (("p50", 0.5), ("p99", 0.99))
        },
        "health_ms": {
            "median": statistics.median(health) if health else None,
            "max": max(health, default=None),
        },
        "rss_mib": rss,
        "samples": sampler.samples,
    }


def markdown(result: dict[str, t.Any], command: str) -> str:
    s = result["shape"]
    rss = result["rss_mib"]
    fds = [sum(w["fds"] for w in x["workers"].values()) for x in result["samples"]]
    lag, ttfc, health = result["chunk_lag_ms"], result["ttfc_ms"], result["health_ms"]
    fd_text = f"{fds[0]} / {max(fds)} / {fds[-1]}" if fds else "—"
    lines = [
        f"### soak `{s['name']}`: {s['workers']} worker(s), {s['store']} store, "
        f"{s['users']} users, {s['minutes']} min",
        "",
        f"`{command}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        "shared 2-core machine",
        "",
        "| figure | value |",
        "|---|---|",
        f"| sessions / readers (second readers) | {result['sessions']} / {result['readers']} "
        f"({result['readers_second']}) |",
        f"| readers ending `done` with every chunk exactly once | {result['exact_done']} |",
        f"| outcomes while no worker was killed | {result['outcomes_before_kill']} |",
        f"| outcomes after the SIGKILL | {result['outcomes_after_kill'] or '—'} |",
        f"| chunks lost / repeated (in `done` streams) | {result['lost_chunks']} / "
        f"{result['repeated_chunks']} |",
        f"| reconnections (Last-Event-ID) | {result['reconnects']} |",
        f"| `POST /prepare` failed | {result['prepare_failed']} |",
        f"| chunks received | {result['chunks_received']} |",
        f"| worker CPU per chunk received | {result['worker_cpu_per_chunk_us']} µs |",
        f"| chunk lag (first readers, live) p50 / p99 / max | {lag['p50']} / {lag['p99']} / "
        f"{lag['max']} ms |",
        "| chunk lag p50 / p99 by minute of the run | "
        + ", ".join(
            f"{m}: {v['p50']} / {v['p99']}" for m, v in result["chunk_lag_ms_by_minute"].items()
        )
        + " ms |",
        f"| time to first chunk p50 / p99 | {ttfc['p50']} / {ttfc['p99']} ms |",
        f"| `/health` median / max | {health['median']} / {health['max']} ms |",
        f"| workers' RSS over time (s: MiB; load ended at {s['load_ended_s']} s) | "
        f"{', '.join(f'{t_:.0f}: {m:.0f}' for t_, m in rss)} |",
        f"| workers' open descriptors, first / max / last | {fd_text} |",
    ]
    redis_mem = [x.get("redis_used_mib") for x in result["samples"] if x.get("redis_used_mib")]
    if redis_mem:
        lines.append(f"| Redis used memory, max / last | {max(redis_mem)} / {redis_mem[-1]} MiB |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--shape", choices=SHAPES, default="redis")
    parser.add_argument("--minutes", type=float, default=2.0, help="load time (default 2)")
    parser.add_argument("--users", type=int, help="concurrent sessions (default: the shape's)")
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between chunks")
    parser.add_argument(
        "--second-readers", type=float, help="share of sessions with a second reader"
    )
    parser.add_argument("--no-kill", action="store_true", help="kill no worker")
    parser.add_argument("--loadgens", type=int, default=2, help="load-generator processes")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--after",
        type=float,
        default=0.0,
        help="seconds to keep sampling once the load stopped (memory given back?)",
    )
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the app, e.g. NGAI_MAX_REPLAY_BYTES=33554432 (repeatable)",
    )
    parser.add_argument(
        "--app-root",
        type=Path,
        help="serve the ngai_chat of this directory (e.g. an older commit's, to compare)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shape = SHAPES[args.shape]
    users = args.users or shape.users
    second = shape.second_readers if args.second_readers is None else args.second_readers
    kill = shape.kill and not args.no_kill
    seconds = 60 * args.minutes
    answer = args.chunks * args.gap
    procinfo.raise_fd_limit(4 * users + 4096)
    model = f"soak/{uuid.uuid4().hex[:8]}"
    info = {
        "name": args.shape,
        "store": shape.store,
        "workers": shape.workers,
        "users": users,
        "minutes": args.minutes,
        "chunks": args.chunks,
        "gap_s": args.gap,
        "second_readers": second,
        "kill": kill,
        "env": args.env,
        "app_root": str(args.app_root) if args.app_root else None,
    }
    print(f"soak: {info}", file=sys.stderr)
    redis_server = RedisServer().start() if shape.store == "redis" else None
    try:
        with upstream_process(model, args.chunks, args.gap) as base_url:
            env = {
                "OPENROUTER_API_KEY": "bench-key",
                "OPENROUTER_BASE_URL": base_url,
                "NGAI_MAX_STREAMS": str(4 * users + 1000),
                "GUNICORN_WORKER_CONNECTIONS": str(4 * users + 2000),
                "NGAI_MAX_SESSIONS": "1000000",
                "NGAI_MAX_SESSIONS_PER_CLIENT": "0",
                "GUNICORN_GRACEFUL_TIMEOUT": "5",
            }
            if redis_server is not None:
                env["REDIS_URL"] = redis_server.url
            env.update(item.split("=", 1) for item in args.env)
            if args.app_root is not None:
                env["PYTHONPATH"] = str(args.app_root.resolve())
            app = LiveApp(env, workers=shape.workers, cwd=args.app_root or ROOT)
            try:
                app.start(timeout=60)
                sampler = Sampler(
                    app, redis_server.url if redis_server else None, args.sample
                ).start()
                deadline = time.monotonic() + seconds
                loadgens = []
                per = [
                    users // args.loadgens + (i < users % args.loadgens)
                    for i in range(args.loadgens)
                ]
                for part in per:
                    job = {
                        "port": app.port,
                        "model": model,
                        "chunks": args.chunks,
                        "users": part,
                        "deadline": deadline,
                        "second_readers": second,
                        "answer_seconds": answer,
                    }
                    loadgens.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "bench.soak_load", json.dumps(job)],
                            cwd=ROOT,
                            stdout=subprocess.PIPE,
                        )
                    )
                kill_at: float | None = None
                if kill:
                    time.sleep(max(0.0, deadline - seconds / 2 - time.monotonic()))
                    victim = app.worker_pids()[0]
                    kill_at = time.monotonic()
                    os.kill(victim, signal.SIGKILL)
                    print(
                        f"soak: SIGKILLed worker {victim} at {seconds / 2:.0f} s", file=sys.stderr
                    )
                loads = []
                for proc in loadgens:
                    out, _ = proc.communicate(timeout=seconds + 3 * answer + 300)
                    loads.append(json.loads(out))
                load_ended = round(time.monotonic() - sampler.began, 1)
                time.sleep(args.after)
                sampler.stop()
            finally:
                app.close()
    finally:
        if redis_server is not None:
            redis_server.close()
    info["load_ended_s"] = load_ended
    result = analyse(loads, kill_at, sampler, info)
    output = args.output or RESULTS / f"soak-{args.shape}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1), encoding="utf-8")
    command = " ".join(["python -m bench.soak", *(argv if argv is not None else sys.argv[1:])])
    print(markdown(result, command))
    print(f"soak: JSON in {output}", file=sys.stderr)
    failed = sum(n for o, n in result["outcomes_before_kill"].items() if o != "done")
    return 1 if failed or result["lost_chunks"] or result["repeated_chunks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
