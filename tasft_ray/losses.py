"""TA-SFT losses (Lu, Sinha, Varakantham 2024, https://arxiv.org/abs/2412.06843) and baselines.

Pure torch: no Ray, no I/O, no config objects, so every term can be checked against its maths.

Conventions shared by every function (Hugging Face causal-LM convention):
    logits: (B, T, V) next-token logits, ``logits[b, t]`` predicts ``labels[b, t + 1]``.
    labels: (B, T) token ids, ``ignore_index`` (default -100) on prompt and padding positions.
    kinds:  (B,) int, ``SAFE`` (0) for D_safety-unrelated rows, ``HARMFUL`` (1) for
            D_safety-related rows (toxic prompt + harmful response).

Every public loss takes either logits (B, T, V) — the *reference* path — or an ``OutputHead``
(final hidden states + the frozen output layer) — the *fused* path.

Reference memory: logits are only read at response positions, ``chunk_size`` positions at a time,
and every chunk is recomputed in backward (activation checkpointing), so no loss term keeps a second
(tokens, V) tensor alive; the only V-sized buffer beyond the logits is the gradient the plain NLL
needs too.

Fused memory: logits exist only for one chunk of response positions at a time
(``_FusedHeadStats``, analytic per-token gradients), so no (B, T, V) tensor and no V-sized
gradient is ever built; peak extra memory is a few (chunk_size, V) fp32 buffers. With a frozen
output layer (LoRA) the gradient w.r.t. the hidden states is taken in forward while the chunk's
logits exist, so logits are built once; a trainable one rebuilds them in backward.

Call tree::

    tasft_loss ─┬─ _sft_term ──────── _map_chunks(_token_logprob)
                ├─ _emd_term ──────── _map_chunks(_token_emd)
                ├─ _nlcl_term ─────── _map_chunks(_token_logprob) + log1mexp
                └─ kto_loss(sequence log-probs, reference log-probs)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
SAFE, HARMFUL = 0, 1
Reduction = Literal["token_mean", "sequence_sum"]
_LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- positions


@dataclass(frozen=True)
class _Positions:
    """Response positions of a batch, flattened: which logit rows predict which targets."""

    rows: Tensor  # (N,) index into logits.reshape(B * T, V)
    targets: Tensor  # (N,) target token ids
    seq: Tensor  # (N,) batch row of each position
    batch_size: int

    @classmethod
    def of(cls, labels: Tensor, ignore_index: int) -> _Positions:
        bsz, seqlen = labels.shape
        shifted = labels[:, 1:]  # (B, T-1): target of logits[:, :-1]
        b, t = (shifted != ignore_index).nonzero(as_tuple=True)
        return cls(b * seqlen + t, shifted[b, t], b, bsz)

    def where(self, row_mask: Tensor) -> _Positions:
        keep = row_mask[self.seq]
        return _Positions(self.rows[keep], self.targets[keep], self.seq[keep], self.batch_size)

    def per_sequence_sum(self, values: Tensor) -> Tensor:
        """(N,) per-token values -> (B,) sums; rows without response tokens get 0."""
        out = values.new_zeros(self.batch_size)
        return out.index_add(0, self.seq, values)

    def num_sequences(self) -> int:
        return int(torch.unique(self.seq).numel())


@dataclass(frozen=True)
class OutputHead:
    """Final hidden states and the output layer: logits = softcap(scale · (h Wᵀ + b)).

    Passed to a loss instead of logits, it lets the loss compute logits only at response
    positions, one chunk at a time (the fused path). ``softcap`` is Gemma's final-logit
    soft-capping (cap · tanh(z / cap)); ``scale`` covers models that scale logits (Cohere's
    logit_scale, 1 / Granite's logits_scaling). The weight is treated as frozen unless it
    requires grad.
    """

    hidden: Tensor  # (B, T, d)
    weight: Tensor  # (V, d)
    bias: Tensor | None = None
    scale: float = 1.0
    softcap: float | None = None

    def chunk_logits(self, h: Tensor) -> Tensor:
        """(c, d) -> (c, V) logits, upcast to fp32 at least before scaling and capping."""
        z = _upcast(torch.nn.functional.linear(h, self.weight, self.bias))
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap is not None:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z

    def logits(self) -> Tensor:
        """(B, T, V): the full logits, for the reference path and for checking."""
        return self.chunk_logits(self.hidden)


@dataclass(frozen=True)
class _Flat:
    """Loss input with batch and time flattened: (B*T, V) logits, or (B*T, d) hidden + head."""

    x: Tensor
    head: OutputHead | None = None


def _flat(source: Tensor | OutputHead) -> _Flat:
    if isinstance(source, OutputHead):
        return _Flat(source.hidden.reshape(-1, source.hidden.shape[-1]), source)
    return _Flat(source.reshape(-1, source.shape[-1]))  # (B, T, V) -> (B*T, V)


def _upcast(x: Tensor) -> Tensor:
    """Softmax statistics in fp32 at least (bf16 logits lose the tail that EMD/NLCL need)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _gather_apply(fn: Callable[..., Tensor], flat_logits: Tensor, rows: Tensor, *args) -> Tensor:
    return fn(_upcast(flat_logits.index_select(0, rows)), *args)


def _map_chunks(
    fn: Callable[..., Tensor],
    flat: _Flat,
    pos: _Positions,
    *extra: Tensor,
    chunk_size: int | None,
    grad_col: int = 0,
) -> Tensor:
    """Apply a per-chunk function ``fn(chunk_logits (c, V), targets (c,), *extra) -> (c, ...)``.

    ``grad_col``: the column of a (c, k) result the loss will differentiate (the fused path
    computes its gradient during forward; any other column still gets a correct gradient, at the
    cost of a recompute).

    The one place where chunking happens. Reference path: with autograd on, each chunk is
    checkpointed: its (c, V) softmax is freed after forward and recomputed in backward. Fused
    path: ``_FusedHeadStats`` builds each chunk's logits from hidden states (once when the
    output layer is frozen, twice when it trains).
    """
    n = pos.rows.numel()
    size = chunk_size or max(n, 1)
    if flat.head is not None:
        h = flat.head
        frozen = not h.weight.requires_grad and (h.bias is None or not h.bias.requires_grad)
        eager = torch.is_grad_enabled() and flat.x.requires_grad and frozen
        return _FusedHeadStats.apply(
            flat.x, h.weight, h.bias, pos.rows, pos.targets, h, fn, size,
            grad_col if eager else None, *extra,
        )  # fmt: skip
    flat_logits = flat.x
    grad = torch.is_grad_enabled() and flat_logits.requires_grad
    outs = []
    for start in range(0, max(n, 1), size):
        rows = pos.rows[start : start + size]
        targets = pos.targets[start : start + size]
        if grad:
            out = checkpoint(
                partial(_gather_apply, fn), flat_logits, rows, targets, *extra, use_reentrant=False
            )
        else:
            out = _gather_apply(fn, flat_logits, rows, targets, *extra)
        outs.append(out)
    return torch.cat(outs)


def _reduce(values: Tensor, pos: _Positions, reduction: Reduction) -> Tensor:
    """Token values -> scalar; an empty subset gives a 0 that is still attached to the graph."""
    if values.numel() == 0:
        return values.sum()
    if reduction == "token_mean":
        return values.sum() / values.numel()
    if reduction == "sequence_sum":
        return values.sum() / pos.num_sequences()
    raise ValueError(f"reduction must be 'token_mean' or 'sequence_sum', got {reduction!r}")


# ----------------------------------------------------------------------------- per-token maths


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Mächler 2012).

    Near 0, ``log(-expm1(x))`` keeps the digits ``log1p(-exp(x))`` loses; far below, the reverse.
    The inputs of the branch not taken are replaced by safe values so its gradient is never NaN.
    """
    near_zero = x > -_LN2
    a = torch.where(near_zero, x, torch.full_like(x, -1.0))
    b = torch.where(near_zero, torch.full_like(x, -1.0), x)
    return torch.where(near_zero, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(b)))


def _token_logprob(logits: Tensor, targets: Tensor) -> Tensor:
    """(c, V), (c,) -> (c, 2): [log p(y), log(1 - p(y))], both accurate when p(y) -> 1.

    ``z_y - logsumexp(z)`` rounds to exactly 0 once p(y) > 1 - 6e-8 in fp32, which would make the
    NLCL loss infinite. The complement mass ``1 - p(y)`` summed over the *other* tokens has no
    cancellation, and log p(y) = log1mexp(log(1 - p(y))) recovers the lost digits.
    """
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    z_y = logits.gather(1, targets[:, None]).squeeze(1)  # (c,)
    others = logits.scatter(1, targets[:, None], float("-inf"))
    log_comp = torch.logsumexp(others, dim=-1) - lse  # log(1 - p(y))
    near_one = log_comp < -_LN2  # p(y) > 1/2: the complement is the accurate side
    safe_comp = torch.where(near_one, log_comp, torch.full_like(log_comp, -1.0))
    logp = torch.where(near_one, torch.log1p(-torch.exp(safe_comp)), z_y - lse)
    return torch.stack([logp, log_comp], dim=-1)


def _token_emd(logits: Tensor, targets: Tensor, emb: Tensor, inv_norm: Tensor) -> Tensor:
    """(c, V), (c,), (V, d), (V,) -> (c,): -|| ê_y - Σ_v Q(v) ê_v ||² (the eq. 5 summand).

    Σ_v Q(v) ê_v = (Q / ||e||) @ E: the normalisation is folded into the probabilities so the
    normalised (V, d) embedding matrix is never materialised.
    """
    probs = torch.softmax(logits, dim=-1)  # (c, V)
    weights = (probs * inv_norm).to(emb.dtype)  # (c, V): Q(v) / ||e_v||
    expected = (weights @ emb).to(probs.dtype)  # (c, d)
    target = emb[targets].to(probs.dtype) * inv_norm[targets, None]  # (c, d): ê_y
    return -(target - expected).pow(2).sum(-1)


def _inverse_norms(embeddings: Tensor) -> Tensor:
    dtype = torch.promote_types(embeddings.dtype, torch.float32)
    norms = torch.linalg.vector_norm(embeddings, dim=-1, dtype=dtype)
    return norms.clamp_min(1e-12).reciprocal()  # (V,)


# ----------------------------------------------------------------------------- fused kernels
#
# Each per-token function of the reference path has a fused pair: forward (c, V) logits ->
# (values, aux) with aux a few numbers per token kept for backward, and backward -> dL/dz,
# analytic, overwriting the recomputed logits in place. Fewer passes over (c, V) than autograd.


def _logprob_fwd(z: Tensor, targets: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``_token_logprob`` with one pass over (c, V) for the rows where p(y) <= 1/2.

    There log(1 - p) = log1mexp(log p) is exact; only rows with p > 1/2 need the complement
    summed over the other tokens, and those are computed on their own (few) rows.
    """
    lse = torch.logsumexp(z, dim=-1)
    logp = z.gather(1, targets[:, None]).squeeze(1) - lse
    near_one = logp > -_LN2
    log_comp = log1mexp(torch.where(near_one, torch.full_like(logp, -1.0), logp))
    if bool(near_one.any()):
        exact = _token_logprob(z[near_one], targets[near_one])
        logp, log_comp = logp.clone(), log_comp.clone()
        logp[near_one], log_comp[near_one] = exact[:, 0], exact[:, 1]
    return torch.stack([logp, log_comp], dim=-1), (lse,)


