"""What the sweep driver prepares once and ships to every trial through Ray's object store: the
tokenised training mixtures and the evaluation data (and, with ``eval.stage.mode: shared``,
the handles of the evaluation stage the driver starts). Trials and their Train workers read no data
file, data root or cache, on whatever node they run; the driver alone needs the data.

One mixture per distinct (model tokenizer, data section, method, seed — and for STAR-DSS its
guardrail and segment length) among the sweep's trial configs, one evaluation set per distinct
eval section; trials that share them share one copy. ``training_mixture`` builds one, for the
driver here and for ``tasft-ray train``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tasft_ray.config import Config, ConfigError
from tasft_ray.data.lineage import DataInput
from tasft_ray.data.mixture import Mixture, build_mixture
from tasft_ray.data.star import star_scores
from tasft_ray.evaluation.safety import load_eval_data
from tasft_ray.evaluation.validation import load_validation_data
from tasft_ray.judges import check_judge, load_judge
from tasft_ray.models import load_tokenizer

log = logging.getLogger(__name__)


def mixture_key(cfg: Config) -> str:
    key = {
        "model": [cfg.model.name, cfg.model.revision],
        "data": cfg.data.model_dump(mode="json"),
        "method": cfg.loss.method,
        "seed": cfg.train.seed,
    }
    if cfg.loss.method == "star":  # the STAR scores shipped with the rows
        lc = cfg.loss
        key["star"] = [lc.star_judge, lc.star_judge_options, lc.star_segment_tokens]
    return json.dumps(key, sort_keys=True)


def training_mixture(cfg: Config, tokenizer=None) -> Mixture:
    """The mixture a run trains on, built the one way the sweep driver and ``tasft-ray train``
    share: sources selected and tokenised (``data.mixture``), and for ``loss.method=star`` every
    response scored segment by segment by ``loss.star_judge`` (``data.star``), once."""
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.model)
    mixture = build_mixture(cfg.data, cfg.loss.method, tokenizer, cfg.train.seed, cfg.data_root)
    if cfg.loss.method == "star":
        lc = cfg.loss
        check_judge(lc.star_judge, lc.star_judge_options, "loss.star_judge")
        judge = load_judge(lc.star_judge, **lc.star_judge_options)
        mixture.safety = star_scores(
            mixture, tokenizer, judge, lc.star_segment_tokens, lc.star_score_batch
        )
    return mixture


def eval_key(cfg: Config) -> str:
    return json.dumps(cfg.eval.model_dump(mode="json"), sort_keys=True)


@dataclass
class Prepared:
    """The prepared data by key: values as ``prepare`` builds them, object refs once shipped
    (held by the driver for the sweep's lifetime, which keeps them)."""

    mixtures: dict[str, Any] = field(default_factory=dict)
    evals: dict[str, Any] = field(default_factory=dict)
    validations: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, list[DataInput]] = field(default_factory=dict)  # each mixture's sources
    stage: Any = None  # evaluation.stage.Stage: the sweep's shared evaluators, if it has them

    def mixture(self, cfg: Config):
        return _prepared(self.mixtures, mixture_key(cfg), "training data")

    def data_inputs(self, cfg: Config) -> list[DataInput]:
        return self.inputs.get(mixture_key(cfg), [])

    def eval_data(self, cfg: Config):
        return self.evals.get(eval_key(cfg))

    def validation_data(self, cfg: Config):
        return _prepared(self.validations, eval_key(cfg), "validation data")

    def ship(self) -> Prepared:
        """The same, each value put once into Ray's object store (Ray must be up): what the
        trials get, on whatever node they run."""
        import ray

        def put(values: dict[str, Any]) -> dict[str, Any]:
            return {k: ray.put(v) for k, v in values.items()}

        return Prepared(put(self.mixtures), put(self.evals), put(self.validations), self.inputs)


def _prepared(refs: dict[str, Any], key: str, what: str):
    """A trial's keys are the driver's unless the two run different code (a node on another
    tasft-ray version, or the sources edited under a running sweep)."""
    try:
        return refs[key]
    except KeyError:
        raise ConfigError(
            f"a trial's {what} was not prepared by the driver: the driver and this node run "
            "different versions of tasft-ray"
        ) from None


def prepare(configs: list[Config]) -> Prepared:
    """Load, select and tokenise each distinct mixture (and evaluation set) once, before Ray
    starts: bad data fails the sweep before anything is started or written. ``ship`` then
    hands them to Ray's object store."""
    start = time.perf_counter()
    out, tokenizers = Prepared(), {}
    for cfg in configs:
        key = mixture_key(cfg)
        if key not in out.mixtures:
            model = (cfg.model.name, cfg.model.revision)
            if model not in tokenizers:
                tokenizers[model] = load_tokenizer(cfg.model)
            mixture = training_mixture(cfg, tokenizers[model])
            out.mixtures[key] = mixture
            out.inputs[key] = mixture.inputs
        if cfg.eval.in_sweep and eval_key(cfg) not in out.evals:
            out.evals[eval_key(cfg)] = load_eval_data(cfg)
        if cfg.eval.validation.every and eval_key(cfg) not in out.validations:
            out.validations[eval_key(cfg)] = load_validation_data(cfg)
    log.info(
        "data prepared for %d trial config(s): %d training mixture(s), %d evaluation and %d "
        "validation set(s), %.1f s; the trials get them through Ray",
        len(configs), len(out.mixtures), len(out.evals), len(out.validations),
        time.perf_counter() - start,
    )  # fmt: skip
    return out
