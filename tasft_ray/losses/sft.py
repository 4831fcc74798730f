"""Negative log-likelihood of the response tokens (eq. 1) and per-sequence log-probs."""

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


def sft_term(flat: Flat, pos: Positions, reduction: Reduction, chunk_size: int | None) -> Tensor:
    nll = -map_chunks(LOGPROB, flat, pos, chunk_size=chunk_size)[:, 0]
    return reduce_tokens(nll, pos, reduction)


def sft_loss(
    logits: Tensor | OutputHead,
    labels: Tensor,
    *,
    reduction: Reduction = "token_mean",
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> Tensor:
    """Negative log-likelihood of the response tokens (eq. 1).

    Args:
        logits: (B, T, V), or an ``OutputHead`` (fused: logits built chunk by chunk).
            labels: (B, T) with ``ignore_index`` outside responses.
        reduction: ``token_mean`` (mean over response tokens, as HF) or ``sequence_sum``
            (eq. 1 literally: sum over a response's tokens, mean over sequences).
    Returns:
        Scalar; 0 when no label is a response token.
    """
    return sft_term(flat_input(logits), Positions.of(labels, ignore_index), reduction, chunk_size)


def sequence_logprobs(
    logits: Tensor | OutputHead,
    labels: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> Tensor:
    """(B,) log Q(y | p): sum of response-token log-probs per sequence (KTO's rewards)."""
    pos = Positions.of(labels, ignore_index)
    stats = map_chunks(LOGPROB, flat_input(logits), pos, chunk_size=chunk_size)
    return pos.per_sequence_sum(stats[:, 0])


def token_logprobs(
    logits: Tensor | OutputHead,
    labels: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> Tensor:
    """(B, T) log Q(labels[b, t] | prefix), aligned with ``labels``; 0 where ``labels`` is
    ``ignore_index`` (and in column 0, which no logit predicts). The per-token form of
    ``sequence_logprobs`` (STAR-DSS's reference log-probs)."""
    pos = Positions.of(labels, ignore_index)
    stats = map_chunks(LOGPROB, flat_input(logits), pos, chunk_size=chunk_size)
    out = stats.new_zeros(labels.numel())
    return out.index_copy(0, pos.rows + 1, stats[:, 0]).reshape(labels.shape)
