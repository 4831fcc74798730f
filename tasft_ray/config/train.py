"""The ``train`` and ``engine`` sections: the optimisation, and the engine (DDP or DeepSpeed
ZeRO) that runs it on Ray Train workers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasft_ray.config.base import Section


class TrainConfig(Section):
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (paper: 1e-4).")
    weight_decay: float = Field(0.0, ge=0)
    micro_batch_size: int = Field(3, ge=1, description="Examples per forward pass (paper: 3).")
    grad_accum: int = Field(32, ge=1, description="Micro-batches per optimizer step (paper: 32).")
    num_workers: int = Field(1, ge=1, description="Data-parallel workers.")
    placement: Literal["pack", "spread", "strict_spread"] = Field(
        "pack",
        description="Where a trial's workers go: pack (as few nodes as fit: fastest all-reduce, "
        "the default for GPU nodes with several GPUs), spread (across nodes where it can: one "
        "worker per node, e.g. one GPU each), strict_spread (always one per node, or wait).",
    )
    global_batch_size: int | None = Field(
        None, ge=1, description="If set, must equal micro_batch_size x grad_accum x num_workers."
    )
    epochs: float = Field(3, gt=0, description="Passes over the mixture (paper: 3, Mistral 4).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine")
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    warmup_steps: int | None = Field(None, ge=0, description="Overrides warmup_ratio if set.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping (None: off).")
    seed: int = Field(0, description="Seeds data order, toxic sampling, init and dropout.")
    group_by_length: int = Field(
        0,
        ge=0,
        description="Sort each window of this many micro-batches by length, then shuffle the "
        "micro-batches (0: off): less padding, same examples per epoch.",
    )
    checkpoint_every: int = Field(0, ge=0, description="Steps between checkpoints (0: end only).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    output_dir: str = Field("runs/default", description="Checkpoints and metrics.jsonl go here.")
    log_every: int = Field(1, ge=1)


class EngineConfig(Section):
    kind: Literal["auto", "ddp", "deepspeed"] = Field(
        "auto", description="auto: DeepSpeed when CUDA is present, else DDP."
    )
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="DeepSpeed mixed precision (GPU only; CPU runs stay fp32)."
    )
    use_gpu: bool = Field(False, description="One GPU per Ray Train worker.")
    cpus_per_worker: float = Field(1.0, gt=0, description="Logical CPUs per Ray Train worker.")
    cpu_malloc: Literal["reuse", "system"] = Field(
        "reuse",
        description="reuse: Ray workers start with glibc keeping freed blocks up to 1 GiB for "
        "reuse (tasft_ray/worker_env.py), so the loss's tokens x vocabulary buffers are not "
        "page-faulted in anew at every chunk; system: glibc's defaults.",
    )
    max_failures: int = Field(
        1,
        ge=-1,
        description="Worker-group restarts from the last checkpoint after an error "
        "or a node lost without notice (-1: unlimited; Ray Train's FailureConfig.max_failures).",
    )
    max_preemptions: int = Field(
        -1,
        ge=-1,
        description="Restarts after a node is reclaimed with notice (a drained spot "
        "node), counted apart from max_failures (-1: unlimited; "
        "FailureConfig.max_preemption_failures).",
    )
    preemption_checkpoint: bool = Field(
        True,
        description="On notice of a node's reclaim, checkpoint at the next step (every rank "
        "asks Ray Train after every step: a barrier), so the restarted group loses no step.",
    )
