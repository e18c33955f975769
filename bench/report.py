"""The report: tables on stdout, the same as Markdown, and everything as JSON
(with the machine it ran on)."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import resource
import subprocess
import sys
import typing as t
from pathlib import Path

from .compare import RELAYS
from .compare import Compare
from .scenarios import REDIS_URL
from .scenarios import Profile
from .scenarios import Row
from .scenarios import ScenarioResult

__all__ = ["build_report", "format_markdown", "format_table", "machine_info", "write_json"]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ngai-chat", "flask", "gevent", "greenlet", "gunicorn", "requests", "redis")
COLUMNS = ("scenario", "metric", "unit", "baseline", "measured", "ratio", "vs", "err", "note")
COMPARE_COLUMNS = (
    "scenario",
    "metric",
    "unit",
    *RELAYS,
    "ngai/node",
    "ngai/nginx",
    "err",
    "targets (ngai_chat)",
)


def _first_line_with(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _redis_version() -> str | None:
    try:
        import redis

        info = redis.Redis.from_url(REDIS_URL, socket_timeout=2).info("server")
    except Exception:
        return None
    return str(info.get("redis_version"))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _command_version(*command: str) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout + done.stderr).strip().rpartition("/")[2].lstrip("v") or None


def _express_version() -> str | None:
    lock = ROOT / "bench" / "node_relay" / "package-lock.json"
    try:
        packages = json.loads(lock.read_text())["packages"]
        return str(packages["node_modules/express"]["version"])
    except (OSError, ValueError, KeyError):
        return None


def machine_info() -> dict[str, t.Any]:
    """Where the figures come from: they only compare within one machine and run."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": _first_line_with("/proc/cpuinfo", "model name"),
        "memory": _first_line_with("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "packages": {name: _version(name) for name in PACKAGES},
        "redis_server": _redis_version(),
        "baselines": {
            "node": _command_version("node", "--version"),
            "express": _express_version(),
            "nginx": _command_version("nginx", "-v") or _command_version("/usr/sbin/nginx", "-v"),
        },
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
    }


def _row_json(row: Row) -> dict[str, t.Any]:
    return {**dataclasses.asdict(row), "ratio": row.ratio}


def build_report(
    profile: Profile,
    results: list[ScenarioResult],
    app_logs: dict[str, dict[str, t.Any]],
    seconds: float,
    started: datetime.datetime,
) -> dict[str, t.Any]:
    return {
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "profile": dataclasses.asdict(profile),
        "machine": machine_info(),
        "app_logs": app_logs,
        "scenarios": [
            {
                "name": result.name,
                "seconds": round(result.seconds, 1),
                "skipped": result.skipped,
                "failed": result.failed,
                "rows": [_row_json(row) for row in result.rows],
                "compare": [row.as_json() for row in result.compare],
                "skipped_relays": result.skipped_relays,
                "details": result.details,
            }
            for result in results
        ],
    }


def _number(value: float | None, *, ratio: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    if ratio:
        return f"{value:.3f}" if abs(value) < 0.1 else f"{value:.2f}"
    if abs(value) >= 1000 or (abs(value) >= 10 and value.is_integer()):
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.scenario,
        row.metric,
        row.unit,
        _number(row.baseline),
        _number(row.measured),
        _number(row.ratio, ratio=True),
        row.versus if row.baseline is not None else "",
        str(row.errors),
        row.note,
    )


def _compare_cells(row: Compare) -> tuple[str, ...]:
    return (
        row.scenario,
        row.metric,
        row.unit,
        *(_number(row.values.get(name)) for name in RELAYS),
        _number(row.ratio("node"), ratio=True),
        _number(row.ratio("nginx"), ratio=True),
        str(row.errors),
        row.verdicts(),
    )


