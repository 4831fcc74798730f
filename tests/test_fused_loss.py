"""Fused output-layer path (OutputHead) against the reference path on full logits.

The reference path is itself checked against the maths in test_losses.py; here the fused path
must give the same loss and the same gradients (hidden states, LoRA parameters, output weight and
bias) to 1e-5 in fp32, for every method, with masking, tied and untied output layers, soft-capping
and chunk sizes that do not divide the number of response tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from tasft_ray.losses import (
    HARMFUL,
    SAFE,
    OutputHead,
    nlcl_loss,
    sequence_logprobs,
    sft_loss,
    tasft_loss,
)
from tasft_ray.losses.chunks import Positions, flat_input, map_chunks
from tasft_ray.losses.logprob import LOGPROB

B, T, D, V = 4, 23, 16, 53
IGN = -100


def _setup(seed: int, tied: bool):
    """A LoRA-style hidden-state producer over a frozen embedding, and an output layer."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(V, D, generator=g)
    ids = torch.randint(0, V, (B, T), generator=g)
    base = torch.randn(D, D, generator=g) / D**0.5
    lora_a = (torch.randn(4, D, generator=g) / 2).requires_grad_()
    lora_b = (torch.randn(D, 4, generator=g) / 2).requires_grad_()
    weight = emb if tied else torch.randn(V, D, generator=g) / 2
    bias = None if tied else torch.randn(V, generator=g)
    labels = ids.roll(-1, dims=1)
    for i in range(B):
        labels[i, : 3 + 2 * i] = IGN  # prompts of different lengths
    labels[2, -4:] = IGN  # padding
    kinds = torch.tensor([SAFE, HARMFUL, SAFE, HARMFUL])

    def hidden():
        x = emb[ids]
        return torch.tanh(x @ base.T + (x @ lora_a.T) @ lora_b.T)

    return hidden, weight, bias, emb, labels, kinds, (lora_a, lora_b)


