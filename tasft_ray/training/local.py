"""`tasft-ray train`: the TA-SFT loop on one process, no Ray — checkpoints and metrics.jsonl in
``train.output_dir``, resumable with no lost or repeated step."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from tasft_ray.config import Config, ConfigError
from tasft_ray.files import write_atomic
from tasft_ray.training.checkpoints import list_checkpoints
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
    cfg: Config, resume: str | Path | bool | None = None, progress: bool = True
) -> TrainResult:
    """Single-process training as `tasft-ray train` runs it; returns a TrainResult."""
    if cfg.engine.kind == "deepspeed":
        raise ConfigError(
            "engine.kind=deepspeed needs a distributed launch: use python -m tasft_ray.tune "
            "(Ray Train), or engine.kind=ddp for one process"
        )
    cfg = cfg.with_overrides({"engine.kind": "ddp"})  # one process: plain torch
    ckpt_root = Path(cfg.train.output_dir) / "checkpoints"
    found = list_checkpoints(ckpt_root)
    if resume is True:
        if not found:
            raise ConfigError(f"--resume: no checkpoint under {ckpt_root}")
        resume = found[-1]
    elif not resume and found:
        raise ConfigError(
            f"train.output_dir {cfg.train.output_dir} already has checkpoints (latest "
            f"{found[-1].name}); pass --resume to continue, or choose another output_dir"
        )
    gpu = cfg.engine.use_gpu and torch.cuda.is_available()
    trainer = TASFTTrainer(cfg, device=torch.device("cuda" if gpu else "cpu"))
    if resume:
        trainer.load_checkpoint(Path(resume))
        log.info("resumed from %s at step %d", resume, trainer.step)
    out = Path(cfg.train.output_dir)
    write_atomic(out / CONFIG_FILE, cfg.to_yaml())
    metrics_log = MetricsLog(out / METRICS_FILE, trainer.step)

    def checkpoint(metrics: dict) -> Path:
        path = trainer._local_checkpoint(metrics)
        metrics_log(metrics)
        return path

    return trainer.fit(on_metrics=metrics_log, on_checkpoint=checkpoint, progress=progress)
