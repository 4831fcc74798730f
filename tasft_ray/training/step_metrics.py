"""A step's metrics over the whole worker group: each rank trains on its own shard, so its loss
is one sample of the step's; what Tune and MLflow get is the token-weighted mean over ranks.

Each loss term is weighted by the response tokens it was computed on (all of them for the total,
the safe rows' for the SFT term, the harmful rows' for the penalty), and the counts are summed.
On one rank the numbers are the rank's own, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# loss term -> the token count that weighs it
WEIGHTS = {
    "loss/total": "response_tokens",
    "loss/sft": "safe_tokens",
    "loss/penalty": "harmful_tokens",
}
SUMMED = ("response_tokens", "safe_tokens", "harmful_tokens", "tokens", "n_safe", "n_harmful")

SumOverRanks = Callable[[Sequence[float]], Sequence[float]]


def reduce_over_ranks(local: dict[str, float], sum_over_ranks: SumOverRanks) -> dict[str, float]:
    """``local`` (one rank's step metrics) -> the group's: weighted means of the loss terms,
    sums of the counts; ``sum_over_ranks`` adds a vector element-wise over the ranks. A term
    with no tokens anywhere is 0."""
    vector = [local[term] * local[w] for term, w in WEIGHTS.items()]
    vector += [float(local[c]) for c in SUMMED]
    total = list(sum_over_ranks(vector))
    sums = dict(zip(SUMMED, total[len(WEIGHTS) :], strict=True))
    out = dict(local) | sums
    for i, (term, w) in enumerate(WEIGHTS.items()):
        out[term] = total[i] / sums[w] if sums[w] else 0.0
    return out


def torch_sum_over_ranks(vector: Sequence[float]) -> list[float]:
    """Element-wise sum over the ranks of the default process group (float64 all-reduce)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(list(vector), dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()
