"""The AI SDK door's cost: S3's load (an upstream as fast as it can) through
``POST /chat`` and through ``GET /stream`` of the same app, in alternating rounds.

The figure is the worker's CPU per stamped chunk, ``/chat`` over ``/stream``
(issue 17's target: at most 1.2): what encoding the UI message stream adds to the
relay's own work (reading the upstream, parsing each chunk once, the log).
"""

from __future__ import annotations

import math
import typing as t

from .harness import Bench
from .harness import Row
from .harness import ScenarioResult
from .harness import Served
from .jobs import Target
from .series import Contender
from .series import Pooled
from .series import run_rounds

__all__ = ["TARGET", "chat_vs_stream"]

#: issue 17: relay CPU per chunk through /chat at most this times /stream's
TARGET = 1.2


def _spread(each: list[Pooled], figure: t.Callable[[Pooled], float | None]) -> str:
    known = [v for v in (figure(one) for one in each) if v is not None and not math.isnan(v)]
    return f"{min(known):.3g}-{max(known):.3g}" if len(known) > 1 else "-"


def chat_vs_stream(bench: Bench, served: Served, result: ScenarioResult) -> None:
    wave = bench.profile.s3
    stream = Contender("stream", served.target, served.worker)
    chat = Contender("chat", Target("chat", served.app.port), served.worker)
    rounds = run_rounds(bench, [stream, chat], wave)
    pooled, each = rounds.pooled, rounds.each_round
    errors = sum(p.errors for p in pooled.values())

    def cpu(p: Pooled) -> float | None:
        return p.relay_cpu_per_chunk_us()

    ratio = None
    base, measured = cpu(pooled["stream"]), cpu(pooled["chat"])
    if base and measured is not None:
        ratio = measured / base
    verdict = "-" if ratio is None else ("met" if ratio <= TARGET else "NOT met")
    per_round = (
        f"per round: /stream {_spread(each['stream'], cpu)}, /chat {_spread(each['chat'], cpu)} us"
    )
    result.rows += [
        Row(
            "uichat",
            f"relay CPU per chunk, {wave.describe()}",
            "us",
            base,
            measured,
            "/stream / /chat",
            f"target /chat <= {TARGET}x /stream: {verdict}; {per_round}",
            errors,
        ),
        Row(
            "uichat",
            "chunk latency p50",
            "ms",
            pooled["stream"].latency_ms(0.5),
            pooled["chat"].latency_ms(0.5),
            "/stream / /chat",
            rounds.cores_note(),
            errors,
        ),
    ]
    result.details.update(workload=f"uichat: {wave.describe()}", relays=rounds.details())
