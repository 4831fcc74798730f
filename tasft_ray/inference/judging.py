"""The judge stage of the answer pipeline: harm judge + refusal detector on each batch."""

from __future__ import annotations

import numpy as np

from tasft_ray.data.template import format_prompt
from tasft_ray.judges import load_judge, load_refusal_detector

EXTRA = "judge/"  # column prefix of the extra judges: judge/<name>/score, judge/<name>/harmful


class JudgeStage:
    """Ray Data actor (or a plain callable in-process): judges and detector load once.

    ``judge`` gives each row's verdict; each of ``extra`` (name -> options) scores the same
    answers beside it, in columns ``judge/<name>/score`` and ``judge/<name>/harmful``, so
    their agreement can be measured."""

    def __init__(self, judge: str, options: dict, extra: dict[str, dict] | None = None):
        self.name = judge
        self.judge = load_judge(judge, **options)
        self.extra = {n: load_judge(n, **o) for n, o in (extra or {}).items()}
        self.refusals = load_refusal_detector()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [
            format_prompt(i, x) for i, x in zip(batch["instruction"], batch["input"], strict=True)
        ]
        responses = [str(r) for r in batch["response"]]
        scores = self.judge.score(prompts, responses)
        harmful = self.judge.harmful(prompts, responses)
        out = {
            **batch,
            "judge": np.array([self.name] * len(responses), dtype=object),
            "score": np.array(scores, dtype=float),
            "harmful": np.array(harmful, dtype=bool),
            "refused": np.array(self.refusals.refused(responses), dtype=bool),
        }
        for name, judge in self.extra.items():
            out[f"{EXTRA}{name}/score"] = np.array(judge.score(prompts, responses), dtype=float)
            out[f"{EXTRA}{name}/harmful"] = np.array(judge.harmful(prompts, responses), dtype=bool)
        return out
