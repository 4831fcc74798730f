"""How gradients become optimizer steps: plain torch / DDP, or DeepSpeed ZeRO.

The trainer talks to one small interface (``accumulate``/``backward``/``step``/``save``/``load``)
so the TA-SFT loop is the same whichever engine runs it; only this module knows DDP's no_sync or
DeepSpeed's engine and checkpoint layout.

    engine: auto       DeepSpeed when CUDA is present, else DDP
    engine: ddp        torch DistributedDataParallel when world_size > 1 (plain torch at 1)
    engine: deepspeed  ZeRO stage 0-3 with a torch AdamW (nothing needs nvcc), bf16/fp16 on GPU
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from tasft_ray.config import EngineConfig, TrainConfig

log = logging.getLogger(__name__)

OPTIMIZER_FILE = "optimizer.pt"
DS_TAG = "deepspeed"


def resolve_engine(kind: str) -> str:
    if kind == "auto":
        return "deepspeed" if torch.cuda.is_available() else "ddp"
    return kind


def _scheduler(optimizer, t: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    warmup = t.warmup_steps if t.warmup_steps is not None else round(t.warmup_ratio * total_steps)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[t.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _adamw(model, t: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)


class TorchEngine:
    """Plain torch on one process, DistributedDataParallel across several."""

    def __init__(
        self,
        peft_model,
        t: TrainConfig,
        e: EngineConfig,
        total_steps: int,
        rank: int,
        world_size: int,
    ):
        self.peft_model, self.rank = peft_model, rank
        self.max_grad_norm = t.max_grad_norm
        distributed = world_size > 1 and torch.distributed.is_initialized()
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            device = next(peft_model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(peft_model, device_ids=ids)
        else:
            self.model = peft_model
        self.optimizer = _adamw(peft_model, t)
        self.scheduler = _scheduler(self.optimizer, t, total_steps)
        self.grad_accum = t.grad_accum

    def accumulate(self, last: bool):
        """Skip DDP's all-reduce on all but the last micro-batch of a step."""
        if last or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> float:
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: Path) -> None:
        """DDP replicas hold identical optimizer state: rank 0 writes it for everyone."""
        if self.rank == 0:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
            }
            torch.save(state, directory / OPTIMIZER_FILE)

    def load(self, directory: Path) -> None:
        state = torch.load(directory / OPTIMIZER_FILE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    @contextlib.contextmanager
    def full_parameters(self):
        yield


def _skip_shm_comm_build(deepspeed) -> None:
    """Keep DeepSpeed from JIT-compiling its ``deepspeed_shm_comm`` op on CPU.

    Its communication backend builds that op when it starts (30-60 s of C++ per machine and
    venv path, and a compiler must be installed), yet the op serves only DeepSpeed-Inference's
    ``inference_all_reduce``; ZeRO training's collectives go through torch.distributed (gloo
    here). DeepSpeed reads whether an op may be built from ``deepspeed.ops.__compatible_ops__``,
    a dict it keeps once computed, so marking the op unbuildable there before
    ``deepspeed.initialize`` leaves the backend without it. GPU accelerators have no such op.
    """
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


class DeepSpeedEngine:
    """DeepSpeed ZeRO over the peft model; DeepSpeed owns accumulation and clipping."""

    def __init__(
        self,
        peft_model,
        t: TrainConfig,
        e: EngineConfig,
        total_steps: int,
        rank: int,
        world_size: int,
    ):
        import deepspeed

        _skip_shm_comm_build(deepspeed)
        self.peft_model, self.rank, self.zero_stage = peft_model, rank, e.zero_stage
        ds_config = {
            "train_micro_batch_size_per_gpu": t.micro_batch_size,
            "gradient_accumulation_steps": t.grad_accum,
            "train_batch_size": t.micro_batch_size * t.grad_accum * world_size,
            "gradient_clipping": t.max_grad_norm or 0.0,
            "zero_optimization": {"stage": e.zero_stage},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if torch.cuda.is_available() and e.precision in ("bf16", "fp16"):
            ds_config[e.precision] = {"enabled": True}
        optimizer = _adamw(peft_model, t)
        scheduler = _scheduler(optimizer, t, total_steps)
        self.model, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=peft_model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )

    def accumulate(self, last: bool):
        return contextlib.nullcontext()  # DeepSpeed tracks the accumulation boundary itself

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)  # scaled by 1 / gradient_accumulation_steps inside
        self.model.step()  # an optimizer step only at the boundary

    def step(self) -> float:
        norm = self.model.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, directory: Path) -> None:
        """Every rank writes its ZeRO shard; frozen base weights are left out."""
        self.model.save_checkpoint(str(directory), tag=DS_TAG, exclude_frozen_parameters=True)

    def load(self, directory: Path) -> None:
        self.model.load_checkpoint(
            str(directory),
            tag=DS_TAG,
            load_module_strict=False,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )

    @contextlib.contextmanager
    def full_parameters(self):
        """Under ZeRO-3 the LoRA weights are sharded: gather them to save or read them."""
        if self.zero_stage < 3:
            yield
            return
        import deepspeed

        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            yield


def build_engine(
    peft_model,
    t: TrainConfig,
    e: EngineConfig,
    total_steps: int,
    rank: int = 0,
    world_size: int = 1,
):
    """The engine ``e.kind`` names (``auto`` resolved here) over the peft model."""
    kind = resolve_engine(e.kind)
    cls = DeepSpeedEngine if kind == "deepspeed" else TorchEngine
    log.info("engine: %s (world size %d)", kind, world_size)
    return cls(peft_model, t, e, total_steps, rank, world_size)
