"""What the benchmark reads about processes: ``/proc`` (Linux) and rlimits."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

__all__ = [
    "CpuMeter",
    "children",
    "cpu_seconds",
    "cpu_seconds_precise",
    "raise_fd_limit",
    "rss_kib",
    "worker_pid",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    listing = Path(f"/proc/{pid}/task/{pid}/children")
    if listing.exists():
        return [int(child) for child in listing.read_text().split()]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def worker_pid(master_pid: int, timeout: float = 10.0) -> int:
    """The pid of the one worker of a gunicorn master.

    :raises RuntimeError: the master has no single worker within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = children(master_pid)
        if len(found) == 1:
            return found[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn master {master_pid} has workers {found}, expected one")
        time.sleep(0.05)


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # after the command name: state is field 3, utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_seconds_precise(pid: int) -> float:
    """CPU time the live threads of ``pid`` have used so far, to the nanosecond.

    The sum of every thread's ``/proc/<pid>/task/<tid>/schedstat`` run time:
    ``/proc/<pid>/stat`` counts in clock ticks (10 ms), too coarse for the tenths
    of a second a short scenario costs nginx. A thread that ends is no longer
    counted, so a difference is only right for a process whose threads live
    through the window (nginx: one; gunicorn's gevent worker and node: pools
    that stay); :func:`cpu_seconds` when schedstat is not there.
    """
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return cpu_seconds(pid)
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total / 1e9 if total else cpu_seconds(pid)


class CpuMeter:
    """CPU used by a process (``pid``, :func:`cpu_seconds_precise`) or by this
    process, and wall time, since :meth:`start`; :meth:`stop` gives the CPU share
    of one core."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid
        self._cpu = 0.0
        self._wall = 0.0

    def _now(self) -> tuple[float, float]:
        cpu = time.process_time() if self.pid is None else cpu_seconds_precise(self.pid)
        return cpu, time.monotonic()

    def start(self) -> CpuMeter:
        self._cpu, self._wall = self._now()
        return self

    def stop(self) -> tuple[float, float]:
        """``(cpu seconds, share of one core)`` since :meth:`start`."""
        cpu, wall = self._now()
        used = cpu - self._cpu
        return used, used / max(wall - self._wall, 1e-9)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft file-descriptor limit towards ``wanted`` (up to
    the hard limit); children inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
