"""The sweep driver: a Ray Tune run of TA-SFT trainings, its MLflow parent run, resume, and
the report when trials evaluate themselves.

Each trial is a function that builds and fits a TorchTrainer (Ray 2.60's Train V2 cannot be
wrapped by a Tuner directly), reporting to Tune through TuneReportCallback. One MLflow parent run
per sweep, one child run per trial. The driver alone reads data: it prepares every trial's
training mixture and evaluation set once and ships them through Ray (``prepared``); results go
to ``sweep.storage``, a folder or an object store URI (``tasft_ray.storage``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import (
    Config,
    ConfigError,
    SweepConfig,
    cache_root,
    parse_config,
    setting_label,
)
from tasft_ray.evaluation.safety import check_judges
from tasft_ray.files import LOCK_FILE, output_lock
from tasft_ray.objective import TUNE_METRIC, Objective
from tasft_ray.report import ReportError, format_trials, plain_table, write_report
from tasft_ray.storage import Location, location
from tasft_ray.sweep import parent_log
from tasft_ray.sweep.prepared import prepare
from tasft_ray.sweep.search_log import log_search
from tasft_ray.sweep.space import (
    param_space,
    scheduler,
    search_alg,
    trial_configs,
    trial_overrides,
    tune_metric,
)
from tasft_ray.sweep.trial import run_trial

log = logging.getLogger(__name__)

SWEEP_CONFIG = "sweep_config.yaml"


def _resolve_paths(cfg: Config) -> Config:
    """Absolute local paths (storage, cache, data), so every process of this machine means the
    same folders whatever its cwd; a storage URI is kept as it is."""
    overrides: dict[str, Any] = {
        "sweep.storage": location(cfg.sweep.storage, "sweep.storage").uri,
        "model.cache_dir": str(cache_root(cfg.model.cache_dir).resolve()),
    }
    if cfg.data_root:
        overrides["data.root"] = str(Path(cfg.data_root).expanduser().resolve())
    for key in ("safe", "harmful", "refusals", "contrastive"):  # local files, e.g. generated
        src = getattr(cfg.data, key)
        if src is not None and src.path:
            overrides[f"data.{key}.path"] = str(Path(src.path).expanduser().resolve())
    return cfg.with_overrides(overrides)


RAY_JOB_COPY = "/runtime_resources/working_dir_files/"  # Ray's copy of a job's working dir


def check_results_last(storage: Location, tracking_uri: str) -> None:
    """One line when results would land in Ray's temporary copy of a job's working directory
    (``ray job submit --working-dir .``), which is deleted with the cluster session."""
    cwd = os.getcwd()
    if RAY_JOB_COPY not in cwd + "/":
        return
    inside = [
        what
        for what, path in (
            ("sweep.storage", storage.path if storage.local else None),
            ("the MLflow store", tracking_uri.removeprefix("sqlite:///"))
            if tracking_uri.startswith("sqlite:///")
            else ("the MLflow store", None),
        )
        if path and os.path.abspath(path).startswith(cwd)
    ]
    if inside:
        raise ConfigError(
            f"{' and '.join(inside)} would be written into Ray's temporary copy of the working "
            f"directory ({cwd}), deleted with the cluster session: set sweep.storage to a shared "
            "folder or s3://BUCKET/PREFIX and MLFLOW_TRACKING_URI (or tracking.uri) to an "
            "`mlflow server` at http://HOST:PORT"
        )


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

    def finals(self) -> dict[str, dict]:
        """Each trial's last result, by trial name (Tune's order)."""
        return {n: dict(r.metrics or {}) for n, r in zip(self.status, self.results, strict=True)}

    def trial_config(self, cfg: Config, name: str) -> Config:
        """The config trial ``name`` ran with."""
        r = dict(zip(self.status, self.results, strict=True))[name]
        return cfg.with_overrides(trial_overrides(r.config or {}), check_files=False)

    def labels(self, cfg: Config) -> dict[str, str]:
        """Each trial's setting (``emd λ=4 n=100 seed=0``), by trial name."""
        out = {}
        for name in self.status:
            t = self.trial_config(cfg, name)
            out[name] = setting_label(t.loss.method, t.loss.lam, t.data.toxic_count, t.train.seed)
        return out

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


_STOPPED = threading.Event()  # set when Ctrl-C (or SIGTERM) reached a running sweep


