"""Every example an evaluation reads — its prompts, held-out likelihood sets, quality docs and
AlpacaEval references — in one object, so a sweep's driver can load them once and ship them to
its trials through Ray (the trials then read no data file)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tasft_ray.config import Config, ConfigError, EvalConfig
from tasft_ray.data.benchmarks import HARM, VAL, benchmark_prompts, check_benchmarks, kinds
from tasft_ray.data.records import Example
from tasft_ray.evaluation.alpaca_eval import reference_outputs
from tasft_ray.evaluation.likelihood import likelihood_sets
from tasft_ray.evaluation.quality import quality_docs

log = logging.getLogger(__name__)


def eval_prompts(e: EvalConfig, root: str | None) -> list[dict[str, str]]:
    """The prompts of eval.benchmarks (first eval.max_prompts of each), ids unique per benchmark."""
    return benchmark_prompts(e.benchmarks, e.max_prompts, root, "eval.benchmarks")


def validation_prompts(e: EvalConfig, root: str | None) -> list[dict[str, str]]:
    """eval.validation.benchmarks' prompts (source ``val/<benchmark>``) minus any prompt text
    that is also an evaluation prompt: λ is chosen on answers the reported numbers never saw."""
    not_harm = [b for b, kind in kinds(e.validation.benchmarks).items() if kind != HARM]
    check_benchmarks(e.validation.benchmarks, "eval.validation.benchmarks")
    if not_harm:
        raise ConfigError(f"eval.validation.benchmarks: {not_harm} are not harm benchmarks")
    v = e.validation
    rows = benchmark_prompts(v.benchmarks, v.max_prompts, root, "eval.validation.benchmarks")
    seen = {(p["instruction"], p["input"]) for p in eval_prompts(e, root)}
    kept = [
        dict(r, source=f"{VAL}{r['source']}")
        for r in rows
        if (r["instruction"], r["input"]) not in seen
    ]
    if len(kept) < len(rows):
        log.info(
            "eval.validation.benchmarks: dropped %d prompt(s) that are also evaluation prompts",
            len(rows) - len(kept),
        )
    return kept


@dataclass
class EvalData:
    prompts: list[dict]  # eval.benchmarks, then eval.validation.benchmarks (source val/<benchmark>)
    likelihood: dict[str, list[Example]]
    quality: dict[str, list[Example]]
    alpaca: list[Example] | None  # None: no AlpacaEval judge configured


def load_eval_data(cfg: Config, validation: bool = True) -> EvalData:
    """All of ``cfg.eval``'s data, from the data root (``cfg.data_root``); ``validation``:
    with the validation prompts (a sweep's; `tasft-ray evaluate` answers eval.benchmarks)."""
    e, root = cfg.eval, cfg.data_root
    return EvalData(
        prompts=eval_prompts(e, root) + (validation_prompts(e, root) if validation else []),
        likelihood=likelihood_sets(e, root),
        quality={t: quality_docs(t, root, e.quality_limit) for t in e.quality_tasks},
        alpaca=reference_outputs(e.alpaca_eval, root) if e.alpaca_eval.judge_model else None,
    )
