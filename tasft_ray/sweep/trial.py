"""One Tune trial: its config, a TorchTrainer fit, its MLflow child run, in-sweep evaluation.

A trial runs on any node: it reads no data (the driver's ``prepared`` refs carry it), writes
its checkpoints through Ray Train to the sweep's storage, and keeps local files only in its
own scratch folder; what a user needs from it goes to MLflow and the storage."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from tasft_ray import tracking
from tasft_ray.config import Config
from tasft_ray.evaluation.safety import (
    RESPONSES_FILE,
    AnswerProgress,
    evaluate_in_process,
    judge_stage,
    log_answers,
)
from tasft_ray.evaluation.stage import EvaluationRequest, StageValidator
from tasft_ray.evaluation.validation import Validator
from tasft_ray.files import folder_bytes, to_jsonl, write_atomic
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

    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    cfg = _trial_config(base, params, sweep, trial_name)
    uri = mlflow["uri"]
    name = replace(cfg.setting, extras=run_extras(cfg, params)).label
    run_id = tracking.child_run(uri, cfg, mlflow["parent_run_id"], trial_id, name)
    if _report_if_finished(uri, run_id):
        return
    search = dict(search or {})
    reference = bool(search.pop("role", None))  # the SFT reference of the sweep's objective
    _tag_run(uri, run_id, cfg, params, trial_name, reference)
    tracking.log_inputs(uri, run_id, prepared.data_inputs(cfg))
    result = _fit(cfg, trial_id, sweep, uri, run_id, prepared, search)
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
            evaluator = prepared.stage.for_trial(trial_id) if prepared.stage else None
            data = prepared.eval_data(cfg)  # a reference: the evaluator fetches it itself
            evaluated = _evaluate_trial(cfg, result, uri, run_id, data, evaluator)
            if not sweep.local:
                sweep.upload(Path(cfg.train.output_dir), f"trials/{trial_name}")
            final |= {f"final/{k}": v for k, v in evaluated.items()}
    for key, value in final.items():
        tracking.client(uri).log_metric(run_id, key, value)
    tracking.finish_run(uri, run_id)
    if cfg.eval.in_sweep:  # Tune's last result carries training and evaluation numbers
        tune.report({k.removeprefix("final/"): v for k, v in final.items()})


NAMED = {"loss.method", "loss.lam", "data.toxic_count", "train.seed"}  # in every label


def run_extras(cfg: Config, params: dict[str, Any]) -> tuple[str, ...]:
    """What a trial's run name shows besides its setting: every other key the sweep varies
    (test hooks aside) and a contrastive augmentation however it was set, so no two trials of
    a sweep share a name."""
    swept = {k: v for k, v in trial_overrides(params).items()
             if k not in NAMED and not k.startswith("testing.")}  # fmt: skip
    out = [f"{k}={_short(v)}" for k, v in sorted(swept.items()) if k != "data.contrastive"]
    if cfg.data.contrastive is not None:
        out.append(f"contrastive={_short(cfg.data.contrastive.model_dump(exclude_none=True))}")
    return tuple(out)


def _short(value: Any) -> str:
    """A swept value as a run name shows it: numbers in short form, a data source by its
    name or file name."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict) and any(k in value for k in ("name", "path", "url", "hf")):
        origin = next(str(value[k]) for k in ("name", "path", "url", "hf") if value.get(k))
        return Path(origin).name
    return str(value).replace(" ", "")


def _trial_config(base: dict, params: dict[str, Any], sweep: Location, trial_name: str) -> Config:
    """The sweep's config with this trial's values. Its local files (test hooks, evaluation
    outputs before they are logged) go to the sweep's folder when that is local, else to this
    node's scratch space."""
    cfg = Config.from_dict(base, check_files=False)
    root = Path(sweep.path) if sweep.local else Path(tempfile.gettempdir()) / "tasft_trials"
    out = {"train.output_dir": str(root / "trials" / trial_name)}
    return cfg.with_overrides(trial_overrides(params) | out, check_files=False)


