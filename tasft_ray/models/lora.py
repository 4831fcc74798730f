"""LoRA adapters on a loaded base model: only the adapter weights train."""

from __future__ import annotations

from tasft_ray.config import LoraConfig
from tasft_ray.models.loading import ModelError


def attach_lora(model, cfg: LoraConfig):
    """Wrap the base model in a peft LoRA model; only adapter weights train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ModelError(
            f"lora.target_modules: {missing} not in the model (it has e.g. "
            f"{sorted(n for n in names if n.endswith('proj'))[:8]})"
        )
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)
