"""The fused loss's view of a causal LM: its final hidden states and output layer, no logits."""

from __future__ import annotations

import inspect

import torch

from tasft_ray.losses import OutputHead
from tasft_ray.models.loading import ModelError


class HiddenStateTap:
    """Run a causal LM for the fused loss: final hidden states + its output layer, no logits.

    The LM is still called through its wrappers (DDP, DeepSpeed, peft), so their hooks run;
    ``logits_to_keep=1`` makes it project a single position, and a forward hook on the decoder
    keeps ``last_hidden_state`` (after the final norm: exactly what the head would see). The
    output layer's logit transform (Gemma soft-capping, Cohere/Granite scaling) is read from the
    config, so ``OutputHead.logits()`` equals the model's own logits.
    """

    def __init__(self, model):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not hasattr(inner, "get_decoder") or inner.get_output_embeddings() is None:
            raise ModelError(f"{type(inner).__name__} has no decoder/output layer to fuse")
        self.decoder = inner.get_decoder()
        self.head = inner.get_output_embeddings()
        text = inner.config.get_text_config()
        self.softcap = getattr(text, "final_logit_softcapping", None)
        self.scale = float(getattr(text, "logit_scale", None) or 1.0)  # Cohere multiplies
        if getattr(text, "logits_scaling", None):  # Granite divides
            self.scale /= float(text.logits_scaling)
        self.keep_arg = "logits_to_keep" in inspect.signature(inner.forward).parameters

    def __call__(self, forward, **inputs) -> OutputHead:
        kept: list[torch.Tensor] = []

        def keep(_module, _args, output):
            kept.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

        handle = self.decoder.register_forward_hook(keep)
        try:
            forward(**inputs, **({"logits_to_keep": 1} if self.keep_arg else {}))
        finally:
            handle.remove()
        return OutputHead(kept[-1], self.head.weight, self.head.bias, self.scale, self.softcap)
