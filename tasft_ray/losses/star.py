"""★DSS, the loss of STAR-DSS (Peng, Chen, Chi, Lee, Chau, "Shape it Up! Restoring LLM Safety
during Finetuning", NeurIPS 2025, https://arxiv.org/abs/2505.17196; code
https://github.com/poloclub/star-dss), a baseline beside SFT, STL and KTO.

Sources: the paper's abstract, method summary and Theorem 1 as published, and the authors'
released code (``src/model/loss.py``: the loss; ``src/data/value_dataset.py``: the scores;
``CONFIG.mk``: the settings of their runs). The PDF's own equation numbers could not be read
from this machine, so the terms are named by the paper's sections, not numbered.

STAR (Safety Trajectory Assessment of Response, § STAR): a guardrail scores *partial*
responses. The response is cut into segments of M tokens; segment k is scored on the prompt and
the response up to and including that segment, and every token of the segment gets that score:

    s_t = V_safe(x, y_{1:kM}) = P_guard(safe | x, y_{1:kM}) = σ(z_safe − z_unsafe),
          for (k−1)M < t ≤ kM

(the last segment ends with the response). Precomputed once (``tasft_ray.data.star``), never
during training.

★DSS (§ ★DSS): per response token, an interpolation between imitation and staying with the
reference model, by the token's STAR score:

    ℓ_t = s_t · (−log π_θ(y_t | x, y_<t)) + λ_KL · (1 − s_t) · KL_t
    L   = Σ_t ℓ_t / N                      (token_mean; sequence_sum divides by sequences)

s_t ≈ 1 (safe so far): plain SFT; s_t ≈ 0 (the guardrail flags the trajectory): the token is
not imitated, the model is held at the reference instead. The paper writes the per-token term
as KL(π_θ ‖ π_ref); the authors' runs estimate it at the data token with Schulman's k2
estimator (``kl_estimator=k2``), which is what is implemented here:

    KL_t ≈ k2_t = ½ (log π_θ(y_t | ·) − log π_ref(y_t | ·))²

so the reference enters only through its log-probability of each data token — one
adapter-disabled forward without gradient, no reference logits kept — and the whole loss is a
per-token function of log π_θ(y_t), i.e. of the chunk engine's ``LOGPROB`` kernel (fused and
reference paths alike). A full-vocabulary KL would need the reference's logits at every
response position and is not implemented.

Defaults (the authors' released settings, ``CONFIG.mk``): M = 5 (``chunk_size=5``, also the
paper's timing table), λ_KL = 0.5 (``kl_scale=0.5``), k2; normalised by the number of response
tokens. (The released code cuts segments every 5 whitespace-separated *words*; here segments
are M tokens of the model's tokenizer, as the paper states it.)

How STAR maps onto TA-SFT: STAR-DSS knows no row labels — the guardrail decides. Every row of
D = D_unrelated ∪ D_related (safe Alpaca pairs and the few harmful pairs) is scored and trained
with the same ★DSS term; ``kinds`` only split the logged numbers. The reference model is the base
model, which with LoRA is the same model with the adapter disabled (as for KTO).

Glossary (shapes):
    x, y        prompt, response; y_t the response token at position t
    s_t         STAR score of token t, in [0, 1]: ``safety`` (B, T), aligned with ``labels``
    π_θ, π_ref  the trained model and the reference (base) model
    log π_ref   ``reference_logps`` (B, T), aligned with ``labels`` (``token_logprobs``)
    λ_KL        ``kl_weight``
    M           segment length in tokens (``loss.star_segment_tokens``, used by the scorer)
    N           number of response tokens (positions whose label is not ``ignore_index``)
"""

from __future__ import annotations

from torch import Tensor

from tasft_ray.losses.chunks import (
    IGNORE_INDEX,
    Flat,
    OutputHead,
    Positions,
    Reduction,
    flat_input,
    map_chunks,
    reduce_tokens,
)
from tasft_ray.losses.logprob import LOGPROB

STAR_KL_WEIGHT = 0.5  # λ_KL of the authors' runs (CONFIG.mk: kl_scale=0.5)
STAR_SEGMENT_TOKENS = 5  # M of the authors' runs (CONFIG.mk: chunk_size=5)


def dss_token_loss(logp: Tensor, safety: Tensor, reference_logp: Tensor, kl_weight: float):
    """(N,) ℓ_t = s_t · (−log π_θ) + λ_KL · (1 − s_t) · ½ (log π_θ − log π_ref)²."""
    safety = safety.to(logp.dtype)
    ratio = logp - reference_logp.to(logp.dtype)
    return safety * -logp + kl_weight * (1 - safety) * 0.5 * ratio.square()


def star_values(
    flat: Flat,
    pos: Positions,
    safety: Tensor,
    reference_logp: Tensor,
    kl_weight: float,
    chunk_size: int | None,
) -> tuple[Tensor, Tensor]:
    """(N,) ★DSS token losses and (N,) log π_θ(y_t), for positions ``pos``; ``safety`` and
    ``reference_logp`` are (N,), in ``pos`` order."""
    logp = map_chunks(LOGPROB, flat, pos, chunk_size=chunk_size)[:, 0]
    return dss_token_loss(logp, safety, reference_logp, kl_weight), logp


def star_loss(
    logits: Tensor | OutputHead,
    labels: Tensor,
    safety: Tensor,
    reference_logps: Tensor,
    *,
    kl_weight: float = STAR_KL_WEIGHT,
    reduction: Reduction = "token_mean",
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> Tensor:
    """★DSS: Σ_t [s_t · (−log π_θ(y_t)) + λ_KL (1 − s_t) · ½ (log π_θ(y_t) − log π_ref(y_t))²] / N.

    Args:
        logits: (B, T, V), or an ``OutputHead`` (fused: logits built chunk by chunk).
        labels: (B, T) with ``ignore_index`` outside responses.
        safety: (B, T) STAR scores s in [0, 1], aligned with ``labels`` (``safety[b, t]``
            weighs the prediction of ``labels[b, t]``); read only at response positions.
        reference_logps: (B, T) log π_ref(labels[b, t] | prefix) of the reference model,
            aligned with ``labels`` (``token_logprobs`` of the adapter-disabled model).
        kl_weight: λ_KL.
        reduction: ``token_mean`` (the authors': over response tokens) or ``sequence_sum``.
    Returns:
        Scalar; 0 (attached to the graph) when no label is a response token.
    """
    pos = Positions.of(labels, ignore_index)
    values, _ = star_values(
        flat_input(logits),
        pos,
        pos.at_targets(safety),
        pos.at_targets(reference_logps),
        kl_weight,
        chunk_size,
    )
    return reduce_tokens(values, pos, reduction)
