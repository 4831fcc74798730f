"""The toxic prompts `tasft-ray generate` answers, each with an id stable across runs and
machines (the resume key)."""

from __future__ import annotations

import hashlib
import random

from tasft_ray.config import GenerateConfig
from tasft_ray.data.sources import load_source


def prompt_id(instruction: str, input_text: str = "") -> str:
    """Stable across runs and machines: the resume key of a prompt."""
    return hashlib.sha1(f"{instruction}\x00{input_text}".encode()).hexdigest()[:16]


def load_prompts(g: GenerateConfig, root: str | None) -> list[dict[str, str]]:
    """Unique toxic prompts from generate.prompts, minus generate.exclude (seeded shuffle)."""
    excluded = {
        prompt_id(e.instruction, e.input)
        for i, src in enumerate(g.exclude)
        for e in load_source(src, root, f"generate.exclude[{i}]")
    }
    rows: dict[str, dict[str, str]] = {}
    for i, src in enumerate(g.prompts):
        origin = src.name or src.path or src.url or src.hf or ""
        for ex in load_source(src, root, f"generate.prompts[{i}]"):
            pid = prompt_id(ex.instruction, ex.input)
            if pid not in excluded and pid not in rows:
                rows[pid] = {
                    "id": pid,
                    "instruction": ex.instruction,
                    "input": ex.input,
                    "source": origin,
                }
    prompts = list(rows.values())
    if g.shuffle:
        random.Random(g.sampling.seed).shuffle(prompts)  # same order on resume
    return prompts[: g.max_prompts] if g.max_prompts else prompts
