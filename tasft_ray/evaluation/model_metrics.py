"""Metrics scored on the in-memory model rather than on its sampled answers: the AlpacaEval
win rate, held-out response likelihood and lm-eval quality."""

from __future__ import annotations

from dataclasses import asdict

from tasft_ray.config import Config
from tasft_ray.evaluation.alpaca_eval import win_rate
from tasft_ray.evaluation.data import EvalData
from tasft_ray.evaluation.likelihood import likelihood_metrics
from tasft_ray.evaluation.quality import continuation_lm, run_quality, unmerged_lm


def model_metrics(
    cfg: Config, model, tokenizer, data: EvalData | None = None, merge: bool = True
) -> tuple[dict[str, float], list[dict]]:
    """Scored on the in-memory model: the AlpacaEval win rate when a judge is configured
    (``evaluation.alpaca_eval``; its verdict rows are returned), held-out response NLL
    (``eval.likelihood``), then lm-eval quality — last, because with ``merge`` it merges a peft
    adapter into the weights (faster; but a model that serves other adapters afterwards, as
    the shared evaluators' does, must keep it apart). ``data``: the examples, already loaded
    (else read from the data root)."""
    e, root = cfg.eval, cfg.data_root
    metrics, verdicts = win_rate(e.alpaca_eval, model, tokenizer, root, refs=data and data.alpaca)
    # before quality merges the adapter into the weights
    sets = data.likelihood if data else None
    metrics |= likelihood_metrics(e, model, tokenizer, cfg.data.max_length, root, sets)
    if e.quality_tasks:
        lm = continuation_lm(model, tokenizer) if merge else unmerged_lm(model, tokenizer)
        docs = data.quality if data else None
        metrics |= run_quality(lm, e.quality_tasks, root, e.quality_limit, docs)
    return metrics, [asdict(v) | {"win": v.win} for v in verdicts]
