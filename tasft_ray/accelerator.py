"""What this process can run on: the torch device for ``auto``, and whether vLLM can run.

Judges and the answer pipeline both choose between HF on CPU/GPU and vLLM on a GPU; one
answer for both keeps them from disagreeing on the same machine.
"""

from __future__ import annotations

import importlib.util


def torch_device(device: str = "auto") -> str:
    """``auto`` -> cuda when a GPU is visible, else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def vllm_available() -> bool:
    """A GPU and the vllm package: what a vLLM engine needs."""
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
