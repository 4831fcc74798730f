"""The sweep driver: a Ray Tune run of TA-SFT trainings, its MLflow parent run, resume, and
the report when trials evaluate themselves.

Each trial is a function that builds and fits a TorchTrainer (Ray 2.60's Train V2 cannot be
wrapped by a Tuner directly), reporting to Tune through TuneReportCallback. One MLflow parent run
per sweep, one child run per trial.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import Config, ConfigError, cache_root, load_config
from tasft_ray.files import write_atomic
from tasft_ray.report import ReportError, format_trials, plain_table, write_report
from tasft_ray.sweep.space import param_space, scheduler, search_alg, trial_overrides
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
    report: Path | None  # the sweep's report folder (eval.in_sweep) or None
    report_text: str = ""  # the report's terminal table


def run_sweep(cfg: Config, resume: str | Path | None = None) -> SweepOutcome:
    """Run a new sweep, or finish the one in folder ``resume``; with eval.in_sweep, also write
    its report (``tasft-ray report``) into SWEEP_DIR/report and log it to the parent run."""
    from ray import tune

    cfg = _resolve_paths(cfg)
    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri)
    sweep_dir = Path(resume).resolve() if resume else Path(cfg.sweep.storage) / cfg.sweep.name
    if not resume and (sweep_dir / SWEEP_CONFIG).is_file():
        raise ConfigError(
            f"sweep folder {sweep_dir} exists; pass --resume {sweep_dir} to finish it, or set "
            "sweep.name to start a new sweep"
        )
    parent = tracking.start_parent_run(uri, cfg, sweep_dir)
    write_atomic(sweep_dir / SWEEP_CONFIG, cfg.to_yaml())
    init_ray(cfg)
    trainable = tune.with_parameters(
        run_trial,
        base=cfg.model_dump(mode="json"),
        sweep_dir=str(sweep_dir),
        mlflow={"uri": uri, "parent_run_id": parent},
    )
    if resume:
        tuner = tune.Tuner.restore(
            str(sweep_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
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
            run_config=tune.RunConfig(name=sweep_dir.name, storage_path=str(sweep_dir.parent)),
        )
    results = tuner.fit()
    errors = [r for r in results if r.error]
    outcome = SweepOutcome(results, None)
    if cfg.eval.in_sweep:
        try:
            outcome.report, trials = write_report(uri, sweep_dir / "report", parent_run_id=parent)
            outcome.report_text = format_trials(trials)
        except ReportError as exc:  # every trial failed: the sweep's own error says why
            log.warning("no report: %s", exc)
    tracking.finish_run(uri, parent, "FAILED" if errors else "FINISHED")
    return outcome


def load_sweep_config(resume: str | Path, overrides: list[str]) -> Config:
    """The config a sweep started with (so --resume needs no flags), plus any overrides."""
    path = Path(resume) / SWEEP_CONFIG
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: not a tasft-ray sweep folder (no {SWEEP_CONFIG})")
    return load_config(path, overrides)


def summary(results, cfg: Config) -> str:
    """A plain-text table of trials: the swept values and the final metrics."""
    keys = list(cfg.sweep.space) + sorted({k for c in cfg.sweep.cases for k in c})
    cols = [*keys, "step", "loss/total", "loss/sft", "loss/penalty", "status"]
    rows = []
    for r in results:
        params = trial_overrides(r.config or {})
        m = r.metrics or {}
        rows.append(
            [str(params.get(k, "")) for k in keys]
            + [
                str(m.get("step", "")),
                *(f"{m[k]:.4f}" if k in m else "" for k in cols[-4:-1]),
                "error" if r.error else "ok",
            ]
        )
    return plain_table(cols, rows)
