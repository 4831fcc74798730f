"""What a training checkpoint folder holds, by name: the one place these file names live.

    <checkpoint>/adapter/              the peft LoRA adapter (rank 0)
    <checkpoint>/trainer_state.json    {"step": N} (rank 0); its presence marks a complete one
    <checkpoint>/rng_rank<R>.pt        each rank's torch RNG state
    <checkpoint>/optimizer.pt | deepspeed/   the engine's state (tasft_ray.training.engine)

A single-process run keeps them as ``<output_dir>/checkpoints/step_NNNNNN``; Ray Train merges the
ranks' folders into one checkpoint in its storage.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

ADAPTER_DIR = "adapter"
STATE_FILE = "trainer_state.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"  # peft writes both

log = logging.getLogger(__name__)


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def checkpoint_step(directory: Path) -> int:
    """The optimizer step a complete checkpoint was taken at."""
    return int(json.loads((Path(directory) / STATE_FILE).read_text())["step"])


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temp dirs start with a dot); one
    without its state file (cut off while written by hand or a foreign tool) is skipped, said."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = sorted(root.glob("step_*"))
    for p in found:
        if not (p / STATE_FILE).is_file():
            log.warning("%s is incomplete (no %s): not a checkpoint to resume from", p, STATE_FILE)
    return [p for p in found if (p / STATE_FILE).is_file()]


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints under ``root``."""
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
