"""Harm judges and refusal detectors for (prompt, response) pairs.

TA-SFT needs a judge twice: to pick the *harmful* responses that the penalty pushes away from
(``tasft-ray generate``) and to measure how harmful a fine-tuned model's answers are. The paper's
judges are a DeBERTa harmfulness regressor and the OpenAI moderation API; neither is reachable on
an offline machine, so three interchangeable judges sit behind one interface (``base``):

- ``offline`` (default): MiniLM pair embedding + a committed logistic head (``offline``).
- ``deberta``: the STL regressor ``safepaca/absolute-harmfulness-predictor-redteam``.
- ``openai-moderation``: the OpenAI moderation endpoint (``moderation``).

Refusal detection is separate (``refusal``). ``load_judge`` / ``load_refusal_detector`` build
them by name (``registry``).
"""

from tasft_ray.judges.base import HarmJudge, JudgeError, strip_template
from tasft_ray.judges.deberta import DebertaJudge
from tasft_ray.judges.moderation import Moderation, OpenAIModerationJudge
from tasft_ray.judges.offline import (
    HEAD_FORMAT,
    LinearHead,
    OfflineJudge,
    embed,
    load_encoder,
    load_heads,
    pair_features,
)
from tasft_ray.judges.refusal import KeywordRefusalDetector, RefusalDetector
from tasft_ray.judges.registry import JUDGES, check_judge, load_judge, load_refusal_detector

__all__ = [
    "HEAD_FORMAT",
    "JUDGES",
    "DebertaJudge",
    "HarmJudge",
    "JudgeError",
    "KeywordRefusalDetector",
    "LinearHead",
    "Moderation",
    "OfflineJudge",
    "OpenAIModerationJudge",
    "RefusalDetector",
    "check_judge",
    "embed",
    "load_encoder",
    "load_heads",
    "load_judge",
    "load_refusal_detector",
    "pair_features",
    "strip_template",
]
