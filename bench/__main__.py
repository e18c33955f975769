"""``python -m bench [--quick | --tiny] [--only SCENARIO ...]``: run the benchmark, print
the table, write ``bench/results/latest.json``.

Exit status: 0 when every selected scenario ran (or was skipped for a stated
reason) and every stream ended properly; 1 when a scenario failed or a stream
ended with an error; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import time
from pathlib import Path

from bench.fake_upstream import FakeUpstream

from . import procinfo
from .report import build_report
from .report import format_markdown
from .report import format_table
from .report import write_json
from .runner import py_spy
from .scenarios import FULL
from .scenarios import QUICK
from .scenarios import SCENARIOS
from .scenarios import TINY
from .scenarios import Bench
from .scenarios import Profile
from .scenarios import ScenarioResult
from .scenarios import register_scripts
from .scenarios import run_scenarios

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
#: descriptors each process needs beyond those of the idle streams
FD_HEADROOM = 512


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Relay performance as ratios against baselines measured in the same run.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller and shorter (tens of seconds)")
    size.add_argument(
        "--tiny",
        action="store_true",
        help="a few sessions each: it runs, it measures nothing",
    )
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, metavar="SCENARIO", help=", ".join(SCENARIOS)
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"default: {RESULTS}")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="profile every app's worker with py-spy (raw profiles next to --output)",
    )
    args = parser.parse_args(argv)
    if args.py_spy and py_spy() is None:
        parser.error("--py-spy: py-spy is not installed (.venv/bin/pip install py-spy)")
    return args


def fit_fd_limit(profile: Profile) -> Profile:
    """Raise the descriptor limit for the idle streams, or open fewer of them.

    The worker holds two descriptors per idle stream (the client's and the
    upstream's) and one per bare connection; the fake upstream, one per stream.
    """
    limit = procinfo.raise_fd_limit(2 * profile.idle_streams + profile.idle_bare + FD_HEADROOM)
    fitting = max(0, (limit - FD_HEADROOM - profile.idle_bare) // 2)
    if fitting >= profile.idle_streams:
        return profile
    print(f"bench: file descriptor limit {limit}: {fitting} idle streams only", file=sys.stderr)
    return dataclasses.replace(profile, idle_streams=fitting)


def exit_status(results: list[ScenarioResult]) -> int:
    broken = any(result.failed for result in results)
    errors = any(row.errors for result in results for row in result.rows)
    return 1 if broken or errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = fit_fd_limit(TINY if args.tiny else QUICK if args.quick else FULL)
    selected = set(args.only or SCENARIOS)
    started_at = datetime.datetime.now(datetime.UTC)
    began = time.monotonic()
    print(f"bench: {profile.name} run of {', '.join(sorted(selected))}", file=sys.stderr)
    with FakeUpstream(record=False) as fake:
        register_scripts(fake, profile)
        bench = Bench(profile, fake, args.output.parent if args.py_spy else None)
        results = run_scenarios(bench, selected)
    seconds = time.monotonic() - began
    report = build_report(profile, results, bench.app_logs, seconds, started_at)
    write_json(report, args.output)
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    markdown = args.output.with_suffix(".md")
    markdown.write_text(format_markdown(results, command, report["machine"]), encoding="utf-8")
    print(format_table(results, bench.app_logs))
    print(f"\n{profile.name} run: {seconds:.0f} s; JSON: {args.output}; Markdown: {markdown}")
    return exit_status(results)


if __name__ == "__main__":
    raise SystemExit(main())
