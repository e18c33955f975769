"""``make soak`` runs end to end, tiny: its checks hold on a short run of each shape.

Nothing here looks at how fast anything was; only that every reader was checked
(each chunk exactly once, one terminal event) and that the SIGKILL of the Redis
shape was survived as the soak says: readers of the surviving worker's generations
resume with ``Last-Event-ID``, readers of the dead one's end ``upstream_interrupted``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import ROOT

pytestmark = pytest.mark.live


def soak(tmp_path: Path, *args: str) -> dict:
    output = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args, "--sample", "1", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| readers ending `done` with every chunk exactly once |" in done.stdout
    return dict(json.loads(output.read_text()))


def test_memory_shape(tmp_path: Path) -> None:
    result = soak(
        tmp_path, "--shape", "memory", "--minutes", "0.1", "--users", "6", "--chunks", "20",
        "--gap", "0.02", "--second-readers", "0.5", "--loadgens", "1",
    )  # fmt: skip
    assert result["readers"] >= 6
    assert result["exact_done"] == result["readers"]
    assert result["outcomes_before_kill"] == {"done": result["readers"]}
    assert result["chunks_received"] == 20 * result["readers"]
    assert all(sample["workers"] for sample in result["samples"])


@pytest.mark.redis
def test_redis_shape_with_a_killed_worker(tmp_path: Path) -> None:
    result = soak(
        tmp_path, "--shape", "redis", "--minutes", "0.25", "--users", "10", "--chunks", "40",
        "--gap", "0.05", "--loadgens", "1",
    )  # fmt: skip
    after = result["outcomes_after_kill"]
    assert set(after) <= {"done", "error: upstream_interrupted"}
    assert after.get("error: upstream_interrupted", 0) > 0  # the dead worker's generations
    assert result["exact_done"] == sum(
        n for outcomes in (result["outcomes_before_kill"], after) for o, n in outcomes.items()
        if o == "done"
    )  # fmt: skip
    assert result["lost_chunks"] == result["repeated_chunks"] == 0
    assert result["samples"][-1]["redis_used_mib"] > 0
