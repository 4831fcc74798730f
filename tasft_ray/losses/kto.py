"""KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306), the unpaired baseline."""

from __future__ import annotations

import torch
from torch import Tensor


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
    """KTO, unpaired.

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
