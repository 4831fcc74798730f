"""The smallest toxic count that does the job: bisection over ``sweep.toxic_search.counts``.

Each count visited is a sweep of its own over the configured λ space (named
``<sweep>-n<count>``, with its own folder and MLflow parent run), so λ is searched afresh for
every count. A count *reaches* the target when its best trial under the objective (feasible: all
constraints hold) has the objective's metric at or below ``toxic_search.target``. Counts are
assumed monotone — more harmful pairs never hurt — which is what makes bisection valid; the
per-count lines show where that assumption held. A rerun resumes every count already visited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tasft_ray.config import Config
from tasft_ray.storage import location
from tasft_ray.sweep.driver import run_sweep
from tasft_ray.sweep.outcome import SweepOutcome
from tasft_ray.sweep.paths import SWEEP_CONFIG

log = logging.getLogger(__name__)


@dataclass
class CountResult:
    count: int
    outcome: SweepOutcome
    best_label: str | None
    value: float | None
    target: float

    @property
    def reaches(self) -> bool:
        return self.value is not None and self.value <= self.target


def run_toxic_search(cfg: Config) -> tuple[int | None, list[CountResult]]:
    """(the smallest count reaching the target or None, each visited count's result)."""
    spec, objective = cfg.sweep.toxic_search, cfg.sweep.objective.build()
    counts = sorted(set(spec.counts))
    storage = location(cfg.sweep.storage, "sweep.storage")
    lo, hi, answer, visited = 0, len(counts) - 1, None, []
    while lo <= hi:
        mid = (lo + hi) // 2
        n = counts[mid]
        name = f"{cfg.sweep.name}-n{n}"
        sub = cfg.with_overrides(
            {"data.toxic_count": n, "sweep.name": name, "sweep.toxic_search": None}
        )
        folder = storage.child(name)
        resume = folder.uri if folder.exists(SWEEP_CONFIG) else None
        outcome = run_sweep(sub, resume=resume)
        if outcome.unfinished or outcome.not_started:
            visited.append(CountResult(n, outcome, None, None, spec.target))
            return None, visited  # stopped: the caller reports it, --resume continues
        labels = outcome.labels(sub)
        best = outcome.best
        value = objective.value(outcome.finals()[best]) if best else None
        result = CountResult(n, outcome, labels.get(best) if best else None, value, spec.target)
        visited.append(result)
        log.info("toxic count %d: best %s, %s = %s", n, result.best_label, objective.metric, value)
        if result.reaches:
            answer, hi = n, mid - 1
        else:
            lo = mid + 1
    return answer, sorted(visited, key=lambda r: r.count)


def describe(cfg: Config, answer: int | None, visited: list[CountResult]) -> str:
    """One line per count visited, then the answer."""
    metric, target = cfg.sweep.objective.build().metric, cfg.sweep.toxic_search.target
    lines = []
    for r in visited:
        value = f"{r.value:.4f}" if r.value is not None else "–"
        verdict = "reaches" if r.reaches else "misses"
        best = r.best_label or "no feasible trial"
        lines.append(f"n={r.count}: best {best}, {metric} {value} {verdict} ≤ {target:g}")
    found = (
        f"smallest toxic count reaching it: {answer}"
        if answer is not None
        else ("no count reaches it")
    )
    return "\n".join([*lines, found])
