"""Answers from a causal LM with Hugging Face ``generate``: the batched call both the Ray Data
actor and in-process evaluation use, and the actor that holds one model copy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tasft_ray.accelerator import torch_device
from tasft_ray.config import ModelConfig, SamplingConfig
from tasft_ray.data.template import format_prompt
from tasft_ray.models import load_model


def generate_responses(
    model,
    tokenizer,
    instructions: list[str],
    inputs: list[str],
    sampling: SamplingConfig,
    seed: int | None = None,
) -> list[str]:
    """One batched ``generate`` call; the only generation code both backends' HF path shares."""
    prompts = [format_prompt(i, x) for i, x in zip(instructions, inputs, strict=True)]
    tokenizer.padding_side = "left"  # decoder-only: pad on the left so answers start aligned
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if sampling.do_sample:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        torch.manual_seed(sampling.seed if seed is None else seed)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None)
    with torch.no_grad():
        out = model.generate(**enc, **kwargs)  # (B, prompt + new)
    new_tokens = out[:, enc["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of a batch, from its first prompt's id: the same in the Ray Data actors,
    in a trial's evaluation and in validation, so the same batch is sampled alike everywhere."""
    return seed + int(str(first_id)[:8], 16)


def load_generator_model(
    model_cfg: ModelConfig, adapter: str | None, device: str = "cpu", seed: int = 0
):
    """Base model (+ LoRA adapter) in eval mode. ``seed``: the tiny model's initialisation
    (the run that trained the adapter used train.seed); pretrained weights ignore it."""
    tokenizer, model = load_model(model_cfg, seed)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return tokenizer, model.to(device).eval()


class HFGenerator:
    """Ray Data actor: the model loads once in __init__, each __call__ answers one batch."""

    def __init__(self, model_cfg: dict, adapter: str | None, sampling: dict, threads: int = 1):
        torch.set_num_threads(threads)  # Ray pins OMP_NUM_THREADS=1 in every worker
        device = torch_device()
        self.tokenizer, self.model = load_generator_model(
            ModelConfig.model_validate(model_cfg), adapter, device
        )
        self.sampling = SamplingConfig.model_validate(sampling)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seed = batch_seed(self.sampling.seed, batch["id"][0])
        responses = generate_responses(
            self.model,
            self.tokenizer,
            list(batch["instruction"]),
            list(batch["input"]),
            self.sampling,
            seed,
        )
        return {**batch, "response": np.array(responses, dtype=object)}
