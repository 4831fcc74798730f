"""Per-token log-probability of the data token and of its complement: the statistic behind the
SFT NLL (eq. 1), NLCL (eq. 7) and KTO's sequence log-probs, in reference and fused form."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tasft_ray.losses.chunks import TokenKernel

_LN2 = math.log(2.0)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Mächler 2012).

    Near 0, ``log(-expm1(x))`` keeps the digits ``log1p(-exp(x))`` loses; far below, the reverse.
    The inputs of the branch not taken are replaced by safe values so its gradient is never NaN.
    """
    near_zero = x > -_LN2
    a = torch.where(near_zero, x, torch.full_like(x, -1.0))
    b = torch.where(near_zero, torch.full_like(x, -1.0), x)
    return torch.where(near_zero, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(b)))


def token_logprob(logits: Tensor, targets: Tensor) -> Tensor:
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


def _logprob_fwd(z: Tensor, targets: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``token_logprob`` with one pass over (c, V) for the rows where p(y) <= 1/2.

    There log(1 - p) = log1mexp(log p) is exact; only rows with p > 1/2 need the complement
    summed over the other tokens, and those are computed on their own (few) rows.
    """
    lse = torch.logsumexp(z, dim=-1)
    logp = z.gather(1, targets[:, None]).squeeze(1) - lse
    near_one = logp > -_LN2
    log_comp = log1mexp(torch.where(near_one, torch.full_like(logp, -1.0), logp))
    if bool(near_one.any()):
        exact = token_logprob(z[near_one], targets[near_one])
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


# forward leaves z as it was, so the same backward serves both cases
LOGPROB = TokenKernel(token_logprob, _logprob_fwd, _logprob_bwd, _logprob_bwd)
