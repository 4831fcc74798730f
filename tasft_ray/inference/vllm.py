"""The vLLM backend through ``ray.data.llm`` (GPU only; never imported on CPU machines)."""

from __future__ import annotations

import hashlib

from tasft_ray.accelerator import vllm_available
from tasft_ray.config import ConfigError, ModelConfig, SamplingConfig
from tasft_ray.data.template import format_prompt
from tasft_ray.files import atomic_dir, cache_root
from tasft_ray.inference.generator import load_generator_model


def resolve_backend(backend: str) -> str:
    """``auto`` -> vllm where it can run, else hf; an explicit vllm that cannot run is an error."""
    if backend == "auto":
        return "vllm" if vllm_available() else "hf"
    if backend == "vllm" and not vllm_available():
        raise ConfigError("generate.backend=vllm needs a GPU and `pip install vllm`")
    return backend


def vllm_stage(ds, sampling: SamplingConfig, batch_size: int, num_actors: int, model_source: str):
    """Answers through a vLLM engine per actor; rows keep id/instruction/input/source."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    s = sampling
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=model_source,
            batch_size=batch_size,
            concurrency=num_actors,
            chat_template_stage=False,  # base models: the paper's Alpaca template, no chat
        ),
        preprocess=lambda row: {
            **row,
            "prompt": format_prompt(row["instruction"], row["input"]),
            "sampling_params": {
                "max_tokens": s.max_new_tokens,
                "temperature": s.temperature if s.do_sample else 0.0,
                "top_p": s.top_p if s.do_sample else 1.0,
                "seed": s.seed,
            },
        },
        postprocess=lambda row: (
            {k: row[k] for k in ("id", "instruction", "input", "source")}
            | {"response": row["generated_text"].strip()}
        ),
    )
    return processor(ds)


def merged_model_dir(model: ModelConfig, adapter: str | None) -> str:
    """vLLM takes one model folder: merge the LoRA adapter into the base once and save it."""
    if adapter is None and "/" in model.name and not model.name.startswith("gguf:"):
        return model.name
    key = hashlib.sha1(f"{model.name}:{adapter}".encode()).hexdigest()[:12]
    target = cache_root(model.cache_dir) / "merged" / key
    if not (target / "config.json").is_file():
        tokenizer, merged = load_generator_model(model, adapter)
        if adapter:
            merged = merged.merge_and_unload()
        with atomic_dir(target, replace=False) as tmp:
            merged.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return str(target)
