"""Per method, the best feasible setting the report's trials hold, and what finding it cost.

Kim et al. (COLM 2025) moved SFT's unsafe answers from about 16 % to about 5 % with the learning
rate, batch and steps alone, so a penalty's best λ is read against SFT's best optimiser setting,
searched under the same objective (configs/sft-optimization.yaml), not against one default SFT
trial. Every setting the report holds competes within its method — λ, toxic count and the
optimiser's own settings alike — and the row says how many settings and training steps the
method was given, so a method that won by being searched harder shows it.

Best: with a declared objective, the objective on each setting's last validation (means over
seeds), its SFT-relative constraints against the sweep's reference trials where the report holds
them, else against the SFT trial that differs only in method. Without one, the fewest harmful
answers on the validation prompts (else on the reported prompts: marked), then harm score, then
the smaller λ; quality is shown beside it, not constrained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasft_ray.objective import Objective
from tasft_ray.report.against_sft import count_text
from tasft_ray.report.rule import mean_validation, sft_reference
from tasft_ray.report.trials import SeedGroup, Trial, seed_groups
from tasft_ray.setting import method_rank
from tasft_ray.stats import wilson
from tasft_ray.tracking import REFERENCE_ROLE


@dataclass(frozen=True)
class MethodBest:
    model: str
    method: str
    best: SeedGroup | None  # None: no setting of the method is feasible
    settings: list[SeedGroup]  # every setting the method was tried with
    how: str

    @property
    def steps(self) -> int:
        """Training steps spent on the method: every trial of every setting."""
        return sum(t.steps for s in self.settings for t in s.trials)


def fewest_harmful_key(s: SeedGroup) -> tuple[float, float, float]:
    """Rank without an objective: harmful answers on the validation prompts when the setting
    has them (else the reported ones), then harm score, then the smaller λ."""
    on = "val" if s.mean("val/n_harmful") is not None else "safety"
    score, harm = s.mean(f"{on}/n_harmful"), s.mean(f"{on}/harm_score")
    return (math.inf if score is None else score, math.inf if harm is None else harm,
            s.first.lam)  # fmt: skip


def best_per_method(trials: list[Trial], objective: Objective | None) -> list[MethodBest]:
    """One row per (model, method), in the report's method order."""
    groups: dict[tuple[str, str], list[SeedGroup]] = {}
    for s in seed_groups(trials):
        groups.setdefault((s.first.model, s.first.method), []).append(s)
    rows = []
    for (model, method), settings in groups.items():
        if objective is not None:
            best, how = _by_objective(objective, settings, trials), "objective"
        else:
            best = min(settings, key=fewest_harmful_key)
            how = "fewest harmful (validation)" if best.mean("val/n_harmful") is not None \
                else "fewest harmful (reported prompts: no validation split)"  # fmt: skip
        rows.append(MethodBest(model, method, best, settings, how))
    return sorted(rows, key=lambda r: (r.model, method_rank(r.method)))


def _by_objective(objective: Objective, settings: list[SeedGroup], trials: list[Trial]):
    refs = [t for t in trials if t.role == REFERENCE_ROLE and t.model == settings[0].first.model]
    scored = []
    for s in settings:
        ref = SeedGroup(refs) if refs else sft_reference(s, trials)
        reference = mean_validation(ref) if ref.trials else None
        metrics = mean_validation(s)
        if objective.feasible(metrics, reference):
            scored.append((objective.score(metrics, reference), s))
    return min(scored, key=lambda x: x[0])[1] if scored else None


def varied(row: MethodBest) -> str:
    """The best setting's values of the params its method's settings differ in."""
    if row.best is None:
        return ""
    keys = {k for s in row.settings for k, _ in s.first.rest}
    values = {k: {dict(s.first.rest).get(k) for s in row.settings} for k in keys}
    mine = dict(row.best.first.rest)
    return ", ".join(f"{k}={mine.get(k, '–')}" for k in sorted(keys) if len(values[k]) > 1)


def pooled(s: SeedGroup, count: str, total: str) -> str:
    """``count`` out of ``total`` summed over the seeds, with its 95 % Wilson interval."""
    ks, ns = s.values(count), s.values(total)
    if ks is None or ns is None or not sum(ns):
        return "–"
    return count_text(wilson(round(sum(ks)), round(sum(ns))))


def table(rows: list[MethodBest]) -> tuple[list[str], list[list[str]]]:
    """The report's table: setting, harm with its interval, XSTest-safe refusal, quality, cost."""
    header = ["model", "method", "best feasible setting", "seeds",
              "harmful answers (95 % Wilson, seeds pooled)", "xstest safe refused", "quality",
              "settings tried", "trial-steps spent", "chosen by"]  # fmt: skip
    out = []
    for r in rows:
        s = r.best
        if s is None:
            cells = ["none feasible", "–", "–", "–", "–"]
        else:
            q = s.mean("quality/mean_acc")
            label = s.first.setting.without_seed().label
            extra = varied(r)
            cells = [label + (f" ({extra})" if extra else ""), s.seeds,
                     pooled(s, "safety/n_harmful", "safety/n"), _refused(s),
                     "–" if q is None else f"{q:.3f}"]  # fmt: skip
        out.append([r.model, r.method, *cells, str(len(r.settings)), str(r.steps), r.how])
    return header, out


def _refused(s: SeedGroup) -> str:
    rates, ns = s.values("xstest/safe_refusal_rate"), s.values("xstest_safe/n")
    if rates is None or ns is None:
        return "–"
    return f"{round(sum(r * n for r, n in zip(rates, ns, strict=True)))}/{round(sum(ns))}"