def _logprob_bwd(z, targets, grad, out, aux) -> Tensor:
    """d/dz of grad · [log p, log(1 - p)] with P = softmax(z), p = P_y, c = 1 - p:

        d log p / dz_v = [v=y] - P_v,     d log c / dz_v = P_v p / c  (v ≠ y),  -p  (v = y)
    so for v ≠ y: P_v (-g0 + g1 p / c), and at y: g0 c - g1 p (exact: c comes from log c).
    Rows where p / c would overflow (c < e^-30) take P_v p / c = p exp(z_v - lse - log c).
    """
    (lse,) = aux
    logp, log_comp = out[:, 0], out[:, 1]
    g0, g1 = grad[:, 0], grad[:, 1]
    careful = (g1 != 0) & (log_comp < -30.0)
    kept = z[careful] if bool(careful.any()) else None
    ratio = torch.exp(torch.where(careful, torch.zeros_like(logp), logp - log_comp))
    probs = z.sub_(lse[:, None]).exp_()  # (c, V) P, in place of the logits
    dz = probs.mul_((g1 * ratio - g0)[:, None])
    if kept is not None:  # P_v p / c without forming p / c
        lse_c, lc_c = lse[careful][:, None], log_comp[careful][:, None]
        pg1 = (g1[careful] * logp[careful].exp())[:, None]
        dz[careful] = (
            torch.exp(kept - (lse_c + lc_c)) * pg1 - torch.exp(kept - lse_c) * g0[careful][:, None]
        )
    at_y = g0 * log_comp.exp() - g1 * logp.exp()
    return dz.scatter_(1, targets[:, None], at_y[:, None])


