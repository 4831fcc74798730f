"""EMD lower-bound penalty (eq. 5 of https://arxiv.org/abs/2412.06843): per harmful response
token, -|| ê_y - Σ_v Q(v) ê_v ||², in reference and fused form.

Σ_v Q(v) ê_v is softmax(logits) @ Ê — one (N × V) @ (V × d) matmul; no V × V cost matrix and no
one-hot is ever built.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tasft_ray.losses.chunks import (
    IGNORE_INDEX,
    Flat,
    OutputHead,
    Positions,
    Reduction,
    TokenKernel,
    flat_input,
    map_chunks,
    reduce_tokens,
)


def token_emd(logits: Tensor, targets: Tensor, emb: Tensor, inv_norm: Tensor) -> Tensor:
    """(c, V), (c,), (V, d), (V,) -> (c,): -|| ê_y - Σ_v Q(v) ê_v ||² (the eq. 5 summand).

    Σ_v Q(v) ê_v = (Q / ||e||) @ E: the normalisation is folded into the probabilities so the
    normalised (V, d) embedding matrix is never materialised.
    """
    probs = torch.softmax(logits, dim=-1)  # (c, V)
    weights = (probs * inv_norm).to(emb.dtype)  # (c, V): Q(v) / ||e_v||
    expected = (weights @ emb).to(probs.dtype)  # (c, d)
    target = emb[targets].to(probs.dtype) * inv_norm[targets, None]  # (c, d): ê_y
    return -(target - expected).pow(2).sum(-1)


def inverse_norms(embeddings: Tensor) -> Tensor:
    """(V, d) -> (V,) 1 / ||e_v||, in fp32 at least."""
    dtype = torch.promote_types(embeddings.dtype, torch.float32)
    norms = torch.linalg.vector_norm(embeddings, dim=-1, dtype=dtype)
    return norms.clamp_min(1e-12).reciprocal()  # (V,)


def _emd_weights_(z: Tensor, lse: Tensor, inv_norm: Tensor) -> Tensor:
    """(c, V) logits -> P / ||e||, in place."""
    return z.sub_(lse[:, None]).exp_().mul_(inv_norm)


def _emd_fwd(z, targets, emb, inv_norm) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``token_emd``; keeps logsumexp and the expected embedding m = Σ_v P_v ê_v (c, d).

    Leaves P / ||e|| in ``z`` (``_emd_grad`` starts from it)."""
    lse = torch.logsumexp(z, dim=-1)
    weights = _emd_weights_(z, lse, inv_norm)
    expected = (weights.to(emb.dtype) @ emb).to(z.dtype)  # (c, d)
    target = emb[targets].to(z.dtype) * inv_norm[targets, None]
    return -(target - expected).pow(2).sum(-1), (lse, expected)


def _emd_grad(weights, targets, grad, out, aux, emb, inv_norm) -> Tensor:
    """value = -||t - m||²: d/dP_v = s_v = 2 (t - m)·ê_v, d/dz = P ⊙ (s - <P, s>), where
    <P, s> = 2 (t - m)·m needs no pass over V. From W = P / ||e|| (in place):
    P ⊙ (s - k) = W ⊙ (2 (t - m)·e_v - k ||e_v||), so P itself is never rebuilt."""
    _, expected = aux
    target = emb[targets].to(weights.dtype) * inv_norm[targets, None]
    u = 2 * (target - expected)  # (c, d)
    s = (u.to(emb.dtype) @ emb.T).to(weights.dtype)  # (c, V) u·e_v
    s.addr_((u * expected).sum(-1), inv_norm.reciprocal(), alpha=-1)
    return s.mul_(weights).mul_(grad[:, None])


def _emd_bwd(z, targets, grad, out, aux, emb, inv_norm) -> Tensor:
    weights = _emd_weights_(z, aux[0], inv_norm)
    return _emd_grad(weights, targets, grad, out, aux, emb, inv_norm)


EMD = TokenKernel(token_emd, _emd_fwd, _emd_bwd, _emd_grad)


def emd_term(
    flat: Flat,
    pos: Positions,
    embeddings: Tensor,
    reduction: Reduction,
    chunk_size: int | None,
) -> Tensor:
    emb = embeddings.detach()  # the cost is frozen: no gradient flows into the embeddings
    values = map_chunks(EMD, flat, pos, emb, inverse_norms(emb), chunk_size=chunk_size)
    return reduce_tokens(values, pos, reduction)


def emd_loss(
    logits: Tensor | OutputHead,
    labels: Tensor,
    embeddings: Tensor,
    *,
    reduction: Reduction = "token_mean",
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> Tensor:
    """EMD lower-bound penalty of eq. 5, to be *minimised* (it is <= 0).

    For each response token y_t with model distribution Q = softmax(logits_t):
        -|| ê_{y_t} - Σ_v Q(v) ê_v ||²,   ê_v = e_v / ||e_v||
    P is the one-hot of the data token (Ren et al. 2023), so Σ_v P(v) ê_v = ê_{y_t}. By
    Proposition 1, the magnitude divided by 2|V|² lower-bounds EMD(P, Q) under the cosine cost
    d_c(x, y) = 1 - cos(ê_x, ê_y); minimising this term pushes Q's mean embedding away from the
    harmful token.

    Args:
        logits: (B, T, V). labels: (B, T).
        embeddings: (V, d) token embeddings (input embedding or lm_head rows); normalised
            here and detached, so the cost itself is frozen. V may exceed the logits' V only if
            the logits are padded identically.
    Returns:
        Scalar in [-4, 0].
    """
    return emd_term(
        flat_input(logits), Positions.of(labels, ignore_index), embeddings, reduction, chunk_size
    )