CASES = [
    dict(method="sft"),
    dict(method="emd", lam=2.5),
    dict(method="nlcl", lam=1.5),
    dict(method="nlcl", lam=1.5, nlcl_variant="token"),
    dict(method="nlcl", lam=0.7, reduction="sequence_sum"),
    dict(method="kto"),
    dict(method="stl"),
    dict(method="star", star_kl_weight=0.7),
    dict(method="star", star_kl_weight=0.3, reduction="sequence_sum"),
]


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("softcap", [None, 4.0])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_fused_equals_reference(case, tied, softcap):
    hidden, weight, bias, emb, labels, kinds, lora = _setup(0, tied)
    n_resp = int((labels[:, 1:] != IGN).sum())
    chunk = 7
    assert n_resp % chunk != 0
    extra = dict(embeddings=emb, chunk_size=chunk, **case)
    if case["method"] == "kto":
        extra["reference_logps"] = torch.linspace(-90.0, -60.0, B)
    if case["method"] == "star":
        g = torch.Generator().manual_seed(5)
        extra["star_safety"] = torch.rand(labels.shape, generator=g)
        extra["reference_token_logps"] = -4 * torch.rand(labels.shape, generator=g)

    results = []
    for fused in (False, True):
        h = hidden()
        head = OutputHead(h, weight, bias, scale=0.8, softcap=softcap)
        parts = tasft_loss(head if fused else head.logits(), labels, kinds, **extra)
        grads = torch.autograd.grad(parts.total, (h, *lora))
        results.append((parts, grads))
    (ref, ref_g), (fus, fus_g) = results
    for name in ("total", "sft", "penalty"):
        torch.testing.assert_close(getattr(fus, name), getattr(ref, name), rtol=1e-5, atol=1e-5)
    for a, b in zip(fus_g, ref_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert any(g.abs().sum() > 0 for g in fus_g)


def test_fused_output_weight_and_bias_gradients():
    """When the output layer itself trains (full fine-tuning), dW and db match too."""
    hidden, _, _, emb, labels, kinds, _ = _setup(1, tied=False)
    g = torch.Generator().manual_seed(3)
    for method in ("emd", "nlcl"):
        grads = []
        for fused in (False, True):
            w = (torch.randn(V, D, generator=g.manual_seed(3)) / 2).requires_grad_()
            b = torch.randn(V, generator=g.manual_seed(4)).requires_grad_()
            head = OutputHead(hidden(), w, b, softcap=3.0)
            loss = tasft_loss(
                head if fused else head.logits(),
                labels,
                kinds,
                method=method,
                embeddings=emb,
                chunk_size=5,
            ).total
            grads.append(torch.autograd.grad(loss, (w, b)))
        for a, r in zip(grads[1], grads[0], strict=True):
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_fused_gradcheck_float64():
    """Finite differences on the analytic backward, through soft-capping and scaling."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(2, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 5, generator=g, dtype=torch.float64)
    emb = torch.randn(11, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (2, 6), generator=g)
    labels[:, :2] = IGN
    kinds = torch.tensor([SAFE, HARMFUL])
    for method in ("emd", "nlcl"):
        for variant in ("sequence", "token"):

            def f(x, method=method, variant=variant):
                head = OutputHead(x, w, scale=1.3, softcap=2.5)
                return tasft_loss(
                    head, labels, kinds, method=method, lam=2.0, embeddings=emb,
                    nlcl_variant=variant, chunk_size=3,
                ).total  # fmt: skip

            assert torch.autograd.gradcheck(f, (h,))


@dataclass(frozen=True)
class _Recording(OutputHead):
    """An OutputHead that records the row count of every logits block it builds."""

    seen: list[int] = field(default_factory=list)

    def chunk_logits(self, h):
        self.seen.append(h.shape[0])
        return super().chunk_logits(h)


def test_fused_builds_logits_only_for_response_chunks():
    """No (B, T, V) tensor: every logits block is at most chunk_size response positions. With a
    frozen output layer each position's logits are built once (the gradient is taken in
    forward); when the layer trains, once more in backward."""
    hidden, weight, _, emb, labels, kinds, _ = _setup(2, tied=True)
    n_resp = int((labels[:, 1:] != IGN).sum())
    for trains, passes in ((False, 1), (True, 2)):
        h = hidden()
        head = _Recording(h, weight.clone().requires_grad_(trains))
        parts = tasft_loss(head, labels, kinds, method="emd", embeddings=emb, chunk_size=6)
        parts.total.backward()
        assert max(head.seen) <= 6 and h.dim() == 3
        assert sum(head.seen) == passes * n_resp


def test_fused_gradient_on_a_column_not_taken_in_forward():
    """The eager gradient covers the column the loss was declared to use; a caller that
    differentiates the other column too gets the recomputed (still exact) gradient."""
    hidden, weight, _, _, labels, _, lora = _setup(8, tied=False)
    pos = Positions.of(labels, IGN)
    grads = []
    for fused in (False, True):
        h = hidden()
        head = _Recording(h, weight)
        flat = flat_input(head if fused else head.logits())
        stats = map_chunks(LOGPROB, flat, pos, chunk_size=4, grad_col=0)
        loss = stats[:, 0].sum() + 0.5 * stats[:, 1].sum()
        grads.append(torch.autograd.grad(loss, (h, *lora)))
    assert sum(head.seen) == 2 * pos.rows.numel()  # forward, then the recompute
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fused_nlcl_exact_near_probability_one():
    """p(y) = 1 - 1e-12 in fp32: the fused path keeps log(1 - p) and its gradient finite."""
    gap = math.log(1e12)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h = torch.tensor([[[gap, 0.0], [0.0, 0.0]]], requires_grad=True)  # logits = h
    labels = torch.tensor([[IGN, 0]])
    loss = nlcl_loss(OutputHead(h, w), labels)
    want = gap + math.log1p(math.exp(-gap))
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert torch.isfinite(h.grad).all() and h.grad.abs().sum() > 0


def test_fused_public_helpers_and_empty_batches():
    hidden, weight, _, emb, labels, kinds, _ = _setup(4, tied=True)
    h = hidden()
    head = OutputHead(h, weight)
    torch.testing.assert_close(
        sequence_logprobs(head, labels, chunk_size=5),
        sequence_logprobs(head.logits(), labels),
    )
    torch.testing.assert_close(
        sft_loss(head, labels, chunk_size=9), sft_loss(head.logits(), labels)
    )
    none = torch.full_like(labels, IGN)
    parts = tasft_loss(head, none, kinds, method="emd", embeddings=emb)
    assert parts.total.item() == 0.0
    (grad,) = torch.autograd.grad(parts.total, h)  # still attached to the graph
    assert grad.abs().sum() == 0


def test_fused_bf16_close_to_fp32():
    hidden, weight, _, emb, labels, kinds, _ = _setup(6, tied=False)
    h = hidden().detach()
    fp32 = tasft_loss(OutputHead(h, weight), labels, kinds, method="emd", embeddings=emb)
    bf16 = tasft_loss(
        OutputHead(h.bfloat16(), weight.bfloat16()),
        labels,
        kinds,
        method="emd",
        embeddings=emb.bfloat16(),
    )
    assert bf16.total.dtype == torch.float32
    assert abs(bf16.total.item() - fp32.total.item()) < 0.05


def test_fused_emd_with_bf16_cost_embeddings():
    """loss.emd_dtype=bfloat16: fp32 logits, the penalty's matmuls in bf16. Fused and reference
    agree to bf16 rounding, and both stay close to the fp32 penalty and its gradients."""
    hidden, weight, _, emb, labels, kinds, lora = _setup(7, tied=False)

    def run(fused: bool, e: torch.Tensor):
        h = hidden()
        head = OutputHead(h, weight)
        parts = tasft_loss(
            head if fused else head.logits(), labels, kinds, method="emd", lam=2.0,
            embeddings=e, chunk_size=7,
        )  # fmt: skip
        return parts.penalty, torch.autograd.grad(parts.total, (h, *lora))

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a - b).norm() / b.norm()).detach())

    exact, exact_g = run(True, emb)
    fused, fused_g = run(True, emb.bfloat16())
    ref, ref_g = run(False, emb.bfloat16())
    assert fused.dtype == torch.float32 and fused != exact  # the bf16 matmuls did run
    assert rel(fused, ref) < 1e-3 and rel(fused, exact) < 2e-3
    for f, r, x in zip(fused_g, ref_g, exact_g, strict=True):
        assert rel(f, r) < 1e-2 and rel(f, x) < 1e-2


@pytest.mark.parametrize("gap", [3.0, 40.0, 200.0])
def test_fused_complement_gradient_at_extreme_confidence(gap):
    """log(1 - p) with 1 - p down to e^-200: the fused backward's overflow-safe branch."""
    w = torch.eye(3, dtype=torch.float64)
    labels = torch.tensor([[IGN, 0, 2]])
    grads = []
    for fused in (False, True):
        h = torch.tensor(
            [[[gap, 0.0, -1.0], [0.3, -0.2, gap / 2], [0.0, 0.0, 0.0]]],
            dtype=torch.float64,
            requires_grad=True,
        )
        head = OutputHead(h, w)
        loss = nlcl_loss(head if fused else head.logits(), labels, variant="token")
        grads.append(torch.autograd.grad(loss, h)[0])
    assert torch.isfinite(grads[1]).all()
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)
