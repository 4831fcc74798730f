"""The chunk engine every loss term runs on: which positions are scored, and how their logits
are built — from full logits (reference) or from hidden states one chunk at a time (fused).

A loss term supplies only a per-token statistic as a :class:`TokenKernel` (its autograd form and
its analytic fused form); :func:`map_chunks` owns the loop over response positions, the fp32
upcast, activation checkpointing on the reference path and the hidden-state gradients on the
fused path. Pure torch: no Ray, no I/O, no config objects.

Reference memory: logits are only read at response positions, ``chunk_size`` positions at a
time, and every chunk is recomputed in backward (activation checkpointing), so no loss term keeps
a second (tokens, V) tensor alive; the only V-sized buffer beyond the logits is the gradient the
plain NLL needs too.

Fused memory: logits exist only for one chunk of response positions at a time
(:class:`FusedHeadStats`, analytic per-token gradients), so no (B, T, V) tensor and no V-sized
gradient is ever built; peak extra memory is a few (chunk_size, V) fp32 buffers. With a frozen
output layer (LoRA) the gradient w.r.t. the hidden states is taken in forward while the chunk's
logits exist, so logits are built once; a trainable one rebuilds them in backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
Reduction = Literal["token_mean", "sequence_sum"]


@dataclass(frozen=True)
class Positions:
    """Response positions of a batch, flattened: which logit rows predict which targets."""

    rows: Tensor  # (N,) index into logits.reshape(B * T, V)
    targets: Tensor  # (N,) target token ids
    seq: Tensor  # (N,) batch row of each position
    batch_size: int

    @classmethod
    def of(cls, labels: Tensor, ignore_index: int) -> Positions:
        bsz, seqlen = labels.shape
        shifted = labels[:, 1:]  # (B, T-1): target of logits[:, :-1]
        b, t = (shifted != ignore_index).nonzero(as_tuple=True)
        return cls(b * seqlen + t, shifted[b, t], b, bsz)

    def where(self, row_mask: Tensor) -> Positions:
        keep = row_mask[self.seq]
        return Positions(self.rows[keep], self.targets[keep], self.seq[keep], self.batch_size)

    def at_targets(self, per_label: Tensor) -> Tensor:
        """(B, T) values aligned with the labels -> (N,) the value of each scored position's
        target: logits[b, t] predicts labels[b, t + 1], so row b·T + t reads entry b·T + t + 1."""
        return per_label.reshape(-1)[self.rows + 1]

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
        z = upcast(torch.nn.functional.linear(h, self.weight, self.bias))
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap is not None:
            z = self.softcap * torch.tanh(z / self.softcap)
        return z

    def logits(self) -> Tensor:
        """(B, T, V): the full logits, for the reference path and for checking."""
        return self.chunk_logits(self.hidden)


@dataclass(frozen=True)
class Flat:
    """Loss input with batch and time flattened: (B*T, V) logits, or (B*T, d) hidden + head."""

    x: Tensor
    head: OutputHead | None = None


def flat_input(source: Tensor | OutputHead) -> Flat:
    if isinstance(source, OutputHead):
        return Flat(source.hidden.reshape(-1, source.hidden.shape[-1]), source)
    return Flat(source.reshape(-1, source.shape[-1]))  # (B, T, V) -> (B*T, V)


def upcast(x: Tensor) -> Tensor:
    """Softmax statistics in fp32 at least (bf16 logits lose the tail that EMD/NLCL need)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@dataclass(frozen=True)
class TokenKernel:
    """One per-token statistic of a chunk of logits, in both forms the engine runs.

    reference: ``(z (c, V), targets (c,), *extra) -> (c, ...)`` under autograd.
    forward: the same values from ``z`` without autograd, plus ``aux`` (a few numbers per
        token kept for backward): ``-> (values, aux)``.
    backward: ``(z, targets, grad, values, aux, *extra) -> dL/dz`` on freshly built logits,
        analytic, allowed to overwrite ``z`` in place.
    backward_after_forward: the same on what ``forward`` left in ``z`` (it may have turned the
        logits into probabilities in place).
    """

    reference: Callable[..., Tensor]
    forward: Callable[..., tuple[Tensor, tuple[Tensor, ...]]]
    backward: Callable[..., Tensor]
    backward_after_forward: Callable[..., Tensor]


