"""A gunicorn worker tunes the garbage collector once it has started
(``gunicorn_conf.post_worker_init``): what start-up made is frozen and
collections run far less often than Python's defaults (issue 15: full collections
of a worker holding 500 streams stopped every stream for ~140 ms every few
seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from ngai_chat.worker import GC_THRESHOLDS

ROOT = Path(__file__).resolve().parents[1]


def test_a_started_worker_freezes_what_start_up_made_and_collects_less_often() -> None:
    script = textwrap.dedent(
        """
        import gc, json, types
        from ngai_chat import gunicorn_conf
        before = {"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}
        worker = types.SimpleNamespace(
            cfg=types.SimpleNamespace(graceful_timeout=30), handle_exit=lambda *a: None
        )
        gunicorn_conf.post_worker_init(worker)
        after = {"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}
        print(json.dumps({"before": before, "after": after}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["before"]["thresholds"] == [700, 10, 10]
    assert result["before"]["frozen"] == 0
    assert result["after"]["thresholds"] == list(GC_THRESHOLDS)
    assert result["after"]["thresholds"][0] >= 10 * 700
    assert result["after"]["frozen"] > 10_000  # the app's modules and objects
