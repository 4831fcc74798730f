"""The trial runs of a sweep (or an experiment) read back from MLflow, and their grouping into
settings: trials that differ only in ``train.seed`` are one setting."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from tasft_ray import tracking
from tasft_ray.config import ObjectiveConfig
from tasft_ray.data.benchmarks import kinds
from tasft_ray.errors import UserError
from tasft_ray.objective import TUNE_METRIC, Objective
from tasft_ray.setting import Setting

FINAL = "final/eval/"
CURVES = ("safety/harm_score", "safety/harmful_rate", "xstest/safe_refusal_rate")
# Params that do not make a trial a different setting: its key (model, method, toxic count, λ),
# its seed, and where it wrote things (sweep.*, tracking.* and output folders differ per sweep).
NOT_A_SETTING = {"model.name", "loss.method", "data.toxic_count", "loss.lam", "train.seed"}
NOT_A_SETTING_SUFFIX, NOT_A_SETTING_PREFIX = ".output_dir", ("sweep.", "tracking.")


class ReportError(UserError):
    """Nothing to report: no trial runs, or none with evaluation metrics."""


@dataclass
class Trial:
    """One evaluated trial: what it swept, its final evaluation, its per-checkpoint curves."""

    run_id: str
    name: str
    model: str
    method: str
    toxic: int
    lam: float
    final: dict[str, float]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seed: int = 0
    seeded: bool = False  # the report holds several seeds: name each trial's
    rest: tuple[tuple[str, str], ...] = ()  # every other param: differing ones are not seeds
    validation: dict[str, float] = field(default_factory=dict)  # last val/* and objective
    objective: str = "None"  # the sweep's objective, as logged (a dict's text)
    kinds: dict[str, str] = field(default_factory=dict)  # benchmark -> kind, users' sets too
    trial_id: str = ""  # the Tune trial's id
    steps: int = 0  # training steps it ran (its last result's)
    role: str = ""  # tracking.REFERENCE_ROLE: the SFT reference of its sweep's objective

    @property
    def setting(self) -> Setting:
        """What it trained, its seed named only when the report holds several."""
        return Setting(self.method, self.lam, self.toxic, self.seed if self.seeded else None)

    @property
    def lam_text(self) -> str:
        return self.setting.lam_text

    @property
    def label(self) -> str:
        return self.setting.label

    def get(self, key: str) -> float | None:
        return self.final.get(key)


@dataclass
class SeedGroup:
    """One (model, method, toxic count, λ) over the seeds it was trained with.

    A λ that is safe at one seed and collapses at the next is not a λ to recommend, so the rule
    compares settings, not trials: means over seeds, and the worst seed's degenerate share."""

    trials: list[Trial]

    @property
    def first(self) -> Trial:
        return self.trials[0]

    @property
    def seeds(self) -> str:
        return ", ".join(str(t.seed) for t in self.trials)

    @property
    def label(self) -> str:
        k = len(self.trials)
        what = Setting(self.first.method, self.first.lam, self.first.toxic).label
        return what + (f" ({k} seeds)" if k > 1 else "")

    def values(self, key: str) -> list[float] | None:
        """``key`` of every seed; None when any seed lacks it (a mean over some would mislead)."""
        vals = [t.get(key) for t in self.trials]
        return None if any(v is None for v in vals) else vals  # type: ignore[return-value]

    def mean(self, key: str) -> float | None:
        vals = self.values(key)
        return None if vals is None else sum(vals) / len(vals)

    def worst(self, key: str) -> float | None:
        vals = self.values(key)
        return None if vals is None else max(vals)


def seed_groups(trials: list[Trial]) -> list[SeedGroup]:
    """Trials grouped by everything they were trained with except the seed, in their order."""
    by: dict[tuple, SeedGroup] = {}
    for t in trials:
        key = (t.model, t.setting.without_seed(), t.rest)
        by.setdefault(key, SeedGroup([])).trials.append(t)
    return list(by.values())


