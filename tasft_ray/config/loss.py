"""The ``loss`` section: the method (eq. 6/8), λ, and how the loss is computed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tasft_ray.config.base import JudgeName, Section
from tasft_ray.setting import Method


class LossConfig(Section):
    method: Method = Field(
        "emd",
        description="sft | emd | nlcl | kto | stl | star (STAR-DSS, Peng et al. 2025, "
        "arXiv 2505.17196: guardrail-scored partial responses weigh SFT against a KL to the "
        "base model, token by token).",
    )
    lam: float = Field(1.0, ge=0, description="Penalty weight λ of eq. 6/8 (Table 4).")
    reduction: Literal["token_mean", "sequence_sum"] = Field(
        "token_mean",
        description="token_mean: mean over response tokens; sequence_sum: the paper's literal "
        "eq. 1/5 (sum over tokens, mean over sequences).",
    )
    emd_embedding: Literal["input", "output"] = Field(
        "input", description="EMD cost embeddings: input embedding matrix or the lm_head."
    )
    emd_dtype: Literal["model", "bfloat16"] = Field(
        "model",
        description="dtype of the EMD cost embeddings and so of the penalty's two V x d "
        "matmuls (expected embedding, its gradient): model (as loaded) or bfloat16 (half the "
        "copy; faster matmuls on a CPU with AVX512-BF16: bench/RESULTS.md).",
    )
    nlcl_variant: Literal["sequence", "token"] = Field(
        "sequence",
        description="sequence: eq. 7 on the whole response; token: per-token unlikelihood.",
    )
    chunk_size: int = Field(1024, ge=1, description="Response tokens per loss chunk.")
    impl: Literal["fused", "reference"] = Field(
        "fused",
        description="fused: logits built from the final hidden states one chunk of response "
        "positions at a time (no B x T x V tensor); reference: the model's full logits. "
        "Under DeepSpeed ZeRO-3 the partitioned output layer is gathered once per micro-batch "
        "for the loss and released before backward (bench/RESULTS.md).",
    )
    kto_beta: float = Field(0.1, gt=0, description="KTO beta.")
    kto_desirable_weight: float = Field(1.0, ge=0, description="KTO λ_D.")
    kto_undesirable_weight: float = Field(1.0, ge=0, description="KTO λ_U.")
    star_judge: JudgeName = Field(
        "offline",
        description="STAR-DSS (method star): the guardrail that scores each partial response "
        "(tasft_ray.judges: offline, or a guard model such as llama-guard); a token's STAR "
        "score is 1 - the judge's harm score of its segment's prefix.",
    )
    star_judge_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of loss.star_judge (as eval.judge_options)."
    )
    star_segment_tokens: int = Field(
        5,
        ge=1,
        le=4096,
        description="STAR segment length M in response tokens: the guardrail scores the "
        "response up to the end of every segment (the authors' runs: 5).",
    )
    star_kl_weight: float = Field(
        0.5,
        ge=0,
        description="STAR-DSS λ_KL: weight of the per-token KL to the base model (k2 "
        "estimate) on unsafe tokens (the authors' runs: 0.5).",
    )
    star_score_batch: int = Field(
        256, ge=1, le=65536, description="Partial responses per guardrail call while scoring."
    )
