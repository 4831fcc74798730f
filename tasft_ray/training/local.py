"""`tasft-ray train`: the TA-SFT loop on one process, no Ray — checkpoints and metrics.jsonl in
``train.output_dir``, resumable with no lost or repeated step."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from tasft_ray.config import Config, ConfigError
from tasft_ray.data.mixture import Mixture
from tasft_ray.files import LOCK_FILE, check_writable, output_lock, read_jsonl, write_atomic
from tasft_ray.training.checkpoints import STATE_FILE, list_checkpoints
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
) -> TrainResult:
    """Single-process training as `tasft-ray train` runs it; returns a TrainResult.

    One run per ``train.output_dir`` at a time (a lock file); ``resume`` is True (the latest
    checkpoint there) or a checkpoint folder. A run that has already reached its last step
    returns that checkpoint without training. ``prepare_mixture(cfg)`` builds the training
    mixture once the output folder is checked (the CLI passes the sweep driver's
    ``sweep.prepared.training_mixture``, which STAR-DSS's scores need); without it the trainer
    tokenises the data itself.
    """
    if cfg.engine.kind == "deepspeed":
        raise ConfigError(
            "engine.kind=deepspeed needs a distributed launch: use python -m tasft_ray.tune "
            "(Ray Train), or engine.kind=ddp for one process"
        )
    cfg = cfg.with_overrides({"engine.kind": "ddp"})  # one process: plain torch
    out = Path(cfg.train.output_dir)
    check_writable(out, "train.output_dir")
    with output_lock(out / LOCK_FILE, "train.output_dir", str(out)):
        resume_at = _resume_from(out / "checkpoints", resume, cfg)
        mixture = prepare_mixture(cfg) if prepare_mixture is not None else None
        return _train(cfg, out, resume_at, progress, mixture)


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
    cfg: Config, out: Path, resume: Path | None, progress: bool, mixture: Mixture | None
) -> TrainResult:
    gpu = cfg.engine.use_gpu and torch.cuda.is_available()
    trainer = TASFTTrainer(cfg, mixture=mixture, device=torch.device("cuda" if gpu else "cpu"))
    if resume:
        trainer.load_checkpoint(resume)
        log.info("resumed from %s at step %d", resume, trainer.step)
        if trainer.step >= trainer.total_steps:
            rows = read_jsonl(out / METRICS_FILE)
            last = next((r for r in reversed(rows) if r.get("step") == trainer.step), {})
            return TrainResult(trainer.step, last, resume, finished_before=True)
    write_atomic(out / CONFIG_FILE, cfg.to_yaml())
    metrics_log = MetricsLog(out / METRICS_FILE, trainer.step)

    def checkpoint(metrics: dict) -> Path:
        path = trainer._local_checkpoint(metrics)
        metrics_log(metrics)
        return path

    return trainer.fit(on_metrics=metrics_log, on_checkpoint=checkpoint, progress=progress)
