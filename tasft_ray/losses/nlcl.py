"""NLCL, negative log of complementary likelihood (eq. 7 of https://arxiv.org/abs/2412.06843)."""

from __future__ import annotations

from typing import Literal

import torch
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
from tasft_ray.losses.logprob import LOGPROB, log1mexp


def nlcl_term(
    flat: Flat,
    pos: Positions,
    variant: Literal["sequence", "token"],
    reduction: Reduction,
    chunk_size: int | None,
) -> Tensor:
    col = 1 if variant == "token" else 0  # the column the loss below differentiates
    stats = map_chunks(LOGPROB, flat, pos, chunk_size=chunk_size, grad_col=col)  # (N, 2)
    if variant == "token":  # unlikelihood: -log(1 - p(y_t)) per token
        return reduce_tokens(-stats[:, 1], pos, reduction)
    if variant != "sequence":
        raise ValueError(f"variant must be 'sequence' or 'token', got {variant!r}")
    if stats.shape[0] == 0:
        return stats.sum()
    has_tokens = torch.zeros(pos.batch_size, dtype=torch.bool, device=flat.x.device)
    has_tokens[pos.seq] = True
    seq_logp = pos.per_sequence_sum(stats[:, 0])[has_tokens]  # (n,) log Q(y | p)
    # log Q(y|p) = 0 exactly would mean a certain response; keep the loss finite there.
    seq_logp = seq_logp.clamp_max(-torch.finfo(seq_logp.dtype).tiny)
    return -log1mexp(seq_logp).mean()


def nlcl_loss(
    logits: Tensor | OutputHead,
    labels: Tensor,
    *,
    variant: Literal["sequence", "token"] = "sequence",
    reduction: Reduction = "token_mean",
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> Tensor:
    """Negative log of complementary likelihood, eq. 7: mean_i -log(1 - Q(y_i | p_i)).

    ``sequence`` (the paper): Q(y|p) = Π_t p(y_t) of the whole response, computed in log space
    with a stable log1mexp, so loss and gradient stay finite for Q -> 1 and Q -> 0; the mean is
    over sequences. ``token``: the unlikelihood variant -log(1 - p(y_t)) per token, reduced by
    ``reduction``.
    """
    return nlcl_term(
        flat_input(logits), Positions.of(labels, ignore_index), variant, reduction, chunk_size
    )