def _emd_weights_(z: Tensor, lse: Tensor, inv_norm: Tensor) -> Tensor:
    """(c, V) logits -> P / ||e||, in place."""
    return z.sub_(lse[:, None]).exp_().mul_(inv_norm)


def _emd_fwd(z, targets, emb, inv_norm) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``_token_emd``; keeps logsumexp and the expected embedding m = Σ_v P_v ê_v (c, d).

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


# fn -> (forward, backward on fresh logits, backward on what forward left in its logits)
_FUSED = {
    _token_logprob: (_logprob_fwd, _logprob_bwd, _logprob_bwd),  # forward leaves z as it was
    _token_emd: (_emd_fwd, _emd_bwd, _emd_grad),
}


class _FusedHeadStats(torch.autograd.Function):
    """Per-token statistics straight from hidden states, logits one chunk at a time.

    forward:  for each chunk of response positions, logits = head(h[rows]) -> (values, aux).
    backward: recompute the chunk's logits, analytic dL/dz (``_FUSED``), then through the head:
              dL/dh[rows] = dL/draw @ W (and dL/dW, dL/db if they require grad).

    Eager gradient (``grad_col`` set: training a frozen head): each value depends on its own
    position's hidden state only, so dL/dh[row] = grad_out[row] · d value[row, grad_col] / dh[row].
    Forward computes that (N, d) Jacobian while the chunk's logits exist and backward only scales
    it: one V x d matmul per token fewer than recomputing (the NLL trains with two instead of
    three). If backward receives gradient on another column, it recomputes as above.
    Nothing V-sized outlives a chunk, in either pass.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, targets, head, fn, size, grad_col, *extra):
        fwd, _, grad_after_fwd = _FUSED[fn]
        outs, auxes, jacobians = [], [], []
        with torch.no_grad():
            for i in range(0, max(rows.numel(), 1), size):
                z = head.chunk_logits(hidden[rows[i : i + size]])
                capped = _softcap_slope(z, head) if grad_col is not None else None
                out, aux = fwd(z, targets[i : i + size], *extra)
                if grad_col is not None:
                    unit = _unit_grad(out, grad_col)
                    g = grad_after_fwd(z, targets[i : i + size], unit, out, aux, *extra)
                    jacobians.append(_through_softcap_and_scale(g, capped, head, weight) @ weight)
                outs.append(out)
                auxes.append(aux)
        aux = [torch.cat(parts) for parts in zip(*auxes, strict=True)]
        ctx.save_for_backward(hidden, weight, bias, rows, targets, *extra)
        ctx.head, ctx.fn, ctx.size, ctx.n_extra = head, fn, size, len(extra)
        ctx.outputs = torch.cat(outs)
        ctx.aux = aux
        ctx.grad_col = grad_col
        ctx.jacobian = torch.cat(jacobians) if jacobians else None
        return ctx.outputs.clone()

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, rows, targets, *extra = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        none = (None,) * (6 + ctx.n_extra)
        if ctx.jacobian is not None:  # need_w and need_b are False: the eager path's condition
            wanted = _unit_grad(grad_out, ctx.grad_col).bool()
            if not bool(grad_out.masked_select(~wanted).any()):
                g = grad_out[wanted] if grad_out.dim() == 2 else grad_out
                grad_h = torch.zeros_like(hidden)
                grad_h.index_add_(0, rows, (ctx.jacobian * g[:, None]).to(hidden.dtype))
                return grad_h, None, None, *none
        head, size, bwd = ctx.head, ctx.size, _FUSED[ctx.fn][1]
        acc = torch.promote_types(weight.dtype, torch.float32)  # dW, db summed over chunks
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=acc) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=acc) if need_b else None
        for i in range(0, rows.numel(), size):
            sl = slice(i, i + size)
            r = rows[sl]
            h = hidden[r]
            z = head.chunk_logits(h)
            capped = _softcap_slope(z, head)
            aux = [a[sl] for a in ctx.aux]
            g = bwd(z, targets[sl], grad_out[sl], ctx.outputs[sl], aux, *extra)  # dL/dz
            g = _through_softcap_and_scale(g, capped, head, weight)  # dL/d(h Wᵀ + b)
            if need_h:
                grad_h.index_add_(0, r, g @ weight)
            if need_w:
                grad_w.add_(g.T.to(acc) @ h.to(acc))
            if need_b:
                grad_b.add_(g.to(acc).sum(0))
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, grad_b, *none


def _unit_grad(out: Tensor, col: int) -> Tensor:
    """d(loss)/d(out) = 1 on column ``col`` of a (c, k) output, or everywhere on a (c,) one."""
    if out.dim() == 1:
        return torch.ones_like(out)
    unit = torch.zeros_like(out)
    unit[:, col] = 1
    return unit


def _softcap_slope(z: Tensor, head: OutputHead) -> Tensor | None:
    """z = cap·tanh(x / cap): dz/dx = 1 - (z / cap)², taken before a kernel overwrites z."""
    return None if head.softcap is None else 1 - (z / head.softcap).square()


def _through_softcap_and_scale(g: Tensor, capped: Tensor | None, head: OutputHead, weight):
    """dL/dz (c, V) -> dL/d(h Wᵀ + b) in the weight's dtype."""
    if capped is not None:
        g = g.mul_(capped)
    if head.scale != 1.0:
        g = g.mul_(head.scale)
    return g.to(weight.dtype)


