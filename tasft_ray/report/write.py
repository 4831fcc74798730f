"""`tasft-ray report`: a sweep's MLflow runs -> the paper's tables and figures, in one folder.

Reads the trial runs of one sweep (``--parent-run``) or of every sweep in an experiment
(``--experiment``), each with the ``final/eval/*`` metrics and ``eval/*`` step history that
in-sweep evaluation logs, and writes report.md (Table 2: harmful answers per benchmark; XSTest
over-refusal; Table 1: quality; the chosen λ), fig2_harm_vs_step.png, fig3_refusal_vs_safety.png
and report.json. The folder is built aside and renamed into place, then logged to the parent run.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.files import atomic_dir
from tasft_ray.report.best_per_method import best_per_method
from tasft_ray.report.figures import FIG2, FIG3, plot_harm_vs_step, plot_refusal_vs_safety
from tasft_ray.report.markdown import to_markdown
from tasft_ray.report.rule import RULE, Choice, best_lambda
from tasft_ray.report.trials import ReportError, Trial, declared_objective, load_trials

REPORT_MD, REPORT_JSON = "report.md", "report.json"
TRIAL_ONLY = ("seeded", "rest", "objective")  # not in report.json: presentation, config params
HEADLINE = ("safety/n_harmful", "safety/harm_score", "xstest/safe_refusal_rate",
            "quality/mean_acc")  # fmt: skip


def write_report(
    uri: str,
    out_dir: str | Path,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    log: bool = True,
) -> tuple[Path, list[Trial]]:
    """Build the report folder atomically; log it to the parent run (``--experiment``: to a
    run named ``report`` in that experiment). Returns the folder and the trials it covers."""
    if bool(parent_run_id) == bool(experiment):
        raise ReportError("give exactly one of --parent-run ID or --experiment NAME")
    trials, skipped = load_trials(uri, parent_run_id, experiment)
    objective = declared_objective(trials)
    choices = best_lambda(trials, objective=objective)
    best = best_per_method(trials, objective)
    rule = RULE
    if objective is not None:
        rule = (
            f"the sweep's objective: {objective.describe()}, on each trial's last validation "
            "(means over seeds); the SFT reference is the SFT trial that differs only in method"
        )
    where = f"sweep run {parent_run_id}" if parent_run_id else f"experiment {experiment}"
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        (tmp / REPORT_MD).write_text(to_markdown(trials, choices, where, skipped, rule, best))
        plot_harm_vs_step(trials, tmp / FIG2)
        plot_refusal_vs_safety(trials, tmp / FIG3)
        data = {
            "where": where,
            "rule": rule,
            "trials": [
                {k: v for k, v in t.__dict__.items() if k not in TRIAL_ONLY} for t in trials
            ],
            "chosen": [
                {
                    "model": c.model,
                    "method": c.method,
                    "toxic": c.toxic,
                    "lam": c.trial.lam,
                    "seeds": [t.seed for t in c.setting.trials],
                    "run_ids": [t.run_id for t in c.setting.trials],
                    "reason": c.reason,
                }
                for c in choices
            ],
            "best_per_method": [
                {
                    "model": b.model,
                    "method": b.method,
                    "label": b.best.label if b.best else None,
                    "run_ids": [t.run_id for t in b.best.trials] if b.best else [],
                    "settings": len(b.settings),
                    "trial_steps": b.steps,
                    "chosen_by": b.how,
                }
                for b in best
            ],
        }
        (tmp / REPORT_JSON).write_text(json.dumps(data, indent=1) + "\n")
    if log:
        _log(uri, out, parent_run_id, experiment)
        if parent_run_id:
            log_choices(uri, parent_run_id, choices)
    return out, trials


def log_choices(uri: str, run_id: str, choices: list[Choice]) -> None:
    """The chosen λ per (model, method, toxic count) and its headline numbers (means over
    seeds) as metrics of the sweep's run, ``chosen/<method>/n<toxic>/...`` (with the model's
    name when there are several), so the MLflow runs table shows the sweep's answer."""
    c = tracking.client(uri)
    several = len({ch.model for ch in choices}) > 1
    for ch in choices:
        prefix = f"chosen/{ch.model + '/' if several else ''}{ch.method}/n{ch.toxic}"
        c.log_metric(run_id, f"{prefix}/lam", ch.trial.lam)
        for key in HEADLINE:
            value = ch.setting.mean(key)
            if value is not None:
                c.log_metric(run_id, f"{prefix}/{key}", value)


def _log(uri: str, out: Path, parent_run_id: str | None, experiment: str | None) -> None:
    c = tracking.client(uri)
    run_id = parent_run_id
    if run_id is None:
        exp = c.get_experiment_by_name(experiment)
        run_id = c.create_run(
            exp.experiment_id, run_name="report", tags={tracking.RUN_KIND_TAG: "report"}
        ).info.run_id
    c.log_artifacts(run_id, str(out), "report")
    if parent_run_id is None:
        tracking.finish_run(uri, run_id)
