"""Validation during training: the adapter being trained, scored at checkpoints on held-out
prompts, so Tune can compare trials (and stop weak ones) by what the sweep is for — safety
without over-refusal or quality loss — instead of by a training loss that λ itself shifts.

What is scored, each split disjoint from what evaluation reports: the harm prompts of
``eval.validation.benchmarks`` (harmfulness), ``eval.validation.safe`` XSTest-safe prompts
(over-refusal), and ``eval.validation.quality_limit`` docs per quality task taken after the
reported ones (quality). The worker group shares the work: each rank answers and scores its
shard with its own replica of the model, then the ranks exchange their rows, so every rank
computes the same ``val/*`` metrics in about 1 / world of the time one rank would take.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from tasft_ray.config import Config, EvalConfig
from tasft_ray.data.benchmarks import VAL, benchmark_prompts
from tasft_ray.data.records import Example
from tasft_ray.evaluation.data import eval_prompts, validation_prompts
from tasft_ray.evaluation.degenerate import degenerate_flags
from tasft_ray.evaluation.quality import quality_docs, run_quality, unmerged_lm
from tasft_ray.inference.generator import batch_seed, generate_responses
from tasft_ray.inference.judging import JudgeStage
from tasft_ray.inference.pipeline import clean_row

log = logging.getLogger(__name__)

SAFE_SOURCE = f"{VAL}xstest_safe"


@dataclass
class ValidationData:
    """The validation split's examples, loaded once by the sweep's driver."""

    harm: list[dict]  # prompt rows, source val/<benchmark>
    safe: list[dict]  # XSTest-safe prompt rows, source val/xstest_safe
    quality: dict[str, list[Example]]  # task -> docs after the reported ones


def load_validation_data(cfg: Config) -> ValidationData:
    e, root = cfg.eval, cfg.data_root
    reported = {(p["instruction"], p["input"]) for p in eval_prompts(e, root)}
    safe_all = benchmark_prompts(["xstest_safe"], None, root, "eval.validation.safe")
    unseen = [p for p in safe_all if (p["instruction"], p["input"]) not in reported]
    if len(unseen) < e.validation.safe:  # every XSTest-safe prompt is reported (max_prompts)
        log.warning(
            "eval.validation.safe: only %d of the XSTest-safe prompts are not reported ones; "
            "validating over-refusal on the last %d, which evaluation reports too",
            len(unseen), e.validation.safe,
        )  # fmt: skip
        unseen = safe_all
    safe = unseen[len(unseen) - e.validation.safe :] if e.validation.safe else []
    start, k = e.quality_limit or 0, e.validation.quality_limit
    quality = {t: quality_docs(t, root, None)[start : start + k] for t in e.quality_tasks if k}
    return ValidationData(
        validation_prompts(e, root), [dict(p, source=SAFE_SOURCE) for p in safe], quality
    )


class Validator:
    """Called by every rank of the worker group at a validation step (picklable: shipped to
    the Train workers in their loop config; the judge loads on first use, once per worker)."""

    def __init__(self, e: EvalConfig, data: ValidationData, batch_size: int = 8):
        self.e, self.data, self.batch_size = e, data, batch_size
        self._judge: JudgeStage | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_judge": None}

    def use_judge(self, judge: JudgeStage) -> None:
        """Score with a judge already loaded (a shared evaluator keeps one for all trials)."""
        self._judge = judge

    def __call__(self, model, tokenizer, rank: int = 0, world: int = 1) -> dict[str, float]:
        start = time.perf_counter()
        was_training = model.training
        model.eval()
        # sampling seeds torch's generator: training's random stream must not depend on
        # whether (or where: inline or on the shared stage) the adapter was validated
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                rows = self._answers(model, tokenizer, rank, world)
                correct = self._quality(model, tokenizer, rank, world)
        finally:
            model.train(was_training)
        rows, correct = _gathered(rows, world), _summed(correct, world)
        return summarize_validation(rows, correct) | {"val/seconds": time.perf_counter() - start}

    def _answers(self, model, tokenizer, rank: int, world: int) -> list[dict]:
        prompts = (self.data.harm + self.data.safe)[rank::world]
        if self._judge is None:
            e = self.e
            self._judge = JudgeStage(e.judge, dict(e.judge_options), e.extra_judges())
        rows = []
        for i in range(0, len(prompts), self.batch_size):
            part = prompts[i : i + self.batch_size]
            batch = {k: [p[k] for p in part] for k in ("id", "source", "instruction", "input")}
            batch["response"] = generate_responses(
                model, tokenizer, batch["instruction"], batch["input"], self.e.sampling,
                seed=batch_seed(self.e.sampling.seed, batch["id"][0]),
            )  # fmt: skip
            judged = self._judge(batch)
            rows += [clean_row({k: v[j] for k, v in judged.items()}) for j in range(len(part))]
        return rows

    def _quality(self, model, tokenizer, rank: int, world: int) -> dict[str, list[float]]:
        """task -> [correct, docs] on this rank's shard of the quality docs."""
        docs = {t: d[rank::world] for t, d in self.data.quality.items()}
        docs = {t: d for t, d in docs.items() if d}
        if not docs:
            return {}
        acc = run_quality(unmerged_lm(model, tokenizer), list(docs), None, docs=docs)
        return {t: [acc[f"quality/{t}/acc"] * len(d), float(len(d))] for t, d in docs.items()}


def summarize_validation(rows: list[dict], correct: dict[str, list[float]]) -> dict[str, float]:
    """val/* from the judged rows of every rank and the quality counts summed over ranks."""
    harm = [r for r in rows if r["source"] != SAFE_SOURCE]
    safe = [r for r in rows if r["source"] == SAFE_SOURCE]
    out: dict[str, float] = {}
    if harm:
        out["val/n"] = len(harm)
        out["val/n_harmful"] = sum(bool(r["harmful"]) for r in harm)
        out["val/harmful_rate"] = out["val/n_harmful"] / len(harm)
        out["val/harm_score"] = sum(float(r["score"]) for r in harm) / len(harm)
    if safe:
        out["val/safe_refusal_rate"] = sum(bool(r["refused"]) for r in safe) / len(safe)
    if rows:
        out["val/degenerate_rate"] = sum(degenerate_flags(rows)) / len(rows)
    accs = [c / n for c, n in correct.values() if n]
    if accs:
        out["val/quality"] = sum(accs) / len(accs)
    return out


def _gathered(rows: list[dict], world: int) -> list[dict]:
    if world == 1 or not torch.distributed.is_initialized():
        return rows
    parts: list[list[dict]] = [[] for _ in range(world)]
    torch.distributed.all_gather_object(parts, rows)
    return [r for part in parts for r in part]


def _summed(correct: dict[str, list[float]], world: int) -> dict[str, list[float]]:
    if world == 1 or not torch.distributed.is_initialized():
        return correct
    parts: list[dict] = [{} for _ in range(world)]
    torch.distributed.all_gather_object(parts, correct)
    out: dict[str, list[float]] = {}
    for part in parts:
        for t, (c, n) in part.items():
            out[t] = [out.get(t, [0.0, 0.0])[0] + c, out.get(t, [0.0, 0.0])[1] + n]
    return out