def _is_setting(param: str) -> bool:
    return not (
        param in NOT_A_SETTING
        or param.endswith(NOT_A_SETTING_SUFFIX)
        or param.startswith(NOT_A_SETTING_PREFIX)
    )


def load_trials(uri: str, parent_run_id: str | None = None, experiment: str | None = None):
    """Trial runs (tagged by the sweep) of one parent run or one experiment, evaluated or not."""
    c = tracking.client(uri)
    if parent_run_id:
        try:
            exp_ids = [c.get_run(parent_run_id).info.experiment_id]
        except Exception as exc:  # mlflow raises MlflowException with a long message
            raise ReportError(f"--parent-run {parent_run_id}: no such MLflow run at {uri}") from exc
        filt = f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}'"
    else:
        exp = c.get_experiment_by_name(experiment or "")
        if exp is None:
            raise ReportError(f"--experiment {experiment}: no such MLflow experiment at {uri}")
        exp_ids, filt = [exp.experiment_id], ""
    runs = [
        r
        for r in c.search_runs(exp_ids, filter_string=filt, max_results=50000)
        if tracking.TRIAL_TAG in r.data.tags
    ]
    trials, skipped = [], []
    for r in runs:
        final = {k.removeprefix(FINAL): v for k, v in r.data.metrics.items() if k.startswith(FINAL)}
        if not final:
            skipped.append(r.info.run_name)
            continue
        p = r.data.params
        curves = {
            key: sorted(
                (m.step, m.value) for m in c.get_metric_history(r.info.run_id, f"eval/{key}")
            )
            for key in CURVES
        }
        trials.append(
            Trial(
                run_id=r.info.run_id,
                name=r.info.run_name,
                model=p.get("model.name", "?"),
                method=p.get("loss.method", "?"),
                toxic=int(p.get("data.toxic_count", 0)),
                lam=float(p.get("loss.lam", "nan")),
                final=final,
                curves={k: v for k, v in curves.items() if v},
                seed=int(p.get("train.seed", 0)),
                rest=tuple(sorted((k, v) for k, v in p.items() if _is_setting(k))),
                validation={
                    k.removeprefix("final/"): v
                    for k, v in r.data.metrics.items()
                    if k.startswith(("final/val/", f"final/{TUNE_METRIC}"))
                },
                objective=p.get("sweep.objective", "None"),
                kinds=_kinds(p.get("eval.benchmarks", "[]")),
                trial_id=r.data.tags.get(tracking.TRIAL_TAG, ""),
                steps=int(r.data.metrics.get("final/step", 0)),
                role=r.data.tags.get(tracking.ROLE_TAG, ""),
            )
        )

    where = f"parent run {parent_run_id}" if parent_run_id else f"experiment {experiment}"
    if not trials:
        raise ReportError(
            f"{where}: {len(runs)} trial run(s), none with final/eval/* metrics; run the sweep "
            "with eval.in_sweep=true"
        )
    order = {id(t): Setting(t.method, t.lam, t.toxic, t.seed).sort_key() for t in trials}
    trials.sort(key=lambda t: (t.model, order[id(t)], t.name))
    seeded = len({t.seed for t in trials}) > 1
    for t in trials:
        t.seeded = seeded
    return trials, skipped


def _kinds(logged: str) -> dict[str, str]:
    """The trial's benchmarks and their kinds, from its logged ``eval.benchmarks``."""
    try:
        return kinds(ast.literal_eval(logged))
    except (ValueError, SyntaxError):  # cut at MLflow's param length
        return {}


def declared_objective(trials: list[Trial]) -> Objective | None:
    """The objective the trials' sweep declared (its ``sweep.objective`` param), when they all
    share one; trials of sweeps without one, or of several, get the report's own rule."""
    logged = {t.objective for t in trials}
    if len(logged) != 1 or logged == {"None"}:
        return None
    return ObjectiveConfig.model_validate(ast.literal_eval(next(iter(logged)))).build()
