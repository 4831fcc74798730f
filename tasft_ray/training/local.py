"""`tasft-ray train`: the TA-SFT loop on one process, no Ray — checkpoints and metrics.jsonl in
``train.output_dir``, resumable with no lost or repeated step."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from tasft_ray import tracking
from tasft_ray.config import Config, ConfigError
from tasft_ray.data.mixture import Mixture
from tasft_ray.files import LOCK_FILE, check_writable, output_lock, read_jsonl, write_atomic
from tasft_ray.training.checkpoints import ADAPTER_DIR, STATE_FILE, list_checkpoints
from tasft_ray.training.loop import TASFTTrainer, TrainResult

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


class MetricsLog:
    """metrics.jsonl in the output dir; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        rows = []
        if resume_step and path.exists():
            rows = [
                r for r in path.read_text().splitlines() if json.loads(r)["step"] <= resume_step
            ]
        write_atomic(path, "".join(r + "\n" for r in rows))

    def __call__(self, metrics: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")


def run_training(
    cfg: Config,
    resume: str | Path | bool | None = None,
    progress: bool = True,
    prepare_mixture: Callable[[Config], Mixture] | None = None,
    tracked: bool = False,
) -> TrainResult:
    """Single-process training as `tasft-ray train` runs it; returns a TrainResult.

    One run per ``train.output_dir`` at a time (a lock file); ``resume`` is True (the latest
    checkpoint there) or a checkpoint folder. A run that has already reached its last step
    returns that checkpoint without training. ``prepare_mixture(cfg)`` builds the training
    mixture once the output folder is checked (the CLI passes the sweep driver's
    ``sweep.prepared.training_mixture``, which STAR-DSS's scores need); without it the trainer
    tokenises the data itself. ``tracked``: an MLflow run as a sweep's trial has (``TrainRun``),
    the one of the checkpoints' run when resumed.
    """
    if cfg.engine.kind == "deepspeed":
        raise ConfigError(
            "engine.kind=deepspeed needs a distributed launch: use python -m tasft_ray.tune "
            "(Ray Train), or engine.kind=ddp for one process"
        )
    cfg = cfg.with_overrides({"engine.kind": "ddp"})  # one process: plain torch
    out = Path(cfg.train.output_dir)
    uri = tracking.tracking_uri(cfg)
    if tracked:
        tracking.check_reachable(uri)
    check_writable(out, "train.output_dir")
    with output_lock(out / LOCK_FILE, "train.output_dir", str(out)):
        resume_at = _resume_from(out / "checkpoints", resume, cfg)
        mixture = prepare_mixture(cfg) if prepare_mixture is not None else None
        return _train(cfg, out, resume_at, progress, mixture, uri if tracked else None)


class TrainRun:
    """The MLflow run of `tasft-ray train`, as a sweep's trial has one: the config as params,
    the setting's tags and name, the data it trained on, each step's metrics once (a resumed
    run continues the same run: its id is kept in the output folder), the adapter and the
    final metrics."""

    FILE = "mlflow_run_id"

    def __init__(self, uri: str, run_id: str, out: Path, wait: float):
        self.uri, self.run_id, self.out, self.wait = uri, run_id, out, wait
        self.steps = tracking.StepLogger(uri, run_id)

    @classmethod
    def open(cls, uri: str, cfg: Config, out: Path) -> TrainRun:
        saved = out / cls.FILE
        wait = cfg.tracking.outage_wait
        if saved.is_file():
            run_id = saved.read_text().strip()
            tracking.reopen(uri, run_id)
            return cls(uri, run_id, out, wait)
        exp = tracking.ensure_experiment(uri, cfg.tracking.experiment)
        tags = {tracking.RUN_KIND_TAG: "train", **tracking.setting_tags(cfg)}
        run = tracking.client(uri).create_run(exp, run_name=cfg.setting.label, tags=tags)
        tracking.log_params(uri, run.info.run_id, cfg)
        tracking.client(uri).log_text(run.info.run_id, cfg.to_yaml(), CONFIG_FILE)
        write_atomic(saved, run.info.run_id)
        return cls(uri, run.info.run_id, out, wait)

    def log_inputs(self, mixture: Mixture) -> None:
        tracking.log_inputs(self.uri, self.run_id, mixture.inputs)

    def _deliver_steps(self) -> None:
        self.steps.flush()
        self.steps.drain(self.wait)

    def finish(self, status: str) -> None:
        self._deliver_steps()
        tracking.finish_run(self.uri, self.run_id, status)

    def finish_with(self, result: TrainResult) -> None:
        self._deliver_steps()
        c = tracking.client(self.uri)
        if result.checkpoint is not None:
            c.log_artifacts(self.run_id, str(Path(result.checkpoint) / ADAPTER_DIR), ADAPTER_DIR)
        for key, value in result.metrics.items():
            if isinstance(value, (int, float)):
                c.log_metric(self.run_id, f"final/{key}", float(value))
        tracking.finish_run(self.uri, self.run_id)


def _resume_from(root: Path, resume: str | Path | bool | None, cfg: Config) -> Path | None:
    found = list_checkpoints(root)
    if resume is True:
        if not found:
            raise ConfigError(f"--resume: no checkpoint under {root}")
        return found[-1]
    if resume:
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            latest = f"; the latest under {root} is {found[-1]}" if found else ""
            raise ConfigError(
                f"--resume {resume}: not a checkpoint folder (no {STATE_FILE}){latest}"
            )
        return path
    if found:
        raise ConfigError(
            f"train.output_dir {cfg.train.output_dir} already has checkpoints (latest "
            f"{found[-1].name}); pass --resume to continue, or choose another output_dir"
        )
    return None


def _train(
    cfg: Config,
    out: Path,
    resume: Path | None,
    progress: bool,
    mixture: Mixture | None,
    uri: str | None,
) -> TrainResult:
    gpu = cfg.engine.use_gpu and torch.cuda.is_available()
    trainer = TASFTTrainer(cfg, mixture=mixture, device=torch.device("cuda" if gpu else "cpu"))
    if resume:
        trainer.load_checkpoint(resume)
    if uri is None:
        return _fit(trainer, cfg, out, resume, progress, None)
    # the run opens once the model and data are loaded: a mistake found there writes nothing
    run = TrainRun.open(uri, cfg, out)
    if resume:
        run.steps.restore(resume)  # what that checkpoint held unsent goes first
    else:
        run.log_inputs(trainer.mixture)
    try:
        with tracking.system_metrics(uri, run.run_id, cfg.tracking):
            result = _fit(trainer, cfg, out, resume, progress, run)
    except BaseException as exc:
        run.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    run.finish_with(result)
    return result


def _fit(
    trainer: TASFTTrainer,
    cfg: Config,
    out: Path,
    resume: Path | None,
    progress: bool,
    run: TrainRun | None,
) -> TrainResult:
    if resume:
        log.info("resumed from %s at step %d", resume, trainer.step)
        if trainer.step >= trainer.total_steps:
            rows = read_jsonl(out / METRICS_FILE)
            last = next((r for r in reversed(rows) if r.get("step") == trainer.step), {})
            return TrainResult(trainer.step, last, resume, finished_before=True)
    write_atomic(out / CONFIG_FILE, cfg.to_yaml())
    metrics_log = MetricsLog(out / METRICS_FILE, trainer.step)

    def on_metrics(metrics: dict) -> None:
        metrics_log(metrics)
        if run is not None:
            run.steps.add(metrics)

    def checkpoint(metrics: dict) -> Path:
        path = trainer._local_checkpoint(metrics)
        on_metrics(metrics)
        if run is not None:  # the steps a checkpoint holds: never re-run, logged once
            run.steps.flush()
            run.steps.save(path)
        return path

    return trainer.fit(on_metrics=on_metrics, on_checkpoint=checkpoint, progress=progress)
