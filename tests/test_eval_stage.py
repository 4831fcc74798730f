"""The shared evaluation stage (issue 30): evaluators that hold the base model once and apply
each request's adapter, and the asynchronous validation that trials run through it.

The evaluator is checked against the inline path's own code on the tiny model (same answers,
same metrics), with an adapter perturbed far from zero so that applying it must change the
answers; the asynchronous validation protocol against a real Ray actor whose validations
finish out of order, killed with validations in flight and resumed from its checkpoint."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest
import torch
from conftest import sqlite_uri

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import load_config
from tasft_ray.evaluation.data import load_eval_data
from tasft_ray.evaluation.safety import AnswerProgress, evaluate_in_process
from tasft_ray.evaluation.stage import (
    EvaluationRequest,
    Evaluator,
    ValidationRequest,
)
from tasft_ray.evaluation.validation import Validator, load_validation_data
from tasft_ray.files import folder_bytes
from tasft_ray.inference.generator import load_generator_model
from tasft_ray.models import attach_lora, load_model
from tasft_ray.objective import TUNE_METRIC, VAL_STEP
from tasft_ray.outbox import MetricOutbox
from tasft_ray.training.checkpoints import ADAPTER_DIR
from tasft_ray.training.validation import PENDING_DIR, make_validation


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny-search", ["eval.max_prompts=3", "train.seed=3", "eval.quality_limit=4",
                                       "eval.benchmarks=[harmfulq, xstest_safe]"])  # fmt: skip


@pytest.fixture(scope="module")
def perturbed(cfg, tmp_path_factory) -> Path:
    """A LoRA adapter whose B matrices are far from zero (a trained-to-death adapter): the
    answers with it cannot be the base model's."""
    folder = tmp_path_factory.mktemp("adapter")
    _, model = load_model(cfg.model, cfg.train.seed)
    peft = attach_lora(model, cfg.lora)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 2.0)
    peft.save_pretrained(folder)
    return folder


def _answers(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["id"], r["response"]) for r in rows]


def test_the_evaluator_answers_as_inline_and_applies_each_adapter_for_its_request(
    cfg, perturbed, tmp_path
):
    """Base, adapter with quality (lm-eval), base again: the adapter changes the answers, the
    numbers are the inline path's, and the resident model is the base model afterwards (a
    merged adapter would leak into every later request: the bug this guards against)."""
    data = load_eval_data(cfg)
    evaluator = Evaluator()
    dumped = cfg.model_dump(mode="json")
    uri = sqlite_uri(tmp_path)
    run_id = tracking.client(uri).create_run(tracking.ensure_experiment(uri, "e")).info.run_id
    # as a request ships it to an evaluator actor
    shipped = pickle.loads(pickle.dumps(AnswerProgress(tracking.LiveRun(uri, run_id))))

    def staged(files, quality: bool, progress=None):
        return evaluator.evaluate(EvaluationRequest(dumped, files, data, quality, progress))

    base_rows, _ = staged({}, False)
    rows, metrics = staged(folder_bytes(perturbed), True, shipped)
    done = tracking.client(uri).get_metric_history(run_id, "progress/prompts_done")
    assert done[0].value == 0 and done[-1].value == done[-1].step == len(data.prompts)
    again_rows, _ = staged({}, False)
    batch = cfg.generate.batch_size  # as a trial evaluates
    inline_rows, inline_metrics = evaluate_in_process(cfg, str(perturbed), batch, True, None,
                                                      data)  # fmt: skip
    inline_base, _ = evaluate_in_process(cfg, None, batch, False, None, data)

    assert len(rows) == len(data.prompts) >= 6
    assert _answers(rows) == _answers(inline_rows) and metrics == inline_metrics
    assert "quality/piqa/acc" in metrics
    assert _answers(base_rows) == _answers(inline_base) == _answers(again_rows)
    changed = [a != b for a, b in zip(_answers(rows), _answers(base_rows), strict=True)]
    assert sum(changed) >= len(changed) - 1, "the adapter's answers are the base model's"
    assert len(evaluator.models) == 1  # one base model for all three requests


def test_the_evaluator_validates_as_the_training_workers_do(cfg, perturbed):
    validator = Validator(cfg.eval, load_validation_data(cfg), cfg.generate.batch_size)
    evaluator = Evaluator()
    request = ValidationRequest(cfg.model, cfg.train.seed, folder_bytes(perturbed), validator)
    staged = evaluator.validate(request)
    tokenizer, model = load_generator_model(cfg.model, str(perturbed), seed=cfg.train.seed)
    inline = validator(model, tokenizer)
    timing = {"val/seconds"}
    assert {k: v for k, v in staged.items() if k not in timing} == {
        k: v for k, v in inline.items() if k not in timing
    }
    assert staged["val/n"] == 8 and "val/quality" in staged


