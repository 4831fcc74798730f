"""Model specs: the tiny test model, LoRA attachment, and the real Gemma 3 270M wheel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from tasft_ray.config import LoraConfig, ModelConfig
from tasft_ray.data.mixture import collate, tokenize_examples
from tasft_ray.data.sources import Example
from tasft_ray.losses import SAFE, emd_loss, sft_loss
from tasft_ray.models import ModelError, attach_lora, embedding_matrix, load_model


def test_tiny_model_is_seeded_and_gets_lora():
    tok, a = load_model(ModelConfig(name="tiny"), seed=0)
    _, b = load_model(ModelConfig(name="tiny"), seed=0)
    _, c = load_model(ModelConfig(name="tiny"), seed=1)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    model = attach_lora(a, LoraConfig(r=4, alpha=8, dropout=0.0))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and any("v_proj" in n for n in trainable)
    assert embedding_matrix(model, "input").shape == (len(tok), 64)
    assert embedding_matrix(model, "output").shape == (len(tok), 64)


def test_bad_specs_are_one_line():
    _, model = load_model(ModelConfig(name="tiny"))
    with pytest.raises(ModelError, match=r"lora.target_modules: \['c_attn'\] not in the model"):
        attach_lora(model, LoraConfig(target_modules=["c_attn"]))
    with pytest.raises(ModelError, match="model.name 'gguf:/no/such.gguf': no such GGUF file"):
        load_model(ModelConfig(name="gguf:/no/such.gguf"))
    with pytest.raises(ModelError, match="model.name 'no-such-org/no-such-model'") as info:
        load_model(ModelConfig(name="no-such-org/no-such-model"))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_gemma_wheel_loads_real_weights_and_caches(tmp_path):
    """The embedded default model: real pretrained weights, a seconds-fast second load."""
    cache = str(Path.home() / ".cache" / "tasft_ray")  # the user cache: fast on reruns
    cfg = ModelConfig(name="gemma3-270m", cache_dir=cache)
    tok, model = load_model(cfg)
    assert (Path(cache) / "models" / "gemma3-270m" / "config.json").is_file()
    start = time.perf_counter()
    tok, model = load_model(cfg)
    assert time.perf_counter() - start < 30  # from the dequantised cache, not the GGUF
    assert len(tok) == 262144 and tok.eos_token_id is not None
    model = attach_lora(model, LoraConfig())
    data = tokenize_examples(
        tok,
        [Example("What is the capital of France?", output="The capital of France is Paris.")],
        SAFE,
        max_length=64,
    )
    batch = collate(data, [0], tok.pad_token_id)
    logits = model(input_ids=batch["input_ids"]).logits
    nll = sft_loss(logits, batch["labels"])
    # a random model would sit near log(262144) = 12.5 nats per token
    assert nll.item() < 4.0
    penalty = emd_loss(logits, batch["labels"], embedding_matrix(model, "input"), chunk_size=4)
    (nll + penalty).backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