def _gather_apply(fn: Callable[..., Tensor], flat_logits: Tensor, rows: Tensor, *args) -> Tensor:
    return fn(upcast(flat_logits.index_select(0, rows)), *args)


def map_chunks(
    kernel: TokenKernel,
    flat: Flat,
    pos: Positions,
    *extra: Tensor,
    chunk_size: int | None,
    grad_col: int = 0,
) -> Tensor:
    """``kernel`` over every response position, ``chunk_size`` positions at a time.

    ``grad_col``: the column of a (c, k) result the loss will differentiate (the fused path
    computes its gradient during forward; any other column still gets a correct gradient, at the
    cost of a recompute).

    The one place where chunking happens. Reference path: with autograd on, each chunk is
    checkpointed: its (c, V) softmax is freed after forward and recomputed in backward. Fused
    path: :class:`FusedHeadStats` builds each chunk's logits from hidden states (once when the
    output layer is frozen, twice when it trains).
    """
    n = pos.rows.numel()
    size = chunk_size or max(n, 1)
    if flat.head is not None:
        h = flat.head
        frozen = not h.weight.requires_grad and (h.bias is None or not h.bias.requires_grad)
        eager = torch.is_grad_enabled() and flat.x.requires_grad and frozen
        return FusedHeadStats.apply(
            flat.x, h.weight, h.bias, pos.rows, pos.targets, h, kernel, size,
            grad_col if eager else None, *extra,
        )  # fmt: skip
    flat_logits = flat.x
    grad = torch.is_grad_enabled() and flat_logits.requires_grad
    fn = kernel.reference
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


def reduce_tokens(values: Tensor, pos: Positions, reduction: Reduction) -> Tensor:
    """Token values -> scalar; an empty subset gives a 0 that is still attached to the graph."""
    if values.numel() == 0:
        return values.sum()
    if reduction == "token_mean":
        return values.sum() / values.numel()
    if reduction == "sequence_sum":
        return values.sum() / pos.num_sequences()
    raise ValueError(f"reduction must be 'token_mean' or 'sequence_sum', got {reduction!r}")


class FusedHeadStats(torch.autograd.Function):
    """Per-token statistics straight from hidden states, logits one chunk at a time.

    forward:  for each chunk of response positions, logits = head(h[rows]) -> (values, aux).
    backward: recompute the chunk's logits, analytic dL/dz (the kernel's backward), then through
              the head: dL/dh[rows] = dL/draw @ W (and dL/dW, dL/db if they require grad).

    Eager gradient (``grad_col`` set: training a frozen head): each value depends on its own
    position's hidden state only, so dL/dh[row] = grad_out[row] · d value[row, grad_col] / dh[row].
    Forward computes that (N, d) Jacobian while the chunk's logits exist and backward only scales
    it: one V x d matmul per token fewer than recomputing (the NLL trains with two instead of
    three). If backward receives gradient on another column, it recomputes as above.
    Nothing V-sized outlives a chunk, in either pass.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, targets, head, kernel, size, grad_col, *extra):
        outs, auxes, jacobians = [], [], []
        with torch.no_grad():
            for i in range(0, max(rows.numel(), 1), size):
                z = head.chunk_logits(hidden[rows[i : i + size]])
                capped = _softcap_slope(z, head) if grad_col is not None else None
                out, aux = kernel.forward(z, targets[i : i + size], *extra)
                if grad_col is not None:
                    unit = _unit_grad(out, grad_col)
                    g = kernel.backward_after_forward(
                        z, targets[i : i + size], unit, out, aux, *extra
                    )
                    jacobians.append(_through_softcap_and_scale(g, capped, head, weight) @ weight)
                outs.append(out)
                auxes.append(aux)
        aux = [torch.cat(parts) for parts in zip(*auxes, strict=True)]
        ctx.save_for_backward(hidden, weight, bias, rows, targets, *extra)
        ctx.weight_shape = weight.shape
        ctx.head, ctx.kernel, ctx.size, ctx.n_extra = head, kernel, size, len(extra)
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
        if weight.shape != ctx.weight_shape:  # e.g. a ZeRO-3 shard released after forward
            raise RuntimeError(
                f"the output layer weight was {tuple(ctx.weight_shape)} in forward and is "
                f"{tuple(weight.shape)} in backward: keep it whole until backward has run"
            )
        head, size, bwd = ctx.head, ctx.size, ctx.kernel.backward
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
