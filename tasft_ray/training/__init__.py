"""Training: model specs to base + LoRA (models), gradients to optimizer steps (engine), the
per-worker TA-SFT loop (loop), checkpoint layout (checkpoints), one process (local) or a Ray
Train worker group (ray_train)."""
