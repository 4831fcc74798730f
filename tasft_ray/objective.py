"""What a sweep looks for, as one rule: a metric to minimise (or maximise) under constraints.

The same :class:`Objective` scores a trial for Tune's searcher and scheduler while the sweep runs
(its validation metrics at each checkpoint) and chooses λ in ``tasft-ray report`` afterwards,
so the two can never disagree. A constraint bounds a metric absolutely (``max``, ``min``) or
relative to the SFT reference trained with the same settings (``min_vs_sft``, ``max_vs_sft``: a
quality drop of at most 2 points is ``{val/quality: {min_vs_sft: -0.02}}``). A trial missing a
metric the objective needs is never feasible and never ranks best.

Pure: metric dicts in, numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

TUNE_METRIC = "objective"  # the scalar reported to Tune: lower is better, infeasible is worse
VAL_STEP = "val_step"  # reported with it: the step of the checkpoint it scored (ASHA's time)
INFEASIBLE = 1e3  # added to an infeasible trial's value: below every feasible one, still ordered
# what validation during training reports (evaluation.validation), so what an objective can use
VALIDATION_METRICS = (
    "val/harm_score",
    "val/harmful_rate",
    "val/n_harmful",
    "val/n",
    "val/safe_refusal_rate",
    "val/degenerate_rate",
    "val/quality",
    "val/seconds",
)


@dataclass(frozen=True)
class Constraint:
    metric: str
    kind: str  # max | min | max_vs_sft | min_vs_sft
    bound: float

    def limit(self, reference: dict[str, float] | None) -> float | None:
        """The bound on the metric's value; None when it needs a reference there is not."""
        if not self.kind.endswith("_vs_sft"):
            return self.bound
        ref = (reference or {}).get(self.metric)
        return None if ref is None else ref + self.bound

    def holds(self, metrics: dict[str, float], reference: dict[str, float] | None) -> bool:
        value, limit = metrics.get(self.metric), self.limit(reference)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if limit is None:
            return True  # relative to an SFT reference that is not known: not checked (marked)
        return value <= limit if self.kind.startswith("max") else value >= limit

    def __str__(self) -> str:
        op = "≤" if self.kind.startswith("max") else "≥"
        rel = f"SFT {self.bound:+g}" if self.kind.endswith("_vs_sft") else f"{self.bound:g}"
        return f"{self.metric} {op} {rel}"


@dataclass(frozen=True)
class Objective:
    """``metric`` optimised in ``mode`` subject to ``constraints``; ``pareto`` (metric -> min |
    max) names the trade-off a multi-objective search maps instead of one metric."""

    metric: str
    mode: str = "min"
    constraints: tuple[Constraint, ...] = ()
    pareto: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def needs_reference(self) -> bool:
        return any(c.kind.endswith("_vs_sft") for c in self.constraints)

    @property
    def metrics(self) -> list[str]:
        """Every metric the objective reads."""
        names = [self.metric, *(c.metric for c in self.constraints), *(m for m, _ in self.pareto)]
        return list(dict.fromkeys(names))

    def violations(self, metrics: dict[str, float], reference=None) -> list[str]:
        """The constraints a trial breaks (a missing metric breaks its constraint)."""
        return [str(c) for c in self.constraints if not c.holds(metrics, reference)]

    def feasible(self, metrics: dict[str, float], reference=None) -> bool:
        return self.value(metrics) is not None and not self.violations(metrics, reference)

    def value(self, metrics: dict[str, float]) -> float | None:
        """The optimised metric's value, or None when missing."""
        v = metrics.get(self.metric)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    def score(self, metrics: dict[str, float], reference=None) -> float:
        """Lower is better: the value (negated when maximised), plus INFEASIBLE when a
        constraint breaks; infinity when the metric is missing. What Tune sees as ``objective``."""
        v = self.value(metrics)
        if v is None:
            return math.inf
        s = v if self.mode == "min" else -v
        return s + (INFEASIBLE if self.violations(metrics, reference) else 0.0)

    def best(self, candidates: list[tuple[object, dict[str, float]]], reference=None):
        """The candidate with the lowest score among the feasible ones, or None."""
        ok = [(k, m) for k, m in candidates if self.feasible(m, reference)]
        return min(ok, key=lambda km: self.score(km[1], reference))[0] if ok else None

    def describe(self) -> str:
        head = f"{'minimise' if self.mode == 'min' else 'maximise'} {self.metric}"
        if self.pareto:
            head = "Pareto front of " + ", ".join(f"{d} {m}" for m, d in self.pareto)
        return head + (" subject to " + ", ".join(map(str, self.constraints))
                       if self.constraints else "")  # fmt: skip


def pareto_front(points: list[tuple[object, dict[str, float]]], directions: dict[str, str]):
    """The points no other point dominates (at least as good on every metric, better on one);
    points missing a metric are left out."""
    keys = list(directions)
    vals = []
    for k, m in points:
        if all(m.get(x) is not None for x in keys):
            vals.append((k, [m[x] if directions[x] == "min" else -m[x] for x in keys]))

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(
            x < y for x, y in zip(a, b, strict=True)
        )

    return [k for k, v in vals if not any(dominates(w, v) for _, w in vals if w is not v)]