class _StopWatch(tune.Callback):
    """Notes a Ctrl-C. Tune answers SIGINT by stopping its trials and returning normally, with
    nothing in its results to say so; this wraps Tune's own SIGINT handler (a callback's setup
    runs after Tune installs it) and records the stop first. Module-level: Tune pickles it."""

    def setup(self, **info) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        tune_handler = signal.getsignal(signal.SIGINT)

        def handler(sig, frame) -> None:
            _STOPPED.set()
            if callable(tune_handler):
                tune_handler(sig, frame)

        signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def _sigterm_stops_tune() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's stop) ends the sweep the way Ctrl-C does: Tune catches
    SIGINT, stops its trials and returns, so the driver can record what was left unfinished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def expected_trials(sweep: SweepConfig) -> int:
    """How many trials the sweep's space makes: grid values and cases multiply, each sampled
    ``num_samples`` times."""
    n = sweep.num_samples * max(1, len(sweep.cases))
    for p in sweep.space.values():
        n *= len(p.grid) if p.grid is not None else 1
    return n


def run_sweep(cfg: Config, resume: str | None = None) -> SweepOutcome:
    """Run a new sweep, or finish the one at ``resume`` (a folder or a storage URI); with
    eval.in_sweep, also write its report (``tasft-ray report``) and log it to the parent run.

    Everything a trial could reject is checked first (every trial's config, the tracking store,
    the storage), then the data of every trial is prepared; nothing is written before that
    succeeds. A sweep stopped by a signal returns with its unfinished trials listed and its
    MLflow runs KILLED; one that crashes leaves them FAILED; either is finished with ``resume``,
    which also restarts a sweep killed before Tune had saved any state.
    """
    cfg = _resolve_paths(cfg)
    configs = trial_configs(cfg)
    if cfg.eval.in_sweep or cfg.eval.every:
        check_judges(cfg.eval)
    uri = tracking.tracking_uri(cfg)
    storage = location(cfg.sweep.storage, "sweep.storage")
    check_results_last(storage, uri)
    tracking.check_reachable(uri)
    storage.check_writable("sweep.storage")
    sweep = location(resume, "--resume") if resume else storage.child(cfg.sweep.name)
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
    ref = _reference_config(cfg) if objective and objective.needs_reference else None
    init_ray(cfg)
    prepared = prepare(configs + ([ref] if ref else []))
    with lock:
        parent = tracking.start_parent_run(uri, cfg, sweep)
        every = {(d.role, d.digest): d for ds in prepared.inputs.values() for d in ds}
        shown = sorted(every.values(), key=lambda d: d.role == "safe")  # the UI shows the first
        tracking.log_inputs(uri, parent, shown)  # the data of all its trials
        sweep.write_text(SWEEP_CONFIG, cfg.to_yaml())
        log.info("sweep %s: results in %s, MLflow parent run %s at %s", cfg.sweep.name,
                 sweep.uri, parent, uri)  # fmt: skip
        try:
            reference = _reference(ref, sweep, uri, parent, prepared) if ref else None
            search = {"objective": objective, "reference": reference} if objective else None
            results = _fit(cfg, sweep, uri, parent, prepared, bool(resume), search)
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            tracking.finish_children(uri, parent, status)
            tracking.finish_run(uri, parent, status)
            raise
        outcome = _outcome(cfg, results, sweep, uri, parent)
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
            _report(outcome, uri)
        errors = [r for r in results if r.error]
        # the scheduler's early stops: KILLED, whatever their run last said while Tune ended it
        tracking.finish_children(uri, parent, "KILLED", outcome.stopped_early_ids)
        tracking.finish_run(uri, parent, "FAILED" if errors else "FINISHED")
        return outcome


def _report(outcome: SweepOutcome, uri: str) -> None:
    """The sweep's report: in its folder, or for an object store written here and uploaded."""
    sweep = outcome.sweep
    local = Path(sweep.path if sweep.local else tempfile.mkdtemp(prefix="tasft_report_"))
    try:
        folder, evaluated = write_report(uri, local / "report", parent_run_id=outcome.parent_run_id)
    except ReportError as exc:  # every trial failed: the sweep's own error says why
        log.warning("no report: %s", exc)
        return
    if not sweep.local:
        sweep.upload(folder, "report")
    outcome.report = sweep.child("report")
    outcome.report_text = format_trials(evaluated)


