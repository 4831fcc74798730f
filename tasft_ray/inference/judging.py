"""The judge stage of the answer pipeline: harm judge + refusal detector on each batch."""

from __future__ import annotations

import numpy as np

from tasft_ray.data.template import format_prompt
from tasft_ray.judges import load_judge, load_refusal_detector


class JudgeStage:
    """Ray Data actor (or a plain callable in-process): judge and detector load once."""

    def __init__(self, judge: str, options: dict):
        self.name = judge
        self.judge = load_judge(judge, **options)
        self.refusals = load_refusal_detector()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [
            format_prompt(i, x) for i, x in zip(batch["instruction"], batch["input"], strict=True)
        ]
        responses = [str(r) for r in batch["response"]]
        scores = self.judge.score(prompts, responses)
        harmful = self.judge.harmful(prompts, responses)
        return {
            **batch,
            "judge": np.array([self.name] * len(responses), dtype=object),
            "score": np.array(scores, dtype=float),
            "harmful": np.array(harmful, dtype=bool),
            "refused": np.array(self.refusals.refused(responses), dtype=bool),
        }