# ------------------------------------------------------------- the asynchronous protocol

DELAYS = {0: 0.0, 2: 1.5, 4: 0.2, 6: 1.0, 8: 0.0}  # later ones can finish first


class _Submit:
    """The trial's side of a stage (as evaluation.stage.StageValidator): submit returns a ref."""

    asynchronous = True

    def __init__(self, actor):
        self.actor = actor

    def submit(self, files: dict[str, bytes]):
        return self.actor.validate.remote(files)


class _Trainer:
    def __init__(self, cfg, step: int = 0):
        self.cfg, self.step, self.total_steps = cfg, step, cfg.train.max_steps

    def adapter_files(self) -> dict[str, bytes]:
        return {"adapter_model.safetensors": str(self.step).encode()}


def _checkpoint(folder: Path, step: int) -> Path:
    (folder / ADAPTER_DIR).mkdir(parents=True)
    (folder / ADAPTER_DIR / "adapter_model.safetensors").write_text(str(step))
    return folder


def _train(validation, trainer, steps, tmp_path: Path) -> list[dict]:
    """The worker loop's calls, as ray_train makes them (a checkpoint every 2 steps)."""
    reports = []
    for step in steps:
        trainer.step = step
        metrics = {"step": step, "loss/total": 1.0 / step}
        if step % 2 == 0:
            local = _checkpoint(tmp_path / f"ckpt_{step}_{time.monotonic_ns()}", step)
            reports.append(validation.at_checkpoint(metrics, local))
            validation.outbox.save(local)  # as rank 0's step logger does
        else:
            reports.append(validation.at_step(metrics))
    return reports


def test_async_validation_delivers_every_checkpoint_once_in_order_across_a_kill(
    cfg, tmp_path, ray_head, monkeypatch
):
    import ray

    c = cfg.with_overrides({"train.max_steps": 8, "eval.stage.mode": "shared",
                            "eval.stage.max_pending": 2, "sweep.scheduler": "none",
                            "sweep.objective": {"minimize": "val/harm_score"}})  # fmt: skip
    uri = sqlite_uri(tmp_path)
    run_id = tracking.client(uri).create_run(tracking.ensure_experiment(uri, "v")).info.run_id
    mlflow = {"uri": uri, "run_id": run_id}
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    init_ray(c)
    try:

        @ray.remote(num_cpus=0, max_concurrency=8)
        class Slow:
            def validate(self, files):
                step = int(files["adapter_model.safetensors"])
                time.sleep(DELAYS[step])
                return {"val/harm_score": step / 10, "val/seconds": DELAYS[step]}

        loop = {"validator": _Submit(Slow.remote()), "objective": c.sweep.objective.build()}
        # the tracking server does not answer until the kill: every row stays unsent
        down = MetricOutbox("http://127.0.0.1:9", run_id)
        first = make_validation(loop, _Trainer(c), 0, 1, mlflow, down)
        assert first.start() is None
        before = _train(first, first.trainer, range(1, 5), tmp_path)
        # killed here, after the step-4 checkpoint, validations 2 and 4 (likely) in flight
        ckpt = max(tmp_path.glob("ckpt_4_*"))
        kept = sorted(p.name for p in (ckpt / PENDING_DIR).glob("step_*"))
        assert kept in ([], ["step_2"])  # what was in flight then, beside the checkpoint's own
        assert not tracking.client(uri).get_metric_history(run_id, "val/harm_score")

        outbox = MetricOutbox(uri, run_id)  # the restored worker's, the server back
        outbox.restore(ckpt)  # the checkpoint's unsent rows (step 0's validation at least)
        second = make_validation(loop, _Trainer(c, 4), 0, 1, mlflow, outbox)
        second.resume(ckpt)
        assert second.start() is None
        after = _train(second, second.trainer, range(5, 9), tmp_path)
        after += second.finish({"step": 8})
        assert outbox.drain(60)
    finally:
        ray.shutdown()

    history = tracking.client(uri).get_metric_history(run_id, "val/harm_score")
    assert sorted(m.step for m in history) == [0, 2, 4, 6, 8]  # each once, none lost
    assert all(m.value == pytest.approx(m.step / 10) for m in history)
    reports = before + after
    assert all(TUNE_METRIC in r and VAL_STEP in r for r in reports)  # the searcher needs one
    seen = [r[VAL_STEP] for r in reports]
    assert seen == sorted(seen)  # Tune hears them in step order
    assert sorted(set(seen)) == [0, 2, 4, 6, 8] and seen[-1] == 8  # the final one last
    assert all(r["objective"] == pytest.approx(r[VAL_STEP] / 10) for r in reports)
    assert len(after) - 4 == c.eval.stage.max_pending + 2  # a fixed number on every rank
