"""The sweep driver: checks, the data of every trial prepared once, the MLflow parent run, the
Tune run (and the SFT reference its objective may need), how each trial ended, and the report
when trials evaluate themselves.

One MLflow parent run per sweep, one child run per trial. The driver alone reads data: it
prepares every trial's training mixture and evaluation set once and ships them through Ray
(``prepared``); results go to ``sweep.storage``, a folder or an object store URI
(``tasft_ray.storage``). The pieces: ``paths`` (where files go), ``tuner`` (one Tune run),
``interrupt`` (Ctrl-C / SIGTERM), ``outcome`` (each trial's ending), ``reference``,
``summary`` (the printed table), ``trial`` (one trial).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import Config, ConfigError
from tasft_ray.evaluation.safety import check_judges
from tasft_ray.evaluation.stage import start_stage
from tasft_ray.files import LOCK_FILE, output_lock
from tasft_ray.report import ReportError, format_trials, write_report
from tasft_ray.storage import location
from tasft_ray.sweep import interrupt, parent_log
from tasft_ray.sweep.outcome import SweepOutcome, sweep_outcome
from tasft_ray.sweep.paths import SWEEP_CONFIG, check_results_last, resolve_paths
from tasft_ray.sweep.prepared import prepare
from tasft_ray.sweep.reference import reference_config, run_reference
from tasft_ray.sweep.register import champion, register
from tasft_ray.sweep.search_log import log_search
from tasft_ray.sweep.space import trial_configs
from tasft_ray.sweep.tuner import fit

log = logging.getLogger(__name__)


def run_sweep(cfg: Config, resume: str | None = None) -> SweepOutcome:
    """Run a new sweep, or finish the one at ``resume`` (a folder or a storage URI); with
    eval.in_sweep, also write its report (``tasft-ray report``) and log it to the parent run.

    Everything a trial could reject is checked first (every trial's config, the tracking store,
    the storage), then the data of every trial is prepared; nothing is written before that
    succeeds. A sweep stopped by a signal returns with its unfinished trials listed and its
    MLflow runs KILLED; one that crashes leaves them FAILED; either is finished with ``resume``,
    which also restarts a sweep killed before Tune had saved any state.
    """
    cfg = resolve_paths(cfg)
    configs = trial_configs(cfg)
    if cfg.eval.in_sweep or cfg.eval.validation.every:
        check_judges(cfg.eval, alpaca=cfg.eval.in_sweep)
    uri = tracking.tracking_uri(cfg)
    storage = location(cfg.sweep.storage, "sweep.storage", cfg.sweep.storage_attempts)
    check_results_last(storage, uri)
    tracking.check_reachable(uri)
    storage.check_writable("sweep.storage")
    sweep = (location(resume, "--resume", cfg.sweep.storage_attempts) if resume
             else storage.child(cfg.sweep.name))  # fmt: skip
    if not resume and sweep.exists(SWEEP_CONFIG):
        raise ConfigError(
            f"sweep folder {sweep.uri} exists; pass --resume {sweep.uri} to finish it, or set "
            "sweep.name to start a new sweep"
        )
    if sweep.local:
        lock = output_lock(Path(sweep.path) / LOCK_FILE, "sweep", sweep.uri)
    else:  # an object store has no exclusive create: one driver per sweep URI (README)
        lock = contextlib.nullcontext()
    objective = cfg.sweep.objective.build() if cfg.sweep.objective else None
    ref = reference_config(cfg) if objective and objective.needs_reference else None
    prepared = prepare(configs + ([ref] if ref else []))
    init_ray(cfg)
    prepared = prepared.ship()
    if cfg.eval.stage.mode == "shared" and (cfg.eval.in_sweep or cfg.eval.validation.every):
        prepared.stage = start_stage(cfg.eval.stage)
    with lock:
        parent = tracking.start_parent_run(uri, cfg, sweep)
        every = {(d.role, d.digest): d for ds in prepared.inputs.values() for d in ds}
        shown = sorted(every.values(), key=lambda d: d.role == "safe")  # the UI shows the first
        tracking.log_inputs(uri, parent, shown)  # the data of all its trials
        sweep.write_text(SWEEP_CONFIG, cfg.to_yaml())
        log.info("sweep %s: results in %s, MLflow parent run %s at %s", cfg.sweep.name,
                 sweep.uri, parent, uri)  # fmt: skip
        try:
            reference = run_reference(ref, sweep, uri, parent, prepared) if ref else None
            search = {"objective": objective, "reference": reference} if objective else None
            results = fit(cfg, sweep, uri, parent, prepared, bool(resume), search)
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            tracking.finish_children(uri, parent, status)
            tracking.finish_run(uri, parent, status)
            raise
        outcome = sweep_outcome(cfg, results, interrupt.stopped(), sweep, uri, parent)
        parent_log.log_counts(uri, parent, outcome.status)
        parent_log.plot_trial_curves(uri, parent)
        if outcome.unfinished or outcome.not_started:
            tracking.finish_children(uri, parent, "KILLED", set(outcome.unfinished_ids))
            tracking.finish_run(uri, parent, "KILLED")
            return outcome
        if objective is not None:
            outcome.best = log_search(uri, parent, objective, outcome.finals(),
                                      outcome.labels(cfg), reference)  # fmt: skip
            if outcome.best:
                best = outcome.trial_config(cfg, outcome.best)
                parent_log.log_best_setting(uri, parent, best.loss.lam, best.data.toxic_count)
            outcome.objective, outcome.reference = objective, reference
        if cfg.eval.in_sweep:
            evaluated = _report(outcome, uri)
            if evaluated and cfg.tracking.register_model:
                chosen = champion(evaluated, outcome.trial_ids.get(outcome.best or ""))
                outcome.registered = register(uri, cfg, chosen) if chosen else None
        errors = [r for r in results if r.error]
        # the scheduler's early stops: KILLED, whatever their run last said while Tune ended it
        tracking.finish_children(uri, parent, "KILLED", outcome.stopped_early_ids)
        tracking.finish_run(uri, parent, "FAILED" if errors else "FINISHED")
        return outcome


def _report(outcome: SweepOutcome, uri: str) -> list:
    """The sweep's report: in its folder, or for an object store written here and uploaded.
    Returns the evaluated trials it covers."""
    sweep = outcome.sweep
    local = Path(sweep.path if sweep.local else tempfile.mkdtemp(prefix="tasft_report_"))
    try:
        folder, evaluated = write_report(uri, local / "report", parent_run_id=outcome.parent_run_id)
    except ReportError as exc:  # every trial failed: the sweep's own error says why
        log.warning("no report: %s", exc)
        return []
    if not sweep.local:
        sweep.upload(folder, "report")
    outcome.report = sweep.child("report")
    outcome.report_text = format_trials(evaluated)
    return evaluated