def _report_if_finished(uri: str, run_id: str) -> bool:
    """The driver died after this trial finished but before Tune saved that: report its final
    metrics again instead of rerunning it."""
    from ray import tune

    done = tracking.client(uri).get_run(run_id)
    if done.info.status != "FINISHED":
        return False
    final = done.data.metrics.items()
    tune.report({k.removeprefix("final/"): v for k, v in final if k.startswith("final/")})
    return True


def _tag_run(
    uri: str, run_id: str, cfg: Config, params: dict, trial_name: str, reference: bool
) -> None:
    """Tags the MLflow UI groups and filters trials by, and the values this trial swept."""
    c = tracking.client(uri)
    tags = {f"sweep.{k}": str(v) for k, v in trial_overrides(params).items()}
    tags |= {TRIAL_NODE_TAG: ray.get_runtime_context().get_node_id(), "tasft.trial": trial_name}
    tags |= tracking.setting_tags(cfg)
    if reference:
        tags[tracking.ROLE_TAG] = tracking.REFERENCE_ROLE
    for key, value in tags.items():
        c.set_tag(run_id, key, value)


def _fit(cfg: Config, trial_id: str, sweep: Location, uri: str, run_id: str,
         prepared: Prepared, search: dict):  # fmt: skip
    """The trial's TorchTrainer, fitted; its run FAILED if it raised (unless already closed)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    validation = None
    if cfg.eval.validation.every:
        data = ray.get(prepared.validation_data(cfg))
        validator = Validator(cfg.eval, data, cfg.generate.batch_size)  # the Train workers run it
        if prepared.stage is not None:  # its evaluator runs it; the workers hand it checkpoints
            evaluator = prepared.stage.for_trial(trial_id)
            validator = StageValidator(evaluator, cfg.model, cfg.train.seed, ray.put(validator))
        validation = {"validator": validator, **search}
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
        return trainer.fit()
    except Exception:
        # a stopped sweep or Tune's scheduler may already have closed the run KILLED (the
        # driver does once Tune returns, which can be before this worker gets here)
        if tracking.client(uri).get_run(run_id).info.status == "RUNNING":
            tracking.finish_run(uri, run_id, "FAILED")
        raise


def _evaluate_trial(cfg: Config, result, uri: str, run_id: str, data,
                    evaluator=None) -> dict[str, float]:  # fmt: skip
    """eval/* of the final adapter (and, with eval.checkpoints=all, of every kept checkpoint),
    logged at each checkpoint's step; returns the final one's. Quality: final adapter only.
    In this process, or by the sweep's shared ``evaluator`` when it has one; either logs
    progress/* to the trial's run while it answers (an hour on a CPU, with nothing else to see)."""
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
    judge = None
    if evaluator is None:  # loaded once, not per checkpoint
        judge, data = judge_stage(cfg.eval), ray.get(data)
    for step in sorted(todo):
        progress = AnswerProgress(tracking.LiveRun(uri, run_id))  # answers of this checkpoint
        with todo[step].as_directory() as directory:
            adapter = Path(directory) / ADAPTER_DIR
            if evaluator is None:
                rows, metrics = evaluate_in_process(cfg, str(adapter), cfg.generate.batch_size,
                                                    step == final_step, judge, data,
                                                    progress)  # fmt: skip
            else:
                request = EvaluationRequest(cfg.model_dump(mode="json"), folder_bytes(adapter),
                                            data, step == final_step, progress)  # fmt: skip
                rows, metrics = ray.get(evaluator.evaluate.remote(request))
        where = "eval" if step == final_step else f"eval/step_{step}"
        out = Path(cfg.train.output_dir) / where / RESPONSES_FILE
        write_atomic(out, to_jsonl(rows))
        c.log_artifact(run_id, str(out), where)
        log_answers(uri, run_id, rows, where)
        now = int(time.time() * 1000)
        batch = [Metric(f"eval/{k}", float(v), now, step) for k, v in metrics.items()]
        c.log_batch(run_id, metrics=batch)
    return {f"eval/{k}": float(v) for k, v in metrics.items()}