def _outcome(cfg: Config, results, sweep: Location, uri: str, parent: str) -> SweepOutcome:
    """How each trial ended, from Tune and the trials' child runs: a run that did not finish
    was cut short by a stopped sweep, or else stopped early by the scheduler."""
    # the ResultGrid lists results in its trials' order; only the trials know their status
    trials = results._experiment_analysis.trials
    stopped = _STOPPED.is_set()
    ended = tracking.child_statuses(uri, parent)
    status = {}
    for t in trials:
        if t.status == "ERROR":
            status[str(t)] = "error"
        elif ended.get(t.trial_id) == "FINISHED":
            status[str(t)] = "ok"
        elif stopped:
            status[str(t)] = "unfinished"
        else:  # Tune ended it without an error before its run finished: the scheduler did
            status[str(t)] = "stopped early"
    left = max(0, expected_trials(cfg.sweep) - len(trials)) if stopped else 0
    ids = {str(t): t.trial_id for t in trials}
    return SweepOutcome(results, sweep, uri, parent, status, ids, left)


def _fit(
    cfg: Config,
    where: Location,
    uri: str,
    parent: str,
    prepared,
    restore: bool,
    search: dict | None = None,
):
    """Tune's run of ``cfg``'s space in folder ``where`` (restored when it can be)."""
    trainable = tune.with_parameters(
        run_trial,
        base=cfg.model_dump(mode="json"),
        sweep=where,
        mlflow={"uri": uri, "parent_run_id": parent},
        prepared=prepared,
        search=search,
    )
    _STOPPED.clear()
    fs = {} if where.local else {"storage_filesystem": where.fs}
    if restore and tune.Tuner.can_restore(where.path, **fs):
        tuner = tune.Tuner.restore(
            where.path, trainable=trainable, resume_unfinished=True, resume_errored=True, **fs
        )
    else:  # new, or killed before Tune saved any state: (re)start it in its folder
        if restore:
            log.info("%s has no Tune state yet: starting the sweep over in it", where.uri)
        metric, mode = tune_metric(cfg.sweep)
        one = not isinstance(metric, list)  # a Pareto search gives its metrics to its searcher
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg.sweep),
            tune_config=tune.TuneConfig(
                metric=metric if one else None,
                mode=mode if one else None,
                num_samples=cfg.sweep.num_samples,
                search_alg=search_alg(cfg.sweep, cfg.train.seed),  # holds the concurrency
                scheduler=scheduler(cfg.sweep, cfg.train.max_steps),
            ),
            run_config=tune.RunConfig(
                name=where.name, callbacks=[_StopWatch()], **where.parent().ray_storage()
            ),
        )
    with _sigterm_stops_tune():
        return tuner.fit()


def _reference_config(cfg: Config) -> Config:
    """The SFT trial the objective's *_vs_sft constraints compare with: the sweep's base
    settings with method sft, one trial."""
    return cfg.with_overrides(
        {"loss.method": "sft", "sweep.space": {}, "sweep.cases": [], "sweep.search": "grid",
         "sweep.scheduler": "none", "sweep.num_samples": 1, "sweep.objective": None,
         "sweep.toxic_search": None, "sweep.metric": "step", "sweep.mode": "max"},
    )  # fmt: skip


def _reference(ref: Config, sweep: Location, uri: str, parent: str, prepared) -> dict[str, float]:
    """Run (or, resumed, reuse) the SFT reference; its last validation's metrics."""
    where = sweep.child(REFERENCE)
    results = _fit(ref, where, uri, parent, prepared, restore=True, search={"role": REFERENCE})
    if _STOPPED.is_set() or not len(results) or results[0].error:
        raise ConfigError(
            f"the SFT reference of the objective did not finish ({where.uri}); resume the sweep"
        )
    val = {k: v for k, v in (results[0].metrics or {}).items() if k.startswith("val/")}
    log.info("SFT reference for the objective's constraints: %s", val)
    return val


REFERENCE = "reference"


def load_sweep_config(resume: str, overrides: list[str]) -> Config:
    """The config a sweep started with (so --resume needs no flags), plus any overrides."""
    sweep = location(resume, "--resume")
    text = sweep.read_text(SWEEP_CONFIG)
    if text is None:
        raise ConfigError(f"--resume {resume}: not a tasft-ray sweep folder (no {SWEEP_CONFIG})")
    return parse_config(text, f"{sweep.uri}/{SWEEP_CONFIG}", overrides)


def summary(outcome: SweepOutcome, cfg: Config) -> str:
    """A plain-text table of trials: the swept values, the objective's numbers when there is
    one, each loss term averaged over the run, and how each trial ended."""
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
