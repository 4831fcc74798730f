"""The table a sweep prints when it ends: the swept values, the objective's numbers when there
is one, each loss term averaged over the run, and how each trial ended."""

from __future__ import annotations

from typing import Any

from tasft_ray.config import Config
from tasft_ray.objective import TUNE_METRIC
from tasft_ray.report import plain_table
from tasft_ray.sweep.outcome import SweepOutcome
from tasft_ray.sweep.space import trial_overrides


def summary(outcome: SweepOutcome, cfg: Config) -> str:
    keys = list(cfg.sweep.space) + sorted({k for c in cfg.sweep.cases for k in c})
    shown = [*outcome.objective.metrics, TUNE_METRIC] if outcome.objective else []
    losses = ["loss/total", "loss/sft", "loss/penalty"]
    cols = [*keys, "step", *shown, *(f"avg {x}" for x in losses), "status"]
    rows = []
    for r, status in zip(outcome.results, outcome.status.values(), strict=True):
        params = trial_overrides(r.config or {})
        m = r.metrics or {}
        avg = [m.get(f"avg/{x}", m.get(x)) for x in losses]  # older runs logged no averages
        rows.append(
            [_shown(params.get(k, "")) for k in keys]
            + [str(m.get("step", ""))]
            + [f"{m[k]:.4f}" if k in m else "" for k in shown]
            + [f"{v:.4f}" if v is not None else "" for v in avg]
            + [status]
        )
    text = plain_table(cols, rows)
    if outcome.objective is not None:
        labels = outcome.labels(cfg)
        best = labels.get(outcome.best, outcome.best) if outcome.best else "none feasible"
        text += f"\nobjective: {outcome.objective.describe()}; best: {best}"
    return text


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
