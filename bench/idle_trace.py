"""``python -m bench.idle_trace [--streams N]``: where an idle stream's memory goes.

Serves the app as the ``idle`` scenario does (one gevent worker, every stream its
own session whose upstream answered its role chunk and then says nothing), with
tracemalloc on in the worker (:mod:`bench.trace_conf`). It opens a few streams to
warm up, takes a snapshot, opens ``N`` more, takes another, and prints what the
``N`` streams hold per stream: in total, by allocation site, and by the innermost
frame of ngai_chat (or of the library that called into the allocating one). The
worker's RSS per stream is printed too, but tracemalloc's own records inflate
it: the ``idle`` scenario of ``python -m bench`` is the RSS figure.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.fake_upstream import FakeUpstream
from bench.live import LiveApp
from bench.live import wait_until

from . import procinfo
from .jobs import IdleJob
from .jobs import Target
from .runner import LoadGen
from .runner import job_timeout
from .scenarios import IDLE_MODEL
from .scenarios import QUICK
from .scenarios import Bench
from .scenarios import register_scripts

HERE = Path(__file__).resolve().parent
#: frames kept per allocation
FRAMES = 30
#: where a frame is "ours", or a library's worth naming
OWNERS = ("ngai_chat", "requests", "urllib3", "http/client", "email", "gunicorn", "flask",
          "werkzeug", "gevent", "socket", "ssl")  # fmt: skip


def owner(frame: tracemalloc.Frame) -> str | None:
    name = frame.filename
    for mark in OWNERS:
        if f"/{mark}/" in name or name.endswith(f"/{mark}.py"):
            return mark
    return None


def snapshot(pid: int, folder: Path, index: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR2)
    wait_until(lambda: (folder / f"{index}.done").exists(), 120, "the worker's snapshot")
    return tracemalloc.Snapshot.load(str(folder / f"{index}.snapshot"))


def report(after: tracemalloc.Snapshot, before: tracemalloc.Snapshot, count: int, top: int) -> None:
    diffs = after.compare_to(before, "traceback")
    total = sum(diff.size_diff for diff in diffs)
    blocks = sum(diff.count_diff for diff in diffs)
    print(f"traced per stream: {total / count / 1024:.2f} KiB in {blocks / count:.1f} blocks")
    by_site: collections.Counter[str] = collections.Counter()
    by_caller: collections.Counter[str] = collections.Counter()
    for diff in diffs:
        frames = list(diff.traceback)  # oldest first
        site = frames[-1]
        by_site[f"{site.filename}:{site.lineno}"] += diff.size_diff
        caller = "?"
        for frame in reversed(frames):
            mark = owner(frame)
            if mark is not None:
                caller = f"{mark}: {frame.filename.rpartition('/')[2]}:{frame.lineno}"
                break
        by_caller[caller] += diff.size_diff
    for title, counter in (
        ("by allocation site", by_site),
        ("by innermost named frame", by_caller),
    ):
        print(f"\n{title} (bytes per stream):")
        for key, size in counter.most_common(top):
            print(f"  {size / count:8.0f}  {key}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_trace")
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    procinfo.raise_fd_limit(2 * (args.streams + args.warm) + 512)
    folder = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    with FakeUpstream(record=False) as fake:
        register_scripts(fake, QUICK)
        env = Bench(QUICK, fake).app_env(
            BENCH_TRACE_FRAMES=str(FRAMES), BENCH_TRACE_DIR=str(folder)
        )
        app = LiveApp(env, extra_args=["-c", str(HERE / "trace_conf.py")])
        try:
            app.start(timeout=60)
            assert app.proc is not None
            worker = procinfo.worker_pid(app.proc.pid)
            job = IdleJob(
                target=Target("relay", app.port),
                model=IDLE_MODEL,
                steps=(("stream", args.warm), ("stream", args.streams)),
                concurrency=100,
                step_timeout=600.0,
                hold_timeout=600.0,
            )
            with LoadGen(job) as gen:
                warm = gen.message(job_timeout(job))["open"]
                time.sleep(0.5)
                rss0 = procinfo.rss_kib(worker)
                before = snapshot(worker, folder, 0)
                gen.send("next")
                opened = gen.message(job_timeout(job))["open"]
                time.sleep(0.5)
                rss1 = procinfo.rss_kib(worker)
                after = snapshot(worker, folder, 1)
                gen.send("next")
                gen.result(job_timeout(job))
        finally:
            app.stop()
            problems = [line for line in app.log_text().splitlines() if "Traceback" in line]
            app.__exit__()
    print(f"{warm} streams to warm up, then {opened} idle streams measured")
    print(f"worker RSS per stream (inflated by tracemalloc): {(rss1 - rss0) / opened:.1f} KiB")
    report(after, before, opened, args.top)
    if problems:
        print(f"the app logged {len(problems)} tracebacks", file=sys.stderr)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
