"""One Tune trial: its config, a TorchTrainer fit, its MLflow child run, in-sweep evaluation.

A trial runs on any node: it reads no data (the driver's ``prepared`` refs carry it), writes
its checkpoints through Ray Train to the sweep's storage, and keeps local files only in its
own scratch folder; what a user needs from it goes to MLflow and the storage."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from tasft_ray import tracking
from tasft_ray.config import Config, setting_label
from tasft_ray.evaluation.data import EvalData
from tasft_ray.evaluation.safety import (
    RESPONSES_FILE,
    evaluate_in_process,
    judge_stage,
    log_answers,
)
from tasft_ray.evaluation.validation import Validator
from tasft_ray.files import to_jsonl, write_atomic
from tasft_ray.storage import Location
from tasft_ray.sweep.prepared import Prepared
from tasft_ray.sweep.space import trial_overrides
from tasft_ray.training.checkpoints import ADAPTER_DIR
from tasft_ray.training.ray_train import build_trainer

TRIAL_NODE_TAG = "tasft.trial_node"  # MLflow tag: the Ray node the trial's own process runs on


def run_trial(
    params: dict[str, Any],
    base: dict,
    sweep: Location,
    mlflow: dict,
    prepared: Prepared,
    search: dict | None = None,
) -> None:
    """One trial: resolve its config, fit a TorchTrainer, log the outcome to its child run.
    ``search``: the sweep's objective and its SFT reference metrics, when it has one."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    cfg = Config.from_dict(base, check_files=False)
    cfg = cfg.with_overrides(trial_overrides(params), check_files=False)
    # local files of the trial (test hooks, evaluation outputs before they are logged): in the
    # sweep's folder when that is local, else in this node's scratch space
    root = Path(sweep.path) if sweep.local else Path(tempfile.gettempdir()) / "tasft_trials"
    trial_dir = root / "trials" / trial_name
    cfg = cfg.with_overrides({"train.output_dir": str(trial_dir)}, check_files=False)
    uri = mlflow["uri"]
    label = setting_label(cfg.loss.method, cfg.loss.lam, cfg.data.toxic_count, cfg.train.seed)
    run_id = tracking.child_run(uri, cfg, mlflow["parent_run_id"], trial_id, label)
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
    c = tracking.client(uri)
    tags = {TRIAL_NODE_TAG: ray.get_runtime_context().get_node_id(), "tasft.trial": trial_name,
            "tasft.method": cfg.loss.method, "tasft.toxic_count": str(cfg.data.toxic_count),
            "tasft.lam": f"{cfg.loss.lam:g}", "tasft.seed": str(cfg.train.seed)}  # fmt: skip
    search = dict(search or {})
    if search.pop("role", None):  # the SFT reference of the sweep's objective
        tags["tasft.role"] = "reference"
    for key, value in tags.items():  # the MLflow UI groups and filters runs by them
        c.set_tag(run_id, key, value)
    tracking.log_inputs(uri, run_id, prepared.data_inputs(cfg))
    validation = None
    if cfg.eval.every:
        data = ray.get(prepared.validation_data(cfg))
        validation = {"validator": Validator(cfg.eval, data, cfg.generate.batch_size),
                      **search}  # fmt: skip
    trainer = build_trainer(
        cfg,
        name=f"train_{trial_id}",
        storage=sweep,
        mlflow={"uri": uri, "run_id": run_id},
        callbacks=[TuneReportCallback()],
        mixture=prepared.mixture(cfg),
        validation=validation,
    )
    try:
        result = trainer.fit()
    except Exception:
        # a stopped sweep or Tune's scheduler may already have closed the run KILLED (the
        # driver does once Tune returns, which can be before this worker gets here)
        if tracking.client(uri).get_run(run_id).info.status == "RUNNING":
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
            data = ray.get(prepared.eval_data(cfg))
            evaluated = _evaluate_trial(cfg, result, uri, run_id, data)
            if not sweep.local:
                sweep.upload(Path(cfg.train.output_dir), f"trials/{trial_name}")
            final |= {f"final/{k}": v for k, v in evaluated.items()}
    for key, value in final.items():
        tracking.client(uri).log_metric(run_id, key, value)
    tracking.finish_run(uri, run_id)
    if cfg.eval.in_sweep:  # Tune's last result carries training and evaluation numbers
        tune.report({k.removeprefix("final/"): v for k, v in final.items()})


def _evaluate_trial(cfg: Config, result, uri: str, run_id: str, data: EvalData) -> dict[str, float]:
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
                data=data,
            )
        where = "eval" if step == final_step else f"eval/step_{step}"
        out = Path(cfg.train.output_dir) / where / RESPONSES_FILE
        write_atomic(out, to_jsonl(rows))
        c.log_artifact(run_id, str(out), where)
        log_answers(uri, run_id, rows, where)
        now = int(time.time() * 1000)
        batch = [Metric(f"eval/{k}", float(v), now, step) for k, v in metrics.items()]
        c.log_batch(run_id, metrics=batch)
    return {f"eval/{k}": float(v) for k, v in metrics.items()}
