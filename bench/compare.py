"""Rows that put ngai_chat next to every baseline of one run, with issue 7's goals.

A :class:`Compare` row holds one figure for each relay (``direct``, ``nginx``,
``node``, ``ngai_chat``), the ratios the targets use (ngai_chat / node and
ngai_chat / nginx), and the :class:`Goal` each target sets, checked.
"""

from __future__ import annotations

import dataclasses
import math
import typing as t

__all__ = ["RELAYS", "Compare", "Goal"]

#: the columns of a comparison, in order: the clients straight to the fake, the C
#: pass-through, the typical Node relay, and the relay under test
RELAYS = ("direct", "nginx", "node", "ngai_chat")
MEASURED = "ngai_chat"


def _known(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


@dataclasses.dataclass(frozen=True)
class Goal:
    """One target of issue 7 for ngai_chat's figure in a row.

    With ``against``: ``ngai_chat / values[against]`` compared with ``limit``
    (``"<="`` at most, ``"<"`` under); without: ngai_chat's figure itself
    (``">="`` at least, e.g. every session completed).
    """

    text: str
    limit: float
    against: str | None = None
    op: t.Literal["<=", "<", ">="] = "<="
    stretch: bool = False

    def figure(self, values: t.Mapping[str, float | None]) -> float | None:
        """What is compared with :attr:`limit`: a ratio, or ngai_chat's figure."""
        measured = values.get(MEASURED)
        if not _known(measured):
            return None
        assert measured is not None
        if self.against is None:
            return measured
        base = values.get(self.against)
        if not _known(base) or not base:
            return None
        assert base is not None
        return measured / base

    def met(self, values: t.Mapping[str, float | None]) -> bool | None:
        """Whether the goal is met; None when a figure it needs is missing."""
        figure = self.figure(values)
        if figure is None:
            return None
        if self.op == "<=":
            return figure <= self.limit
        if self.op == "<":
            return figure < self.limit
        return figure >= self.limit


@dataclasses.dataclass
class Compare:
    """One figure of one scenario for every relay of the run.

    :param spread: per relay, the lowest and highest figure over the rounds (the
        pooled figure is in :attr:`values`); how noisy the figure is.
    """

    scenario: str
    metric: str
    unit: str
    values: dict[str, float | None]
    goals: tuple[Goal, ...] = ()
    note: str = ""
    errors: int = 0
    spread: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)

    def ratio(self, against: str) -> float | None:
        """ngai_chat's figure over ``against``'s, when both are known."""
        measured, base = self.values.get(MEASURED), self.values.get(against)
        if not _known(measured) or not _known(base) or not base:
            return None
        assert measured is not None and base is not None
        return measured / base

    def verdicts(self) -> str:
        """Every goal with its figure and whether it is met, e.g.
        ``<= 0.8x node: no (1.3x)``."""
        parts = []
        for goal in self.goals:
            met = goal.met(self.values)
            figure = goal.figure(self.values)
            answer = "?" if met is None else ("met" if met else "NOT met")
            if figure is None:
                shown = ""
            elif goal.against:
                shown = f" ({figure:.3g}x)"
            else:
                shown = f" ({figure:,.4g})"
            parts.append(f"{'stretch ' if goal.stretch else ''}{goal.text}: {answer}{shown}")
        return "; ".join(parts)

    def as_json(self) -> dict[str, t.Any]:
        return {
            **dataclasses.asdict(self),
            "ratios": {f"{MEASURED}/{name}": self.ratio(name) for name in ("node", "nginx")},
            "goals": [
                {**dataclasses.asdict(goal), "figure": goal.figure(self.values),
                 "met": goal.met(self.values)}
                for goal in self.goals
            ],
        }  # fmt: skip
