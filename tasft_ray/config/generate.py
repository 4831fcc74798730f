"""The ``generate`` section: decoding, the generation run (toxic prompts -> answers -> judge ->
harmful pairs) and its contrastive variant."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasft_ray.config.base import JudgeName, Section
from tasft_ray.config.data import SourceConfig
from tasft_ray.config.model import ModelConfig


class SamplingConfig(Section):
    """Decoding settings (defaults: STL's temperature 0.1, top_p 0.75, 128 new tokens)."""

    max_new_tokens: int = Field(128, ge=1)
    do_sample: bool = Field(True, description="False: greedy decoding (deterministic).")
    temperature: float = Field(0.1, gt=0)
    top_p: float = Field(0.75, gt=0, le=1)
    seed: int = Field(0, description="Seeds sampling, per batch.")


class ContrastiveConfig(Section):
    """`tasft-ray generate --contrastive` (paper §4.3.6, after Cui et al. 2024): toxic words
    from the mixture's toxic prompts, ``per_word`` benign prompts per word written by an
    instruction model, answered by the (non-refusing) model, refusals dropped."""

    per_word: int = Field(5, ge=1, description="Prompts written per toxic word (paper: 5).")
    max_words: int | None = Field(None, ge=1, description="Use at most this many words.")
    min_z: float = Field(
        1.96,
        gt=0,
        description="A word is toxic when its log-odds z-score (toxic prompts vs data.safe "
        "prompts, informative Dirichlet prior) is at least this.",
    )
    writer: ModelConfig | None = Field(
        None,
        description="Instruction model that writes the prompts (None: the model section), e.g. "
        "{name: smollm2-135m-instruct}.",
    )
    writer_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(do_sample=True, temperature=0.9, max_new_tokens=48),
        description="Sampled, so the prompts of one word differ.",
    )
    output: str = Field(
        "data/generated/contrastive.jsonl",
        description="Kept rows (a generated data set: data.contrastive); every row of both "
        "steps, kept or not, goes to OUTPUT.work.jsonl, the resume record.",
    )


class GenerateConfig(Section):
    """`tasft-ray generate`: toxic prompts -> model answers -> judge -> harmful pairs."""

    prompts: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(name="harmfulqa")],
        description="Sources of toxic prompts (responses in them are ignored).",
    )
    max_prompts: int | None = Field(None, ge=1, description="Use at most this many prompts.")
    shuffle: bool = Field(
        True,
        description="Seeded shuffle (sampling.seed) of the prompts before max_prompts/target, so "
        "a target is met on a mix of sources and topics, not the first file's first topic.",
    )
    exclude: list[SourceConfig] = Field(
        default_factory=list,
        description="Prompts never to use (e.g. the evaluation sets), matched on the text.",
    )
    adapter: str | None = Field(
        None,
        description="LoRA adapter folder, mlflow:RUN_ID for a run's logged adapter, or "
        "models:/NAME@ALIAS for a registered one.",
    )
    sft_first: bool = Field(
        False,
        description="First SFT the base model on data.safe (method sft, the train section), as "
        "the paper does, and generate with that adapter.",
    )
    backend: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="auto: vLLM through ray.data.llm when it is installed and a GPU is "
        "present, else batched HF generate in a Ray Data actor pool.",
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generate call.")
    num_actors: int = Field(1, ge=1, description="Generator actors (one model copy each).")
    num_gpus_per_actor: float = Field(0.0, ge=0)
    cpus_per_actor: int = Field(
        1, ge=1, description="Logical CPUs (and torch threads) per generator actor."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    judge: JudgeName = Field("offline", description="Harm judge (tasft_ray.judges).")
    judge_options: dict[str, Any] = Field(default_factory=dict)
    target: int | None = Field(
        None, ge=1, description="Stop once this many harmful pairs are kept (else all prompts)."
    )
    output: str = Field("data/generated/harmful.jsonl", description="JSONL output path.")
    flush_every: int = Field(8, ge=1, description="Rows between atomic rewrites of the output.")
    contrastive: ContrastiveConfig = Field(
        default_factory=ContrastiveConfig,
        description="`tasft-ray generate --contrastive` settings.",
    )
