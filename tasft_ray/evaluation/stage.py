"""The sweep's shared evaluation stage (``eval.stage.mode: shared``): evaluator actors that each
hold a base model (and a judge) once and apply every trial's adapter to it.

Inline, every trial validates on its own training workers, which stop training meanwhile, and
evaluates its final adapter in its own process with its own copy of the model and judge.
Shared, the sweep's driver starts ``eval.stage.evaluators`` :class:`Evaluator` actors once; a
trial's rank 0 hands each checkpoint's adapter (its two small files, through Ray's object
store) to one of them and goes on training, and its final evaluation goes there too. The
evaluator loads the adapter under a name of its own into the resident base model (peft),
answers and scores with the inline path's code (same prompts, batches, generation, judge and
metrics) and takes the adapter out again: the answers are the same, no request loads a model.

Why actors and not Ray Data or Ray Train's checkpoint validation: a Ray Data pipeline's actor
pool lives for one dataset's execution, while requests here arrive from many trials over hours;
Ray Train V2's ``ValidationConfig`` runs one task per checkpoint (a model load each, one in
flight) and attaches its metrics to the checkpoint record, which Tune's scheduler never sees
(the Tune report callback forwards a result when the workers report it). Results here must
reach ASHA and Optuna, so the trial delivers them itself (``training.validation``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasft_ray.config import Config, EvalStageConfig, ModelConfig
from tasft_ray.files import write_folder
from tasft_ray.models import weights_seed

log = logging.getLogger(__name__)


@contextlib.contextmanager
def adapter_folder(files: dict[str, bytes]) -> Iterator[Path]:
    """A request's adapter files in a temporary folder of this process, for peft to load."""
    with tempfile.TemporaryDirectory(prefix="tasft_adapter_") as tmp:
        yield write_folder(tmp, files)


class Evaluator:
    """Holds base models (one per model spec and seed asked for) and judges (one per set of
    judges); applies a request's adapter for that request only. A plain class: the stage runs
    it as a Ray actor, tests call it directly."""

    def __init__(self, threads: int = 1):
        import torch

        torch.set_num_threads(threads)  # Ray pins OMP_NUM_THREADS=1 in every worker
        # Ray forwards an actor's output to the sweep's console: the progress bars of every
        # request (datasets, lm-eval, ours) would flood it with lines nobody can act on (model
        # loads are quiet: models.quiet_loading)
        os.environ["TQDM_DISABLE"] = "1"
        self.models: dict[str, tuple[Any, Any]] = {}
        self.judges: dict[str, Any] = {}
        self.requests = 0

    def _base(self, model: ModelConfig, seed: int):
        # one resident copy per model, whatever the trials' seeds (but the tiny model's)
        key = f"{model.model_dump_json()}:{weights_seed(model, seed)}"
        if key not in self.models:
            from tasft_ray.accelerator import torch_device
            from tasft_ray.inference.generator import load_generator_model

            self.models[key] = load_generator_model(model, None, torch_device(), seed)
        return self.models[key]

    @contextlib.contextmanager
    def _adapted(self, model: ModelConfig, seed: int, files: dict[str, bytes] | None):
        """The base model with the request's adapter (unmerged, as training and the inline
        evaluation run it); the base model alone again afterwards."""
        from peft import PeftModel

        tokenizer, base = self._base(model, seed)
        if not files:
            yield tokenizer, base
            return
        self.requests += 1
        with adapter_folder(files) as folder:
            peft = PeftModel.from_pretrained(base, str(folder), adapter_name=f"r{self.requests}")
        try:
            yield tokenizer, peft.eval()
        finally:
            peft.unload()  # the LoRA layers out again: the resident model is the base model

    def _judge(self, e):
        from tasft_ray.evaluation.safety import judge_stage

        key = f"{e.judge}:{e.judge_options}:{e.extra_judges()}"
        if key not in self.judges:
            self.judges[key] = judge_stage(e)
        return self.judges[key]

    def validate(self, request: ValidationRequest) -> dict[str, float]:
        """val/* of one checkpoint's adapter (the inline validator's code on this model)."""
        validator = _resolved(request.validator)
        validator.use_judge(self._judge(validator.e))
        with self._adapted(request.model, request.seed, request.files) as (tokenizer, model):
            return validator(model, tokenizer, 0, 1)

    def evaluate(self, request: EvaluationRequest) -> tuple[list[dict], dict[str, float]]:
        """A trial's evaluation of one adapter: its answers and eval metrics."""
        from tasft_ray.evaluation.safety import evaluate_model

        cfg = Config.from_dict(request.config, check_files=False)
        with self._adapted(cfg.model, cfg.train.seed, request.files) as (tokenizer, model):
            return evaluate_model(cfg, model, tokenizer, _resolved(request.data),
                                  cfg.generate.batch_size, request.with_quality,
                                  self._judge(cfg.eval), request.progress)  # fmt: skip


def _resolved(value: Any) -> Any:
    """The value, fetched from Ray's object store when it is a reference to one."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


@dataclass
class ValidationRequest:
    model: ModelConfig
    seed: int  # train.seed: the tiny model is initialised from it
    files: dict[str, bytes]
    validator: Any  # evaluation.validation.Validator, or an ObjectRef to one


@dataclass
class EvaluationRequest:
    config: dict  # the trial's whole config, dumped
    files: dict[str, bytes]
    data: Any  # evaluation.data.EvalData, or an ObjectRef to it
    with_quality: bool
    progress: Any = None  # evaluation.safety.AnswerProgress: to the trial's run


@dataclass
class Stage:
    """The evaluator actors of a sweep, shared by its trials (picklable: Tune ships it to
    every trial, a trial ships its evaluator's handle to its Train workers)."""

    evaluators: list[Any] = field(default_factory=list)

    def for_trial(self, key: str) -> Any:
        """The evaluator a trial sends its requests to: one per trial, spread by its id."""
        return self.evaluators[zlib.crc32(key.encode()) % len(self.evaluators)]


def start_stage(s: EvalStageConfig) -> Stage:
    """``s.evaluators`` evaluator actors (Ray must be up). They die with the driver; a node that
    dies takes its evaluator, which Ray starts again elsewhere and retries its requests on."""
    import ray

    actor = ray.remote(
        num_cpus=s.cpus_per_evaluator, num_gpus=s.gpus_per_evaluator,
        max_restarts=-1, max_task_retries=-1,
    )(Evaluator)  # fmt: skip
    threads = max(1, int(s.cpus_per_evaluator))
    evaluators = [actor.remote(threads) for _ in range(s.evaluators)]
    log.info("evaluation stage: %d evaluator(s), %g CPU and %g GPU each", s.evaluators,
             s.cpus_per_evaluator, s.gpus_per_evaluator)  # fmt: skip
    return Stage(evaluators)


@dataclass
class StageValidator:
    """A trial's validation through the stage, as its training workers see it: ``submit``
    hands one adapter over and returns at once (an ObjectRef to its val/* metrics)."""

    evaluator: Any
    model: ModelConfig
    seed: int
    validator: Any  # an ObjectRef to the trial's Validator
    asynchronous: bool = True  # what training.validation tells the two kinds apart by

    def submit(self, files: dict[str, bytes]):
        request = ValidationRequest(self.model, self.seed, files, self.validator)
        return self.evaluator.validate.remote(request)
