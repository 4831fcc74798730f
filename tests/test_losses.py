"""Losses checked against their maths: naive references, an exact EMD solver, finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from tasft_ray.losses import (
    HARMFUL,
    SAFE,
    emd_loss,
    kto_loss,
    log1mexp,
    nlcl_loss,
    sequence_logprobs,
    sft_loss,
    tasft_loss,
)

IGN = -7  # a non-default ignore_index everywhere the API allows it


def _batch(seed: int, b: int = 3, t: int = 47, v: int = 31, d: int = 23, dtype=torch.float64):
    """Odd shapes, a masked prompt per row, one fully masked row, random padding."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=dtype) * 3
    labels = torch.randint(0, v, (b, t), generator=g)
    for i in range(b):
        prompt = int(torch.randint(1, t // 2, (1,), generator=g))
        pad = int(torch.randint(0, 5, (1,), generator=g))
        labels[i, :prompt] = IGN
        if pad:
            labels[i, t - pad :] = IGN
    labels[-1] = IGN
    emb = torch.randn(v, d, generator=g, dtype=dtype)
    return logits.requires_grad_(), labels, emb


def _response_positions(labels: torch.Tensor):
    """Naive loop: (b, t, y) for each logit position that predicts a response token."""
    return [
        (b, t, int(labels[b, t + 1]))
        for b in range(labels.shape[0])
        for t in range(labels.shape[1] - 1)
        if labels[b, t + 1] != IGN
    ]


def ref_emd(logits, labels, emb, reduction="token_mean"):
    """Eq. 5 written out: explicit one-hot P, explicit sums over the vocabulary."""
    v = logits.shape[-1]
    e_hat = emb / emb.norm(dim=-1, keepdim=True)
    terms, seqs = [], set()
    for b, t, y in _response_positions(labels):
        p = torch.zeros(v, dtype=logits.dtype)
        p[y] = 1.0
        q = torch.softmax(logits[b, t], -1)
        p_mean = sum(p[w] * e_hat[w] for w in range(v))
        q_mean = sum(q[w] * e_hat[w] for w in range(v))
        terms.append(-((p_mean - q_mean) ** 2).sum())
        seqs.add(b)
    total = torch.stack(terms).sum()
    return total / len(terms) if reduction == "token_mean" else total / len(seqs)


def ref_nll(logits, labels, reduction="token_mean"):
    terms, seqs = [], set()
    for b, t, y in _response_positions(labels):
        terms.append(-torch.log(torch.softmax(logits[b, t], -1)[y]))
        seqs.add(b)
    total = torch.stack(terms).sum()
    return total / len(terms) if reduction == "token_mean" else total / len(seqs)


def ref_nlcl(logits, labels):
    """Eq. 7 with probabilities multiplied out in float64."""
    per_seq: dict[int, torch.Tensor] = {}
    for b, t, y in _response_positions(labels):
        p = torch.softmax(logits[b, t].double(), -1)[y]
        per_seq[b] = per_seq.get(b, torch.ones((), dtype=torch.float64)) * p
    return torch.stack([-torch.log(1 - q) for q in per_seq.values()]).mean()


# ----------------------------------------------------------------------------- SFT


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_sum"])
def test_sft_matches_reference_and_cross_entropy(reduction):
    logits, labels, _ = _batch(0)
    got = sft_loss(logits, labels, reduction=reduction, ignore_index=IGN, chunk_size=5)
    torch.testing.assert_close(got, ref_nll(logits, labels, reduction), rtol=1e-12, atol=1e-12)
    if reduction == "token_mean":
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            labels[:, 1:].reshape(-1),
            ignore_index=IGN,
        )
        torch.testing.assert_close(got, ce, rtol=1e-12, atol=1e-12)


def test_sft_hand_case():
    # one response token, uniform logits over 4 tokens -> NLL = log 4
    logits = torch.zeros(1, 2, 4)
    labels = torch.tensor([[-100, 2]])
    assert sft_loss(logits, labels).item() == pytest.approx(math.log(4))


# ----------------------------------------------------------------------------- EMD


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_sum"])
def test_emd_matches_naive_reference(reduction):
    logits, labels, emb = _batch(1)
    got = emd_loss(logits, labels, emb, reduction=reduction, ignore_index=IGN, chunk_size=7)
    want = ref_emd(logits, labels, emb, reduction)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert got.item() <= 0


def test_emd_hand_case():
    # V=2, orthogonal unit embeddings, Q = (1/2, 1/2), P = onehot(0):
    # ê_0 - Q@Ê = (1, 0) - (0.5, 0.5) -> squared norm 0.5; raw scale must not matter.
    logits = torch.zeros(1, 2, 2)
    labels = torch.tensor([[-100, 0]])
    emb = torch.tensor([[3.0, 0.0], [0.0, 0.2]])
    assert emd_loss(logits, labels, emb).item() == pytest.approx(-0.5)


@pytest.mark.parametrize("chunk", [1, 4, 13, 1000])
def test_emd_chunked_equals_unchunked(chunk):
    logits, labels, emb = _batch(2, dtype=torch.float32)
    full = emd_loss(logits, labels, emb, ignore_index=IGN)
    (g_full,) = torch.autograd.grad(full, logits)
    part = emd_loss(logits, labels, emb, ignore_index=IGN, chunk_size=chunk)
    (g_part,) = torch.autograd.grad(part, logits)
    torch.testing.assert_close(part, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_part, g_full, rtol=0, atol=1e-6)


def test_emd_gradient_matches_finite_differences():
    logits, labels, emb = _batch(3, b=2, t=9, v=7, d=5)
    assert torch.autograd.gradcheck(
        lambda x: emd_loss(x, labels, emb, ignore_index=IGN, chunk_size=3), (logits,)
    )


def test_emd_masked_tokens_contribute_nothing():
    logits, labels, emb = _batch(4)
    loss = emd_loss(logits, labels, emb, ignore_index=IGN)
    (grad,) = torch.autograd.grad(loss, logits)
    # a logit row gets gradient only if it predicts a response token
    predicts = torch.zeros(labels.shape, dtype=torch.bool)
    predicts[:, :-1] = labels[:, 1:] != IGN
    assert grad[~predicts].abs().max() == 0
    assert grad[predicts].abs().sum(-1).min() > 0
    # changing logits at masked rows leaves the loss unchanged
    bumped = logits.detach().clone()
    bumped[~predicts] += torch.randn_like(bumped[~predicts]) * 10
    torch.testing.assert_close(emd_loss(bumped, labels, emb, ignore_index=IGN), loss.detach())


def test_emd_no_gradient_into_embeddings():
    logits, labels, emb = _batch(5)
    emb.requires_grad_()
    emd_loss(logits, labels, emb, ignore_index=IGN).backward()
    assert emb.grad is None


def _exact_emd(p: np.ndarray, q: np.ndarray, cost: np.ndarray) -> float:
    """EMD(P, Q; d) by the linear program of section 3.1 (γ >= 0 with marginals P and Q)."""
    v = len(p)
    a_eq = np.zeros((2 * v, v * v))
    for i in range(v):
        a_eq[i, i * v : (i + 1) * v] = 1  # Σ_y γ(i, y) = P(i)
        a_eq[v + i, i::v] = 1  # Σ_x γ(x, i) = Q(i)
    res = linprog(cost.ravel(), A_eq=a_eq, b_eq=np.concatenate([p, q]), bounds=(0, None))
    assert res.status == 0
    return float(res.fun)


@pytest.mark.parametrize("v", [5, 9, 14, 20])
def test_emd_term_is_lower_bound_of_exact_emd(v):
    """Proposition 1: |eq. 5 term| / (2|V|²) <= EMD(P, Q; d_c), d_c = ||ê_x - ê_y||²/2."""
    rng = np.random.default_rng(v)
    for trial in range(5):
        emb = rng.normal(size=(v, 4))
        e_hat = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        cost = ((e_hat[:, None] - e_hat[None]) ** 2).sum(-1) / 2
        logits = rng.normal(size=v) * 2
        q = np.exp(logits) / np.exp(logits).sum()
        y = int(rng.integers(v))
        p = np.eye(v)[y]
        term = emd_loss(
            torch.tensor(logits)[None, None].expand(1, 2, v),
            torch.tensor([[-100, y]]),
            torch.tensor(emb),
        ).item()
        exact = _exact_emd(p, q, cost)
        assert abs(term) / (2 * v * v) <= exact + 1e-9, (trial, term, exact)
        # the same bound for a general (not one-hot) P, as the proposition states
        p_gen = rng.dirichlet(np.ones(v))
        bound = ((p_gen @ e_hat - q @ e_hat) ** 2).sum() / (2 * v * v)
        assert bound <= _exact_emd(p_gen, q, cost) + 1e-9


# ----------------------------------------------------------------------------- NLCL


def test_nlcl_hand_cases():
    # one sequence of two tokens with p = 0.5 and 0.25 -> -log(1 - 0.125)
    half = torch.log(torch.tensor([0.5, 0.5]))
    quarter = torch.log(torch.tensor([0.25, 0.75]))
    logits = torch.stack([half, quarter, torch.zeros(2)])[None]  # (1, 3, 2)
    labels = torch.tensor([[-100, 0, 0]])
    assert nlcl_loss(logits, labels).item() == pytest.approx(-math.log(1 - 0.125), rel=1e-6)
    # two sequences -> mean over sequences
    logits2 = torch.cat([logits, logits.flip(-1)])
    labels2 = torch.tensor([[-100, 0, 0], [-100, 0, -100]])  # 2nd: p = 0.5 -> -log 0.5
    want = (-math.log(1 - 0.125) - math.log(1 - 0.5)) / 2
    assert nlcl_loss(logits2, labels2).item() == pytest.approx(want, rel=1e-6)


def test_nlcl_matches_float64_reference():
    logits, labels, _ = _batch(6, dtype=torch.float32)
    logits = (logits.detach() / 3).requires_grad_()  # keep probabilities away from 0 for a fair ref
    labels[:, 10:] = IGN  # short responses so Π p is not vanishingly small
    got = nlcl_loss(logits, labels, ignore_index=IGN)
    torch.testing.assert_close(
        got.double(), ref_nlcl(logits.detach(), labels), rtol=1e-5, atol=1e-9
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nlcl_finite_at_probability_near_one(dtype):
    # single token with p(y) = 1 - 1e-12: loss = -log(1e-12) = 27.63
    gap = math.log(1e12)
    logits = torch.tensor([[[gap, 0.0], [0.0, 0.0]]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([[-100, 0]])
    loss = nlcl_loss(logits, labels)
    want = gap + math.log1p(math.exp(-gap))  # -log(1 - p) with 1 - p = e^-gap / (1 + e^-gap)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nlcl_finite_at_probability_near_zero(dtype):
    # single token with p(y) = 1e-300 (fp64) or a product of tokens reaching 1e-300 (fp32)
    n_tok = 1 if dtype == torch.float64 else 10
    logp_tok = math.log(1e-300) / n_tok
    v = 2
    # logits [0, z] with log softmax_0 = -log(1 + e^z) = logp_tok
    z = math.log(math.expm1(-logp_tok))
    row = torch.tensor([0.0, z], dtype=dtype)
    logits = row.repeat(1, n_tok + 1, 1).clone().requires_grad_()
    labels = torch.tensor([[-100] + [0] * n_tok])
    loss = nlcl_loss(logits, labels)
    assert torch.isfinite(loss) and 0 <= loss.item() < 1e-6
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.shape[-1] == v


def test_nlcl_gradient_matches_finite_differences():
    logits, labels, _ = _batch(7, b=3, t=8, v=5)
    for variant in ("sequence", "token"):
        assert torch.autograd.gradcheck(
            lambda x, variant=variant: nlcl_loss(
                x, labels, variant=variant, ignore_index=IGN, chunk_size=4
            ),
            (logits,),
        )


def test_nlcl_token_variant_is_unlikelihood():
    logits, labels, _ = _batch(8)
    got = nlcl_loss(logits, labels, variant="token", ignore_index=IGN, chunk_size=6)
    terms = [
        -torch.log(1 - torch.softmax(logits[b, t], -1)[y])
        for b, t, y in _response_positions(labels)
    ]
    torch.testing.assert_close(got, torch.stack(terms).mean(), rtol=1e-10, atol=1e-12)


def test_log1mexp_accuracy():
    x = torch.tensor([-1e-20, -1e-8, -0.5, -0.7, -1.0, -30.0, -800.0], dtype=torch.float64)
    import mpmath  # ships with torch (via sympy): a 50-digit reference

    mpmath.mp.dps = 50
    want = torch.tensor(
        [float(mpmath.log(1 - mpmath.exp(v))) for v in x.tolist()], dtype=torch.float64
    )
    torch.testing.assert_close(log1mexp(x), want, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- KTO


def test_kto_matches_formula():
    pol = torch.tensor([-3.0, -5.0, -2.0], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-4.0, -4.5, -2.5], dtype=torch.float64)
    desirable = torch.tensor([True, False, True])
    beta, wd, wu = 0.5, 1.0, 1.5
    got = kto_loss(pol, ref, desirable, beta=beta, desirable_weight=wd, undesirable_weight=wu)
    r = [1.0, -0.5, 0.5]
    z0 = max(sum(r) / 3, 0.0)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = (
        wd * (1 - sig(beta * (r[0] - z0)))
        + wu * (1 - sig(beta * (z0 - r[1])))
        + wd * (1 - sig(beta * (r[2] - z0)))
    ) / 3
    assert got.item() == pytest.approx(want, rel=1e-12)
    assert torch.autograd.gradcheck(
        lambda p: kto_loss(p, ref, desirable, beta=beta, kl=torch.tensor(0.3)), (pol,)
    )


def test_sequence_logprobs():
    logits, labels, _ = _batch(9)
    got = sequence_logprobs(logits, labels, ignore_index=IGN, chunk_size=5)
    want = torch.zeros(labels.shape[0], dtype=logits.dtype)
    for b, t, y in _response_positions(labels):
        want[b] += torch.log_softmax(logits[b, t], -1)[y]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- combination


def _split(labels, kinds, kind):
    out = labels.clone()
    out[kinds != kind] = IGN
    return out


@pytest.mark.parametrize("method", ["emd", "nlcl"])
@pytest.mark.parametrize("reduction", ["token_mean", "sequence_sum"])
def test_combined_loss_is_sft_on_safe_plus_lambda_penalty_on_harmful(method, reduction):
    logits, labels, emb = _batch(10, b=4)
    labels[-1] = labels[0]  # make the last row non-empty again
    kinds = torch.tensor([SAFE, HARMFUL, SAFE, HARMFUL])
    parts = tasft_loss(
        logits,
        labels,
        kinds,
        method=method,
        lam=0.7,
        embeddings=emb,
        reduction=reduction,
        ignore_index=IGN,
        chunk_size=9,
    )
    sft = ref_nll(logits, _split(labels, kinds, SAFE), reduction)
    harm = _split(labels, kinds, HARMFUL)
    if method == "emd":
        pen = ref_emd(logits, harm, emb, reduction)
    else:
        pen = nlcl_loss(logits, harm, ignore_index=IGN)
    torch.testing.assert_close(parts.sft, sft, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(parts.penalty, pen, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(parts.total, sft + 0.7 * pen, rtol=1e-10, atol=1e-12)
    assert (parts.n_safe, parts.n_harmful) == (2, 2)


@pytest.mark.parametrize("method", ["emd", "nlcl", "sft", "stl"])
def test_lambda_zero_is_plain_sft_on_safe_rows(method):
    logits, labels, emb = _batch(11, b=4)
    kinds = torch.tensor([SAFE, HARMFUL, HARMFUL, SAFE])
    parts = tasft_loss(
        logits, labels, kinds, method=method, lam=0.0, embeddings=emb, ignore_index=IGN
    )
    want = sft_loss(logits, _split(labels, kinds, SAFE), ignore_index=IGN)
    torch.testing.assert_close(parts.total, want, rtol=0, atol=0)
    (g1,) = torch.autograd.grad(parts.total, logits)
    (g2,) = torch.autograd.grad(want, logits)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", ["emd", "nlcl"])
def test_only_safe_or_only_harmful_batches(method):
    logits, labels, emb = _batch(12, b=2)
    labels[-1] = labels[0]
    only_safe = tasft_loss(
        logits,
        labels,
        torch.tensor([SAFE, SAFE]),
        method=method,
        lam=2.0,
        embeddings=emb,
        ignore_index=IGN,
    )
    assert only_safe.penalty.item() == 0
    torch.testing.assert_close(only_safe.total, sft_loss(logits, labels, ignore_index=IGN))
    only_harm = tasft_loss(
        logits,
        labels,
        torch.tensor([HARMFUL, HARMFUL]),
        method=method,
        lam=2.0,
        embeddings=emb,
        ignore_index=IGN,
    )
    assert only_harm.sft.item() == 0 and only_harm.penalty.item() != 0
    torch.testing.assert_close(only_harm.total, 2.0 * only_harm.penalty)
    only_harm.total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_kto_through_tasft_loss():
    logits, labels, _ = _batch(13, b=4)
    labels[-1] = labels[0]
    kinds = torch.tensor([SAFE, HARMFUL, SAFE, HARMFUL])
    ref = sequence_logprobs(logits.detach() * 0.9, labels, ignore_index=IGN)
    parts = tasft_loss(
        logits, labels, kinds, method="kto", reference_logps=ref, kto_beta=0.2, ignore_index=IGN
    )
    pol = sequence_logprobs(logits, labels, ignore_index=IGN)
    want = kto_loss(pol, ref, kinds == SAFE, beta=0.2)
    torch.testing.assert_close(parts.total, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="reference_logps"):
        tasft_loss(logits, labels, kinds, method="kto", ignore_index=IGN)


def test_bf16_logits_close_to_fp32():
    logits, labels, emb = _batch(14, dtype=torch.float32)
    kinds = torch.tensor([SAFE, HARMFUL, SAFE])
    full = tasft_loss(
        logits, labels, kinds, method="emd", lam=1.0, embeddings=emb, ignore_index=IGN
    )
    half = tasft_loss(
        logits.detach().bfloat16().requires_grad_(),
        labels,
        kinds,
        method="emd",
        lam=1.0,
        embeddings=emb.bfloat16(),
        ignore_index=IGN,
    )
    assert half.total.dtype == torch.float32  # statistics are upcast
    torch.testing.assert_close(half.total, full.total.detach(), rtol=2e-2, atol=2e-2)