# ----------------------------------------------------------------------------- terms


def _sft_term(flat: _Flat, pos: _Positions, reduction: Reduction, chunk_size: int | None):
    nll = -_map_chunks(_token_logprob, flat, pos, chunk_size=chunk_size)[:, 0]
    return _reduce(nll, pos, reduction)


def _emd_term(
    flat: _Flat,
    pos: _Positions,
    embeddings: Tensor,
    reduction: Reduction,
    chunk_size: int | None,
) -> Tensor:
    emb = embeddings.detach()  # the cost is frozen: no gradient flows into the embeddings
    values = _map_chunks(_token_emd, flat, pos, emb, _inverse_norms(emb), chunk_size=chunk_size)
    return _reduce(values, pos, reduction)


def _nlcl_term(
    flat: _Flat,
    pos: _Positions,
    variant: Literal["sequence", "token"],
    reduction: Reduction,
    chunk_size: int | None,
) -> Tensor:
    col = 1 if variant == "token" else 0  # the column the loss below differentiates
    stats = _map_chunks(_token_logprob, flat, pos, chunk_size=chunk_size, grad_col=col)  # (N, 2)
    if variant == "token":  # unlikelihood: -log(1 - p(y_t)) per token
        return _reduce(-stats[:, 1], pos, reduction)
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


