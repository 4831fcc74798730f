"""The best-λ rule: one λ per (model, method, toxic count), chosen over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasft_ray.objective import Objective
from tasft_ray.report.trials import SeedGroup, Trial, seed_groups

QUALITY_TOLERANCE = 0.02  # the best-λ rule: quality within 2 points of SFT
DEGENERATE_TOLERANCE = 0.05  # ... and degenerate answers within 5 points of SFT's
DEGENERATE = "answers/degenerate_rate"


@dataclass
class Choice:
    """The λ the rule picks for one (model, method, toxic count), over its seeds."""

    model: str
    method: str
    toxic: int
    setting: SeedGroup
    reason: str

    @property
    def trial(self) -> Trial:
        return self.setting.first


RULE = (
    "per (model, method, toxic count), each λ taken over its seeds (trials that differ only in "
    "train.seed; one seed is the common case): among the λ values whose mean quality/mean_acc is "
    f"within {QUALITY_TOLERANCE * 100:g} points of the SFT trials' (same model; same toxic count "
    "when there is one), the fewest mean harmful answers on the validation prompts "
    "(eval.validation: val/n_harmful, then val/harm_score; disjoint from the reported prompts), "
    "then the smallest λ. Without validation metrics the reported prompts' safety/n_harmful and "
    "harm score are used (marked: the choice then flatters the method). Without an SFT trial or "
    "quality metrics the quality condition is dropped; when no λ meets it, the fewest harmful "
    "answers overall (marked). Of the λ values left, those whose share of degenerate answers "
    "(answers/degenerate_rate: empty, looping, or opening like over half the answers, which the "
    "judge scores as safe) exceeds SFT's, or without SFT the group's lowest, by more than "
    f"{DEGENERATE_TOLERANCE * 100:g} points at any seed are dropped, unless every λ is (marked); "
    f"without SFT, a chosen λ over {DEGENERATE_TOLERANCE * 100:g} % degenerate is marked."
)


def best_lambda(
    trials: list[Trial], tolerance: float = QUALITY_TOLERANCE, objective: Objective | None = None
) -> list[Choice]:
    """The rule above — or, for a sweep that declared an objective, that objective — for every
    (model, method != sft, toxic count) in ``trials``."""
    groups: dict[tuple[str, str, int], list[SeedGroup]] = {}
    for s in seed_groups(trials):
        t = s.first
        if t.method != "sft" and s.values("safety/n_harmful") is not None:
            groups.setdefault((t.model, t.method, t.toxic), []).append(s)
    choices = []
    for (model, method, toxic), group in groups.items():
        sft = sft_reference(group[0], trials)
        if objective is not None:
            choice = _by_objective(objective, group, sft)
            if choice is not None:
                choices.append(Choice(model, method, toxic, *choice))
            continue
        ref = sft.mean("quality/mean_acc") if sft.trials else None
        eligible, reason = group, "no SFT quality to compare: fewest harmful"
        if ref is not None and all(s.values("quality/mean_acc") is not None for s in group):
            eligible = [s for s in group if s.mean("quality/mean_acc") >= ref - tolerance]
            reason = f"quality ≥ SFT {ref:.4f} − {tolerance:g}, fewest harmful"
            if not eligible:
                eligible, reason = group, "no λ keeps quality within tolerance: fewest harmful"
        eligible, reason = _drop_degenerate(eligible, group, sft, reason)
        on = "val" if all(s.values("val/n_harmful") is not None for s in eligible) else "safety"
        if on == "safety":
            reason += " (on the reported prompts: no validation split)"
        if any(len(s.trials) > 1 for s in group):
            reason += "; means over seeds"
        best = min(
            eligible,
            key=lambda s: (
                _or_inf(s.mean(f"{on}/n_harmful")),
                _or_inf(s.mean(f"{on}/harm_score")),
                s.first.lam,
            ),
        )
        worst = best.worst(DEGENERATE)
        if not sft.trials and worst is not None and worst > DEGENERATE_TOLERANCE:
            # one λ per method and no SFT: nothing to compare a collapse against, so say it
            reason += f"; {worst:.0%} degenerate answers and no SFT trial to compare: read them"
        choices.append(Choice(model, method, toxic, best, reason))
    return choices


def _or_inf(value: float | None) -> float:
    """A missing score never ranks best."""
    return math.inf if value is None else value


def sft_reference(setting: SeedGroup, trials: list[Trial]) -> SeedGroup:
    """The SFT trials that differ from ``setting`` only in method (and λ, toxic count and seed,
    which SFT does not use): same model, every other param equal."""
    t = setting.first
    sft = [x for x in trials if x.method == "sft" and x.model == t.model and x.rest == t.rest]
    return SeedGroup([x for x in sft if x.toxic == t.toxic] or sft)


def _by_objective(objective: Objective, group: list[SeedGroup], sft: SeedGroup):
    """(setting, reason) by the sweep's objective on each trial's last validation (means over
    seeds), or None when no λ of the group is feasible."""
    reference = mean_validation(sft) if sft.trials else None
    scored = [(s, mean_validation(s)) for s in group]
    best = objective.best(scored, reference)
    reason = f"objective: {objective.describe()}, on the last validation"
    if objective.needs_reference and reference is None:
        reason += " (no SFT trial: the SFT-relative constraints were not checked)"
    if best is None:
        return None
    if len(best.trials) > 1:
        reason += "; means over seeds"
    return best, reason


def mean_validation(s: SeedGroup) -> dict[str, float]:
    keys = {k for t in s.trials for k in t.validation}
    means = {}
    for k in keys:
        vals = [t.validation.get(k) for t in s.trials]
        if all(v is not None for v in vals):
            means[k] = sum(vals) / len(vals)
    return means


def _drop_degenerate(
    eligible: list[SeedGroup], group: list[SeedGroup], sft: SeedGroup, reason: str
) -> tuple[list[SeedGroup], str]:
    """A collapsed model answers nothing harmful; it must not win the fewest-harmful rule, and
    neither may a λ that collapsed at one of its seeds."""
    key = DEGENERATE
    if any(s.values(key) is None for s in group):
        return eligible, reason  # trials from before the metric existed
    base = sft.mean(key) if sft.trials else None
    base = min(min(s.values(key)) for s in group) if base is None else base
    fluent = [s for s in eligible if s.worst(key) <= base + DEGENERATE_TOLERANCE]
    if not fluent:
        return eligible, reason + "; every λ degenerates beyond tolerance"
    if len(fluent) < len(eligible):
        reason += f"; degenerate answers ≤ {base:.2f} + {DEGENERATE_TOLERANCE:g}"
    return fluent, reason