def _aligned(lines: list[tuple[str, ...]], numeric: t.AbstractSet[int]) -> list[str]:
    """Rows of cells in columns; the first row is the heading."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = []
    for index, line in enumerate(lines):
        cells = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
        if index == 0:
            text.append("  ".join("-" * width for width in widths))
    return text


def _spread(row: Compare) -> str | None:
    """The per-round range of each relay's figure, when there were several rounds."""
    if not row.spread:
        return None
    ranges = ", ".join(
        f"{name} {_number(low)}-{_number(high)}"
        for name in RELAYS
        if name in row.spread
        for low, high in [row.spread[name]]
    )
    return f"  {row.scenario} {row.metric}, per round: {ranges}"


def format_compare(results: list[ScenarioResult]) -> list[str]:
    """Issue 7's scenarios: one column per relay, the ratios, the targets."""
    rows = [row for result in results for row in result.compare]
    if not rows:
        return []
    numeric = set(range(3, 3 + len(RELAYS) + 3))
    text = _aligned([COMPARE_COLUMNS, *(_compare_cells(row) for row in rows)], numeric)
    notes = [f"  {row.scenario} {row.metric}: {row.note}" for row in rows if row.note]
    spreads = [line for line in map(_spread, rows) if line]
    skipped = {name: reason for result in results for name, reason in result.skipped_relays.items()}
    workloads = [f"  {r.details['workload']}" for r in results if "workload" in r.details]
    text += workloads + notes + spreads
    text += [f"  {name} left out: {reason}" for name, reason in skipped.items()]
    return [*text, ""]


def format_table(results: list[ScenarioResult], app_logs: dict[str, dict[str, t.Any]]) -> str:
    """Issue 7's comparison, then the rows of every other scenario as an aligned
    text table, then what did not run and what the apps logged as errors."""
    text = format_compare(results)
    rows = [_cells(row) for result in results for row in result.rows]
    if rows:
        text += _aligned([COLUMNS, *rows], {3, 4, 5, 7})
    for result in results:
        if result.skipped:
            text.append(f"{result.name}: skipped: {result.skipped}")
        if result.failed:
            text.append(f"{result.name}: FAILED: {result.failed}")
    for label, log in app_logs.items():
        if log["problems"]:
            text.append(f"{label} app logged {log['problems']} error line(s), first:")
            text += [f"    {line[:200]}" for line in log["first"]]
    return "\n".join(text)


def write_json(report: dict[str, t.Any], path: Path) -> None:
    """Write ``report`` as strict JSON: a figure that could not be measured (nan) is null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = json.loads(json.dumps(report, default=_jsonable))
    text = json.dumps(_no_nan(plain), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def _no_nan(value: t.Any) -> t.Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _no_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_no_nan(item) for item in value]
    return value


def _jsonable(value: t.Any) -> t.Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _md_row(cells: t.Iterable[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def format_markdown(results: list[ScenarioResult], command: str, machine: dict[str, t.Any]) -> str:
    """The tables as Markdown, with the command and the machine, for a README."""
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    commit = f"`{(machine['git_commit'] or '?')[:7]}`{' (dirty)' if machine['git_dirty'] else ''}"
    baselines = ", ".join(f"{name} {version}" for name, version in machine["baselines"].items())
    lines = [
        f"`{command}` on {machine['cores']} cores ({machine['cpu']}), {machine['memory']}, "
        f"Linux {machine['kernel']}, Python {machine['python']}; {packages}; {baselines}; "
        f"commit {commit}.",
        "",
    ]
    rows = [row for result in results for row in result.compare]
    if rows:
        lines += [_md_row(COMPARE_COLUMNS), _md_row("---" for _ in COMPARE_COLUMNS)]
        lines += [_md_row(_compare_cells(row)) for row in rows]
        lines += [""]
        lines += [f"- {r.details['workload']}" for r in results if "workload" in r.details]
        lines += [f"- {_spread(row).strip()}" for row in rows if _spread(row)]  # type: ignore[union-attr]
        lines += [""]
    other = [_cells(row) for result in results for row in result.rows]
    if other:
        lines += [_md_row(COLUMNS), _md_row("---" for _ in COLUMNS)]
        lines += [_md_row(cells) for cells in other]
    return "\n".join(lines) + "\n"