# ----------------------------------------------------------------------------- public API


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
    return _sft_term(_flat(logits), _Positions.of(labels, ignore_index), reduction, chunk_size)


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
    return _emd_term(
        _flat(logits), _Positions.of(labels, ignore_index), embeddings, reduction, chunk_size
    )


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
    return _nlcl_term(
        _flat(logits), _Positions.of(labels, ignore_index), variant, reduction, chunk_size
    )


def sequence_logprobs(
    logits: Tensor | OutputHead,
    labels: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> Tensor:
    """(B,) log Q(y | p): sum of response-token log-probs per sequence (KTO's rewards)."""
    pos = _Positions.of(labels, ignore_index)
    stats = _map_chunks(_token_logprob, _flat(logits), pos, chunk_size=chunk_size)
    return pos.per_sequence_sum(stats[:, 0])


def kto_loss(
    policy_logps: Tensor,
    reference_logps: Tensor,
    desirable: Tensor,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    kl: Tensor | None = None,
) -> Tensor:
    """KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306), unpaired.

        r = log π(y|x) - log π_ref(y|x),  z0 = max(KL, 0) (no gradient)
        loss = mean( λ_D (1 - σ(β (r - z0))) for desirable, λ_U (1 - σ(β (z0 - r))) otherwise )

    Args:
        policy_logps, reference_logps: (B,) sequence log-probs (see ``sequence_logprobs``); with
            LoRA the reference is the same model with the adapter disabled.
        desirable: (B,) bool: safe responses are desirable, harmful ones undesirable.
        kl: scalar reference-point estimate. Default: the batch mean of r over all rows (the
            matched-pair estimate; the paper uses mismatched pairs, which costs an extra forward).
    """
    rewards = policy_logps - reference_logps
    if kl is None:
        kl = rewards.detach().mean() if rewards.numel() else rewards.new_zeros(())
    z0 = kl.detach().clamp_min(0)
    values = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (rewards - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - rewards))),
    )
    return values.mean() if values.numel() else values.sum()


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
    method: Literal["sft", "emd", "nlcl", "kto", "stl"],
    lam: float = 1.0,
    embeddings: Tensor | None = None,
    reference_logps: Tensor | None = None,
    reduction: Reduction = "token_mean",
    nlcl_variant: Literal["sequence", "token"] = "sequence",
    kto_beta: float = 0.1,
    kto_desirable_weight: float = 1.0,
    kto_undesirable_weight: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int | None = None,
) -> LossParts:
    """Eq. 6 / eq. 8: L = L_SFT(safe rows of the batch) + λ · L_penalty(harmful rows).

    A term whose rows are absent from the batch is 0. ``sft`` and ``stl`` train on the safe rows
    only (for ``stl`` the safety data are safe refusals, so every row is safe); ``kto`` replaces
    both terms by the KTO loss (safe = desirable, harmful = undesirable) and reports the safe-row
    NLL as ``sft`` without gradient.

    Args:
        logits: (B, T, V), or an ``OutputHead`` for the fused path. labels: (B, T).
            kinds: (B,) SAFE/HARMFUL.
        embeddings: (V, d), required for ``emd``.
        reference_logps: (B,) sequence log-probs under the reference model, required for ``kto``.
    """
    flat = _flat(logits)
    pos = _Positions.of(labels, ignore_index)
    safe_rows, harmful_rows = kinds == SAFE, kinds == HARMFUL
    safe, harmful = pos.where(safe_rows), pos.where(harmful_rows)
    n_safe, n_harmful = int(safe_rows.sum()), int(harmful_rows.sum())

    if method == "kto":
        if reference_logps is None:
            raise ValueError("method 'kto' needs reference_logps (adapter-disabled log-probs)")
        stats = _map_chunks(_token_logprob, flat, pos, chunk_size=chunk_size)
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
            sft = _reduce(-stats[:, 0][safe_rows[pos.seq]], safe, reduction)
        return LossParts(total, sft, total.detach(), n_safe, n_harmful)

    sft = _sft_term(flat, safe, reduction, chunk_size)
    if method in ("sft", "stl") or harmful.rows.numel() == 0:
        penalty = flat.x.new_zeros((), dtype=sft.dtype)
    elif method == "emd":
        if embeddings is None:
            raise ValueError("method 'emd' needs the (V, d) token embeddings")
        penalty = _emd_term(flat, harmful, embeddings, reduction, chunk_size)
    elif method == "nlcl":
        penalty = _nlcl_term(flat, harmful, nlcl_variant, reduction, chunk_size)
    else:
        raise ValueError(f"unknown method {method!r}")
    return LossParts(sft + lam * penalty, sft, penalty, n_safe, n_harmful)
