"""One Tune trial: its config, a TorchTrainer fit, its MLflow child run, in-sweep evaluation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tasft_ray import tracking
from tasft_ray.config import Config
from tasft_ray.evaluation.safety import RESPONSES_FILE, evaluate_in_process, judge_stage
from tasft_ray.files import to_jsonl, write_atomic
from tasft_ray.sweep.space import trial_overrides
from tasft_ray.training.checkpoints import ADAPTER_DIR
from tasft_ray.training.ray_train import build_trainer


def run_trial(params: dict[str, Any], base: dict, sweep_dir: str, mlflow: dict) -> None:
    """One trial: resolve its config, fit a TorchTrainer, log the outcome to its child run."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    cfg = Config.model_validate(base).with_overrides(trial_overrides(params))
    trial_dir = Path(sweep_dir) / "trials" / trial_name
    cfg = cfg.with_overrides({"train.output_dir": str(trial_dir)})
    uri = mlflow["uri"]
    run_id = tracking.child_run(uri, cfg, mlflow["parent_run_id"], trial_id, trial_name)
    done = tracking.client(uri).get_run(run_id)
    if done.info.status == "FINISHED":
        # The driver died after this trial finished but before Tune saved that: do not rerun.
        final = {
            k.removeprefix("final/"): v
            for k, v in done.data.metrics.items()
            if k.startswith("final/")
        }
        tune.report(final)
        return
    for key, value in trial_overrides(params).items():
        tracking.client(uri).set_tag(run_id, f"sweep.{key}", str(value))
    trainer = build_trainer(
        cfg,
        name=f"train_{trial_id}",
        storage=sweep_dir,
        mlflow={"uri": uri, "run_id": run_id},
        callbacks=[TuneReportCallback()],
    )
    try:
        result = trainer.fit()
    except Exception:
        tracking.finish_run(uri, run_id, "FAILED")
        raise
    final = {
        f"final/{k}": float(v)
        for k, v in (result.metrics or {}).items()
        if isinstance(v, (int, float))
    }
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as directory:
            adapter = str(Path(directory) / ADAPTER_DIR)
            tracking.client(uri).log_artifacts(run_id, adapter, ADAPTER_DIR)
        if cfg.eval.in_sweep:
            evaluated = _evaluate_trial(cfg, result, uri, run_id)
            final |= {f"final/{k}": v for k, v in evaluated.items()}
    for key, value in final.items():
        tracking.client(uri).log_metric(run_id, key, value)
    tracking.finish_run(uri, run_id)
    if cfg.eval.in_sweep:  # Tune's last result carries training and evaluation numbers
        tune.report({k.removeprefix("final/"): v for k, v in final.items()})


def _evaluate_trial(cfg: Config, result, uri: str, run_id: str) -> dict[str, float]:
    """eval/* of the final adapter (and, with eval.checkpoints=all, of every kept checkpoint),
    logged at each checkpoint's step; returns the final one's. Quality: final adapter only."""
    import torch
    from mlflow.entities import Metric

    # The trial's Train workers have exited; their CPUs stay this trial's until it reports.
    torch.set_num_threads(max(1, int(cfg.train.num_workers * cfg.engine.cpus_per_worker)))
    final_step = int(result.metrics["step"])
    todo = {final_step: result.checkpoint}
    if cfg.eval.checkpoints == "all":
        todo |= {int(m["step"]): c for c, m in result.best_checkpoints or [] if "step" in m}
    c = tracking.client(uri)
    metrics: dict[str, float] = {}
    judge = judge_stage(cfg.eval)  # loaded once, not per checkpoint
    for step in sorted(todo):
        with todo[step].as_directory() as directory:
            rows, metrics = evaluate_in_process(
                cfg,
                str(Path(directory) / ADAPTER_DIR),
                batch_size=cfg.generate.batch_size,
                with_quality=step == final_step,
                judge=judge,
            )
        where = "eval" if step == final_step else f"eval/step_{step}"
        out = Path(cfg.train.output_dir) / where / RESPONSES_FILE
        write_atomic(out, to_jsonl(rows))
        c.log_artifact(run_id, str(out), where)
        now = int(time.time() * 1000)
        batch = [Metric(f"eval/{k}", float(v), now, step) for k, v in metrics.items()]
        c.log_batch(run_id, metrics=batch)
    return {f"eval/{k}": float(v) for k, v in metrics.items()}
