"""The ``eval`` section: benchmarks, judges, quality, likelihood and AlpacaEval, and
``eval.validation``, the held-out split that sweeps score during training to choose λ."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field, model_validator

from tasft_ray.config.base import JudgeName, Section
from tasft_ray.config.data import Benchmark, SourceConfig
from tasft_ray.config.generate import SamplingConfig

log = logging.getLogger(__name__)


class AlpacaEvalConfig(Section):
    """AlpacaEval win rate against reference outputs, judged pairwise by an LLM (optional)."""

    judge_model: str | None = Field(
        None,
        description="Chat model of an OpenAI-compatible API (e.g. gpt-4o-mini); None: skipped.",
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (None: OpenAI; key from OPENAI_API_KEY)."
    )
    reference: Literal["alpaca_eval", "alpaca_eval_gpt4"] = Field(
        "alpaca_eval", description="Reference outputs: text-davinci-003 (1.0) or GPT-4 (2.0)."
    )
    max_instructions: int | None = Field(100, ge=1, description="First N of 805 (None: all).")
    max_new_tokens: int = Field(256, ge=1)
    seed: int = Field(0, description="Seeds which side (a or b) the model's output is shown on.")


class ValidationConfig(Section):
    """Validation during training: before the first step and every ``every`` steps, each trial
    scores its current adapter on a held-out split (``benchmarks`` harm prompts, ``safe``
    XSTest-safe prompts, ``quality_limit`` docs per quality task past the reported ones) and
    reports val/* metrics, which a sweep's objective and scheduler read."""

    every: int = Field(
        0,
        ge=0,
        description="Steps between validations (a multiple of train.checkpoint_every; 0: off).",
    )
    benchmarks: list[Benchmark] = Field(
        default_factory=list,
        description="Harm benchmarks answered only to choose λ (logged as val/*; the report's "
        "best-λ rule uses them): tuning on the reported prompts would flatter every method. "
        "Prompts also in eval.benchmarks are dropped, so the splits are disjoint.",
    )
    max_prompts: int | None = Field(None, ge=1, description="Per benchmark (None: all).")
    safe: int = Field(10, ge=0, description="XSTest-safe prompts per validation (over-refusal).")
    quality_limit: int = Field(
        10, ge=0, description="Docs per quality task per validation (after those reported)."
    )


class EvalStageConfig(Section):
    """Where a sweep's trials are evaluated (validation during training and the final
    evaluation): each on its own training workers (``inline``), or by evaluator actors the
    sweep starts once and all trials share (``shared``), each holding the base model once and
    applying every trial's adapter to it while the trial goes on training."""

    mode: Literal["inline", "shared"] = Field(
        "inline",
        description="inline: a trial validates on its training workers (which wait) and "
        "evaluates its final adapter in its own process; shared: the sweep's evaluators do "
        "both while trials keep training.",
    )
    evaluators: int = Field(1, ge=1, description="Evaluator actors (shared), each one model copy.")
    cpus_per_evaluator: float = Field(
        1.0, gt=0, description="Logical CPUs each evaluator holds (and torch threads it runs)."
    )
    gpus_per_evaluator: float = Field(0.0, ge=0, description="GPUs each evaluator holds.")
    max_pending: int = Field(
        2,
        ge=1,
        description="Validations a trial may have in flight before its training waits for "
        "the oldest (the stage is behind; the wait is logged as val/blocked_seconds).",
    )


# eval.<old flat key> -> eval.validation.<key>
RENAMED = {
    "every": "every",
    "validation_max_prompts": "max_prompts",
    "validation_safe": "safe",
    "validation_quality_limit": "quality_limit",
}


class EvalConfig(Section):
    """`tasft-ray evaluate`: safety and over-refusal of base + adapter (generation settings
    such as batch_size and num_actors come from the generate section)."""

    benchmarks: list[Benchmark] = Field(
        default_factory=lambda: [
            "i_malicious",
            "i_cona",
            "i_controversial",
            "harmfulq",
            "xstest_safe",
            "xstest_unsafe",
        ],
        description="Names in tasft_ray.data.benchmarks (the paper's 518 prompts + XSTest), "
        "or prompt sets of one's own: {path: prompts.csv, format: csv, fields: {instruction: "
        "forbidden_prompt}, name: mine, kind: harm}.",
    )
    max_prompts: int | None = Field(None, ge=1, description="Per benchmark (None: all).")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(do_sample=False),
        description="Greedy by default, so an evaluation is repeatable.",
    )
    judge: JudgeName = Field("offline", description="Harm judge (tasft_ray.judges).")
    judges: list[JudgeName] = Field(
        default_factory=list,
        description="More judges that score every answer beside eval.judge (whose verdict the "
        "metrics use): their harmful rates and pairwise agreement (Cohen's κ) are logged.",
    )
    judges_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Options of each of eval.judges, by name."
    )
    judge_options: dict[str, Any] = Field(default_factory=dict)
    adapter: str | None = Field(
        None,
        description="LoRA adapter folder, mlflow:RUN_ID, or a registered model "
        "models:/NAME@ALIAS (None: the base model).",
    )
    output_dir: str = Field("runs/eval", description="responses.jsonl and metrics.json go here.")
    parent_run_id: str | None = Field(None, description="Nest the MLflow run under this run.")
    quality_tasks: list[str] = Field(
        default_factory=lambda: ["piqa", "boolq", "openbookqa"],
        description="lm-eval log-likelihood accuracy on the shipped sets ([] to skip).",
    )
    quality_limit: int | None = Field(None, ge=1, description="Docs per quality task (None: all).")
    in_sweep: bool = Field(
        False,
        description="Each Tune trial evaluates its final adapter in-process (eval.benchmarks, "
        "eval.max_prompts) and logs eval/* metrics + responses.jsonl to its child run.",
    )
    likelihood: dict[str, SourceConfig] = Field(
        default_factory=dict,
        description="label -> held-out responses whose mean per-token NLL under the final model "
        "is logged as nll/<label>, e.g. {harmful: {name: jbb_jailbroken}, refusal: {name: "
        "jbb_refused}}: the penalty's effect on the distribution, free of sampling noise.",
    )
    likelihood_max: int | None = Field(100, ge=1, description="Examples per likelihood set.")
    alpaca_eval: AlpacaEvalConfig = Field(default_factory=AlpacaEvalConfig)
    checkpoints: Literal["final", "all"] = Field(
        "final",
        description="In the sweep: evaluate the final adapter, or every checkpoint Ray keeps "
        "(train.checkpoint_every, train.keep_checkpoints) for harm-vs-step curves; eval/* are "
        "logged at each checkpoint's step, quality on the final adapter only.",
    )
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig,
        description="Validation during training (sweeps): the held-out split and how often.",
    )
    stage: EvalStageConfig = Field(
        default_factory=EvalStageConfig,
        description="Where a sweep's validation and final evaluation run (inline or shared).",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_validation_keys(cls, raw: Any) -> Any:
        """The flat keys these were before eval.validation became a section (saved sweep
        configs and users' YAML files still have them): moved, with one warning each."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        if isinstance(raw.get("validation"), list):  # eval.validation: [advbench]
            raw["validation"] = {"benchmarks": raw["validation"]}
            log.warning("eval.validation: a list of benchmarks is now eval.validation.benchmarks")
        for old, new in RENAMED.items():
            if old not in raw:
                continue
            section = raw.setdefault("validation", {})
            if not isinstance(section, dict):
                break  # the section's own validation reports it
            if new in section:
                raise ValueError(f"eval.{old} and eval.validation.{new} both set; keep the second")
            section[new] = raw.pop(old)
            log.warning("eval.%s is now eval.validation.%s", old, new)
        return raw

    @model_validator(mode="after")
    def _judges_once_each(self) -> EvalConfig:
        seen = [self.judge, *self.judges]
        twice = sorted({n for n in seen if seen.count(n) > 1})
        if twice:
            raise ValueError(
                f"eval.judges: {', '.join(twice)} listed twice (eval.judge={self.judge} "
                "already scores every answer)"
            )
        stray = sorted(set(self.judges_options) - set(self.judges))
        if stray:
            raise ValueError(
                f"eval.judges_options: {', '.join(stray)} not in eval.judges "
                f"({', '.join(self.judges) or 'empty'})"
            )
        return self

    def extra_judges(self) -> dict[str, dict[str, Any]]:
        """The judges scoring beside eval.judge, name -> options."""
        return {n: dict(self.judges_options.get(n, {})) for n in self.judges}
