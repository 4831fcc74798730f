"""Frozen weights that DeepSpeed ZeRO-3 partitions, read whole where the loss needs them.

No-ops for ordinary tensors (ZeRO-2, DDP, one process), so callers need not know the engine.
"""

from __future__ import annotations

import contextlib

import torch


def embedding_matrix(model, which: str) -> torch.Tensor:
    """The frozen (V, d) token embeddings that define the EMD cost (input table or lm_head).

    A view of the weight when it is whole; a gathered copy when ZeRO-3 has already partitioned
    it (a model built under ``deepspeed.zero.Init``), since a view would go empty on release.
    """
    layer = model.get_input_embeddings() if which == "input" else model.get_output_embeddings()
    weight = layer.weight
    if not is_partitioned(weight):
        return weight.detach()
    with gathered([weight]):
        return weight.detach().clone()


def is_partitioned(param: torch.Tensor) -> bool:
    """True for a parameter DeepSpeed ZeRO-3 manages (it may hold only this rank's shard)."""
    return hasattr(param, "ds_id")


@contextlib.contextmanager
def gathered(params: list[torch.Tensor]):
    """Whole copies of ZeRO-3-partitioned ``params`` inside the block, released on exit.

    For code that reads a frozen weight outside its module's forward (the fused loss reads the
    output layer after the model has run), where DeepSpeed's own fetch hooks do not fire.
    Read-only: nothing is broadcast back. A no-op for ordinary tensors (ZeRO-2, DDP, one
    process), so callers need not know the engine.
    """
    zero = [p for p in params if p is not None and is_partitioned(p)]
    if not zero:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(zero):
        yield
