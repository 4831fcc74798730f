"""The sweep driver: a Ray Tune run of TA-SFT trainings, its MLflow parent run, resume, and
the report when trials evaluate themselves.

Each trial is a function that builds and fits a TorchTrainer (Ray 2.60's Train V2 cannot be
wrapped by a Tuner directly), reporting to Tune through TuneReportCallback. One MLflow parent run
per sweep, one child run per trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import Config, ConfigError, SweepConfig, cache_root, load_config
from tasft_ray.files import LOCK_FILE, check_writable, output_lock, write_atomic
from tasft_ray.judges import check_judge
from tasft_ray.report import ReportError, format_trials, plain_table, write_report
from tasft_ray.sweep.space import (
    check_trial_configs,
    param_space,
    scheduler,
    search_alg,
    trial_overrides,
)
from tasft_ray.sweep.trial import run_trial

log = logging.getLogger(__name__)

SWEEP_CONFIG = "sweep_config.yaml"


def _resolve_paths(cfg: Config) -> Config:
    """Absolute data/cache/storage paths, so workers (any cwd, any node) find the same files."""
    overrides: dict[str, Any] = {
        "sweep.storage": str(Path(cfg.sweep.storage).expanduser().resolve()),
        "model.cache_dir": str(cache_root(cfg.model.cache_dir).resolve()),
    }
    if cfg.data_root:
        overrides["data.root"] = str(Path(cfg.data_root).expanduser().resolve())
    for key in ("safe", "harmful", "refusals"):  # local data files, e.g. generated pairs
        src = getattr(cfg.data, key)
        if src is not None and src.path:
            overrides[f"data.{key}.path"] = str(Path(src.path).expanduser().resolve())
    return cfg.with_overrides(overrides)


@dataclass
class SweepOutcome:
    results: Any  # Tune's ResultGrid
    sweep_dir: Path
    parent_run_id: str
    status: dict[str, str] = field(default_factory=dict)  # trial name -> ok | error | unfinished
    trial_ids: dict[str, str] = field(default_factory=dict)  # trial name -> Tune trial id
    not_started: int = 0  # trials of the space the stopped sweep never created
    report: Path | None = None  # the sweep's report folder (eval.in_sweep) or None
    report_text: str = ""  # the report's terminal table

    @property
    def unfinished(self) -> list[str]:
        """Trials the sweep was stopped in the middle of."""
        return [name for name, st in self.status.items() if st == "unfinished"]

    @property
    def unfinished_ids(self) -> list[str]:
        return [self.trial_ids[name] for name in self.unfinished]

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


def run_sweep(cfg: Config, resume: str | Path | None = None) -> SweepOutcome:
    """Run a new sweep, or finish the one in folder ``resume``; with eval.in_sweep, also write
    its report (``tasft-ray report``) into SWEEP_DIR/report and log it to the parent run.

    Everything a trial could reject is checked first (tracking store, storage, every trial's
    config). A sweep stopped by a signal returns with its unfinished trials listed and its
    MLflow runs KILLED; one that crashes leaves them FAILED; either is finished with ``resume``,
    which also restarts a sweep killed before Tune had saved any state.
    """

    cfg = _resolve_paths(cfg)
    check_trial_configs(cfg)
    if cfg.eval.in_sweep:
        check_judge(cfg.eval.judge, cfg.eval.judge_options, "eval.judge")
    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri)
    check_writable(cfg.sweep.storage, "sweep.storage")
    sweep_dir = Path(resume).resolve() if resume else Path(cfg.sweep.storage) / cfg.sweep.name
    if not resume and (sweep_dir / SWEEP_CONFIG).is_file():
        raise ConfigError(
            f"sweep folder {sweep_dir} exists; pass --resume {sweep_dir} to finish it, or set "
            "sweep.name to start a new sweep"
        )
    with output_lock(sweep_dir / LOCK_FILE, "sweep", str(sweep_dir)):
        parent = tracking.start_parent_run(uri, cfg, sweep_dir)
        write_atomic(sweep_dir / SWEEP_CONFIG, cfg.to_yaml())
        log.info("sweep %s: results in %s, MLflow parent run %s at %s", cfg.sweep.name,
                 sweep_dir, parent, uri)  # fmt: skip
        try:
            results = _fit(cfg, sweep_dir, uri, parent, restore=bool(resume))
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            tracking.finish_children(uri, parent, status)
            tracking.finish_run(uri, parent, status)
            raise
        outcome = _outcome(cfg, results, sweep_dir, uri, parent)
        if outcome.unfinished or outcome.not_started:
            tracking.finish_children(uri, parent, "KILLED", set(outcome.unfinished_ids))
            tracking.finish_run(uri, parent, "KILLED")
            return outcome
        if cfg.eval.in_sweep:
            try:
                outcome.report, evaluated = write_report(
                    uri, sweep_dir / "report", parent_run_id=parent
                )
                outcome.report_text = format_trials(evaluated)
            except ReportError as exc:  # every trial failed: the sweep's own error says why
                log.warning("no report: %s", exc)
        errors = [r for r in results if r.error]
        tracking.finish_run(uri, parent, "FAILED" if errors else "FINISHED")
        return outcome


def _outcome(cfg: Config, results, sweep_dir: Path, uri: str, parent: str) -> SweepOutcome:
    """How each trial ended. A stopped sweep's trials whose child run has not FINISHED were
    cut short; without a stop every trial Tune ended is done (ASHA ends some early)."""
    # the ResultGrid lists results in its trials' order; only the trials know their status
    trials = results._experiment_analysis.trials
    stopped = _STOPPED.is_set()
    ended = tracking.child_statuses(uri, parent) if stopped else {}
    status = {}
    for t in trials:
        if t.status == "ERROR":
            status[str(t)] = "error"
        elif stopped and ended.get(t.trial_id) != "FINISHED":
            status[str(t)] = "unfinished"
        else:
            status[str(t)] = "ok"
    left = max(0, expected_trials(cfg.sweep) - len(trials)) if stopped else 0
    ids = {str(t): t.trial_id for t in trials}
    return SweepOutcome(results, sweep_dir, parent, status, ids, left)


def _fit(cfg: Config, sweep_dir: Path, uri: str, parent: str, restore: bool):
    init_ray(cfg)
    trainable = tune.with_parameters(
        run_trial,
        base=cfg.model_dump(mode="json"),
        sweep_dir=str(sweep_dir),
        mlflow={"uri": uri, "parent_run_id": parent},
    )
    _STOPPED.clear()
    if restore and tune.Tuner.can_restore(str(sweep_dir)):
        tuner = tune.Tuner.restore(
            str(sweep_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:  # new, or killed before Tune saved any state: (re)start it in its folder
        if restore:
            log.info("%s has no Tune state yet: starting the sweep over in it", sweep_dir)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg.sweep),
            tune_config=tune.TuneConfig(
                metric=cfg.sweep.metric,
                mode=cfg.sweep.mode,
                num_samples=cfg.sweep.num_samples,
                max_concurrent_trials=cfg.sweep.max_concurrent_trials,
                search_alg=search_alg(cfg.sweep, cfg.train.seed),
                scheduler=scheduler(cfg.sweep, cfg.train.max_steps),
            ),
            run_config=tune.RunConfig(
                name=sweep_dir.name,
                storage_path=str(sweep_dir.parent),
                callbacks=[_StopWatch()],
            ),
        )
    with _sigterm_stops_tune():
        return tuner.fit()


def load_sweep_config(resume: str | Path, overrides: list[str]) -> Config:
    """The config a sweep started with (so --resume needs no flags), plus any overrides."""
    path = Path(resume) / SWEEP_CONFIG
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: not a tasft-ray sweep folder (no {SWEEP_CONFIG})")
    return load_config(path, overrides)


def summary(outcome: SweepOutcome, cfg: Config) -> str:
    """A plain-text table of trials: the swept values, the final metrics and how each ended."""
    keys = list(cfg.sweep.space) + sorted({k for c in cfg.sweep.cases for k in c})
    cols = [*keys, "step", "loss/total", "loss/sft", "loss/penalty", "status"]
    rows = []
    for r, status in zip(outcome.results, outcome.status.values(), strict=True):
        params = trial_overrides(r.config or {})
        m = r.metrics or {}
        rows.append(
            [str(params.get(k, "")) for k in keys]
            + [
                str(m.get("step", "")),
                *(f"{m[k]:.4f}" if k in m else "" for k in cols[-4:-1]),
                status,
            ]
        )
    return plain_table(cols, rows)
