"""TA-SFT losses (Lu, Sinha, Varakantham 2024, https://arxiv.org/abs/2412.06843) and baselines.

Pure torch: no Ray, no I/O, no config objects, so every term can be checked against its maths.

Conventions shared by every function (Hugging Face causal-LM convention):
    logits: (B, T, V) next-token logits, ``logits[b, t]`` predicts ``labels[b, t + 1]``.
    labels: (B, T) token ids, ``ignore_index`` (default -100) on prompt and padding positions.
    kinds:  (B,) int, ``SAFE`` (0) for D_safety-unrelated rows, ``HARMFUL`` (1) for
            D_safety-related rows (toxic prompt + harmful response).

Every public loss takes either logits (B, T, V) — the *reference* path — or an ``OutputHead``
(final hidden states + the frozen output layer) — the *fused* path. ``chunks`` is the engine
both paths run on; each loss module supplies only its per-token formula (a ``TokenKernel``).

Call tree::

    tasft_loss ─┬─ sft_term ──── map_chunks(LOGPROB)             sft.py
                ├─ emd_term ──── map_chunks(EMD)                 emd.py
                ├─ nlcl_term ─── map_chunks(LOGPROB) + log1mexp  nlcl.py
                ├─ kto_loss(sequence log-probs, reference)       kto.py
                └─ star_values ─ map_chunks(LOGPROB) + ★DSS      star.py
"""

from tasft_ray.losses.chunks import IGNORE_INDEX, OutputHead, Reduction
from tasft_ray.losses.emd import emd_loss
from tasft_ray.losses.kto import kto_loss
from tasft_ray.losses.logprob import log1mexp
from tasft_ray.losses.nlcl import nlcl_loss
from tasft_ray.losses.sft import sequence_logprobs, sft_loss, token_logprobs
from tasft_ray.losses.star import STAR_KL_WEIGHT, STAR_SEGMENT_TOKENS, star_loss
from tasft_ray.losses.tasft import HARMFUL, SAFE, LossParts, tasft_loss

__all__ = [
    "HARMFUL",
    "IGNORE_INDEX",
    "SAFE",
    "STAR_KL_WEIGHT",
    "STAR_SEGMENT_TOKENS",
    "LossParts",
    "OutputHead",
    "Reduction",
    "emd_loss",
    "kto_loss",
    "log1mexp",
    "nlcl_loss",
    "sequence_logprobs",
    "sft_loss",
    "star_loss",
    "tasft_loss",
    "token_logprobs",
]
