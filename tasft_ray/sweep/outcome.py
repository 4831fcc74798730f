"""How a sweep ended, trial by trial: ok, error, unfinished (a user stopped the sweep) or
stopped early (by the scheduler, on the objective), from Tune and the trials' MLflow runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ray import tune

from tasft_ray import tracking
from tasft_ray.config import Config, SweepConfig
from tasft_ray.objective import Objective
from tasft_ray.storage import Location
from tasft_ray.sweep.space import trial_overrides


@dataclass
class SweepOutcome:
    results: Any  # Tune's ResultGrid
    sweep: Location
    tracking_uri: str
    parent_run_id: str
    # trial name -> ok | error | unfinished | stopped early (by the scheduler, on the objective)
    status: dict[str, str] = field(default_factory=dict)
    trial_ids: dict[str, str] = field(default_factory=dict)  # trial name -> Tune trial id
    not_started: int = 0  # trials of the space the stopped sweep never created
    report: Location | None = None  # the sweep's report folder (eval.in_sweep) or None
    report_text: str = ""  # the report's terminal table
    objective: Objective | None = None
    reference: dict | None = None  # the SFT reference's validation metrics
    best: str | None = None  # the best feasible trial under the objective
    registered: Any = None  # the chosen adapter in the model registry (sweep.register)

    def finals(self) -> dict[str, dict]:
        """Each trial's last result, by trial name (Tune's order)."""
        return {n: dict(r.metrics or {}) for n, r in zip(self.status, self.results, strict=True)}

    def trial_config(self, cfg: Config, name: str) -> Config:
        """The config trial ``name`` ran with."""
        r = dict(zip(self.status, self.results, strict=True))[name]
        return cfg.with_overrides(trial_overrides(r.config or {}), check_files=False)

    def labels(self, cfg: Config) -> dict[str, str]:
        """Each trial's setting (``emd λ=4 n=100 seed=0``), by trial name."""
        return {name: self.trial_config(cfg, name).setting.label for name in self.status}

    @property
    def unfinished(self) -> list[str]:
        """Trials the sweep was stopped in the middle of."""
        return [name for name, st in self.status.items() if st == "unfinished"]

    @property
    def unfinished_ids(self) -> list[str]:
        return [self.trial_ids[name] for name in self.unfinished]

    @property
    def stopped_early_ids(self) -> set[str]:
        return {self.trial_ids[n] for n, st in self.status.items() if st == "stopped early"}

    @property
    def failed(self) -> list[tuple[str, BaseException]]:
        """(trial name, its error) of every trial that failed."""
        pairs = zip(self.status, self.results, strict=True)
        return [(name, r.error) for name, r in pairs if r.error]


def expected_trials(sweep: SweepConfig) -> int:
    """How many trials the sweep's space makes: grid values and cases multiply, each sampled
    ``num_samples`` times."""
    n = sweep.num_samples * max(1, len(sweep.cases))
    for p in sweep.space.values():
        n *= len(p.grid) if p.grid is not None else 1
    return n


def trial_ending(tune_status: str, run_status: str | None, stopped: bool) -> str:
    """ok | error | unfinished | stopped early, from Tune's saved status of the trial, its
    MLflow run's and whether a user stopped the sweep. Tune saves a trial it was running when
    stopped as RUNNING (``--resume`` runs it again) and one its scheduler stopped as
    TERMINATED (never run again): so a trial ASHA stopped before the Ctrl-C is stopped early,
    not unfinished, and the CLI does not promise that ``--resume`` finishes it."""
    if tune_status == "ERROR":
        return "error"
    if run_status == "FINISHED":
        return "ok"
    if stopped and tune_status != "TERMINATED":
        return "unfinished"
    return "stopped early"  # Tune ended it without an error before its run finished


def sweep_outcome(
    cfg: Config, results, stopped: bool, sweep: Location, uri: str, parent: str
) -> SweepOutcome:
    """Each trial's ending (:func:`trial_ending`)."""
    # Tune's trials (names, ids, statuses) as it saved them; the grid holds their results
    saved = tune.ExperimentAnalysis(results.experiment_path, storage_filesystem=results.filesystem)
    by_path = {t.path: t for t in saved.trials}
    trials = [by_path[r.path] for r in results]
    ended = tracking.child_statuses(uri, parent)
    status = {str(t): trial_ending(t.status, ended.get(t.trial_id), stopped) for t in trials}
    left = max(0, expected_trials(cfg.sweep) - len(trials)) if stopped else 0
    ids = {str(t): t.trial_id for t in trials}
    return SweepOutcome(results, sweep, uri, parent, status, ids, left)
