"""The TA-SFT objective (eq. 6 / eq. 8): SFT on the safe rows of a batch plus λ times a penalty
on its harmful rows, and the baselines that share the batch layout (SFT, STL, KTO, STAR-DSS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tasft_ray.losses.chunks import (
    IGNORE_INDEX,
    OutputHead,
    Positions,
    Reduction,
    flat_input,
    map_chunks,
    reduce_tokens,
)
from tasft_ray.losses.emd import emd_term
from tasft_ray.losses.kto import kto_loss
from tasft_ray.losses.logprob import LOGPROB
from tasft_ray.losses.nlcl import nlcl_term
from tasft_ray.losses.sft import sft_term
from tasft_ray.losses.star import STAR_KL_WEIGHT, star_values

SAFE, HARMFUL = 0, 1  # the kind of a row: D_safety-unrelated, or D_safety-related (penalised)


@dataclass
class LossParts:
    """The terms of eq. 6/8, kept apart for logging."""

    total: Tensor
    sft: Tensor
    penalty: Tensor
    n_safe: int
    n_harmful: int


def tasft_loss(
    logits: Tensor | OutputHead,
    labels: Tensor,
    kinds: Tensor,
    *,
    method: Literal["sft", "emd", "nlcl", "kto", "stl", "star"],
    lam: float = 1.0,
    embeddings: Tensor | None = None,
    reference_logps: Tensor | None = None,
    reduction: Reduction = "token_mean",
    nlcl_variant: Literal["sequence", "token"] = "sequence",
    kto_beta: float = 0.1,
    kto_desirable_weight: float = 1.0,
    kto_undesirable_weight: float = 1.0,
    star_safety: Tensor | None = None,
    reference_token_logps: Tensor | None = None,
    star_kl_weight: float = STAR_KL_WEIGHT,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> LossParts:
    """Eq. 6 / eq. 8: L = L_SFT(safe rows of the batch) + λ · L_penalty(harmful rows).

    A term whose rows are absent from the batch is 0. ``sft`` and ``stl`` train on the safe rows
    only (for ``stl`` the safety data are safe refusals, so every row is safe); ``kto`` replaces
    both terms by the KTO loss (safe = desirable, harmful = undesirable) and reports the safe-row
    NLL as ``sft`` without gradient. ``star`` (★DSS, ``losses.star``) trains every row, safe or
    harmful, with the same STAR-weighted term; it reports the safe-row NLL as ``sft`` and its own
    term on the harmful rows as ``penalty``, both without gradient.

    Args:
        logits: (B, T, V), or an ``OutputHead`` for the fused path. labels: (B, T).
            kinds: (B,) SAFE/HARMFUL.
        embeddings: (V, d), required for ``emd``.
        reference_logps: (B,) sequence log-probs under the reference model, required for ``kto``.
        star_safety: (B, T) STAR scores aligned with ``labels``, required for ``star``.
        reference_token_logps: (B, T) per-token log-probs of the labels under the reference
            model (``token_logprobs``), required for ``star``.
    """
    flat = flat_input(logits)
    pos = Positions.of(labels, ignore_index)
    safe_rows, harmful_rows = kinds == SAFE, kinds == HARMFUL
    safe, harmful = pos.where(safe_rows), pos.where(harmful_rows)
    n_safe, n_harmful = int(safe_rows.sum()), int(harmful_rows.sum())

    if method == "kto":
        if reference_logps is None:
            raise ValueError("method 'kto' needs reference_logps (adapter-disabled log-probs)")
        stats = map_chunks(LOGPROB, flat, pos, chunk_size=chunk_size)
        policy = pos.per_sequence_sum(stats[:, 0])
        total = kto_loss(
            policy,
            reference_logps,
            safe_rows,
            beta=kto_beta,
            desirable_weight=kto_desirable_weight,
            undesirable_weight=kto_undesirable_weight,
        )
        with torch.no_grad():
            sft = reduce_tokens(-stats[:, 0][safe_rows[pos.seq]], safe, reduction)
        return LossParts(total, sft, total.detach(), n_safe, n_harmful)

    if method == "star":
        if star_safety is None or reference_token_logps is None:
            raise ValueError(
                "method 'star' needs star_safety (STAR scores) and reference_token_logps "
                "(adapter-disabled per-token log-probs)"
            )
        values, logp = star_values(
            flat,
            pos,
            pos.at_targets(star_safety),
            pos.at_targets(reference_token_logps),
            star_kl_weight,
            chunk_size,
        )
        total = reduce_tokens(values, pos, reduction)
        with torch.no_grad():
            sft = reduce_tokens(-logp[safe_rows[pos.seq]], safe, reduction)
            penalty = reduce_tokens(values[harmful_rows[pos.seq]], harmful, reduction)
        return LossParts(total, sft, penalty, n_safe, n_harmful)

    sft = sft_term(flat, safe, reduction, chunk_size)
    if method in ("sft", "stl") or harmful.rows.numel() == 0:
        penalty = flat.x.new_zeros((), dtype=sft.dtype)
    elif method == "emd":
        if embeddings is None:
            raise ValueError("method 'emd' needs the (V, d) token embeddings")
        penalty = emd_term(flat, harmful, embeddings, reduction, chunk_size)
    elif method == "nlcl":
        penalty = nlcl_term(flat, harmful, nlcl_variant, reduction, chunk_size)
    else:
        raise ValueError(f"unknown method {method!r}")
    return LossParts(sft + lam * penalty, sft, penalty, n_safe, n_harmful)
