"""``bench/`` runs end to end: a tiny S4 against every relay this machine has.

Benchmarks are not unit tests: nothing here looks at how fast anything was, only
that the benchmark ran, measured something for every relay, and said why it left
any relay out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.compare import RELAYS
from bench.live import ROOT


def test_tiny_s4_runs_end_to_end(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", "s4", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "S4" in done.stdout
    report = json.loads(output.read_text())
    [scenario] = report["scenarios"]
    assert scenario["name"] == "s4"
    assert scenario["failed"] is None
    rows = {row["metric"]: row for row in scenario["compare"]}
    cpu = rows["relay CPU per session"]
    assert cpu["values"]["ngai_chat"] is not None
    assert cpu["values"]["direct"] is None  # no relay: nothing to measure
    first_chunk = rows["time to first chunk p50, added over direct"]
    assert first_chunk["values"]["direct"] == 0
    for name in RELAYS:
        ran = name in first_chunk["values"]
        assert ran != (name in scenario["skipped_relays"]), name
    relays = scenario["details"]["relays"]
    for name, summary in relays.items():
        assert summary["sessions"] == summary["completed"] > 0, (name, summary)
        # every content chunk of every session carried its send time through
        assert summary["chunks"] == summary["sessions"] * 5, (name, summary)


def test_tiny_uichat_runs_end_to_end(tmp_path: Path) -> None:
    """The /chat-against-/stream scenario: both doors deliver every stamped chunk."""
    output = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--only", "uichat", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [scenario] = json.loads(output.read_text())["scenarios"]
    assert scenario["name"] == "uichat" and scenario["failed"] is None
    cpu = scenario["rows"][0]
    assert cpu["metric"].startswith("relay CPU per chunk")
    assert cpu["baseline"] > 0 and cpu["measured"] > 0 and cpu["errors"] == 0
    relays = scenario["details"]["relays"]
    assert set(relays) == {"stream", "chat"}
    for name, summary in relays.items():
        assert summary["sessions"] == summary["completed"] > 0, (name, summary)
        assert summary["chunks"] == relays["stream"]["chunks"] > 0, (name, summary)
