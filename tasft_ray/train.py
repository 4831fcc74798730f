"""The TA-SFT training loop of one worker: micro-batches, accumulation, checkpoints, resume.

Written as the function a Ray Train worker calls (rank / world size come in, metrics and
checkpoints go out through callbacks), and runnable on its own: ``tasft-ray train --config tiny``.

Data order is a pure function of (seed, epoch) and the optimizer step fixes the position in the
stream of micro-batches, so a resumed run replays exactly the batches a straight run would have
seen: no lost or repeated steps.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tasft_ray.config import Config, ConfigError
from tasft_ray.data.mixture import Mixture, build_mixture, collate, epoch_order
from tasft_ray.losses import LossParts, sequence_logprobs, tasft_loss
from tasft_ray.models import attach_lora, embedding_matrix, load_model

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
ADAPTER_DIR = "adapter"
METRICS_FILE = "metrics.jsonl"

MetricsFn = Callable[[dict], None]
CheckpointFn = Callable[[Path, dict], None]


@dataclass
class TrainResult:
    step: int
    metrics: dict
    checkpoint: Path | None


class TASFTTrainer:
    """Owns model, data, optimizer and schedule for one worker; no Ray inside."""

    def __init__(
        self, cfg: Config, rank: int = 0, world_size: int = 1, mixture: Mixture | None = None
    ):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        t = cfg.train
        torch.manual_seed(t.seed + rank)  # LoRA init and dropout; offset per rank
        self.tokenizer, base = load_model(cfg.model, seed=t.seed)
        self.model = attach_lora(base, cfg.lora)
        self.model.train()
        self.mixture = (
            mixture
            if mixture is not None
            else build_mixture(cfg.data, cfg.loss.method, self.tokenizer, t.seed, cfg.data_root)
        )
        self.micro_per_epoch = len(self.mixture) // (world_size * t.micro_batch_size)
        if self.micro_per_epoch == 0:
            raise ConfigError(
                f"the mixture has {len(self.mixture)} examples, fewer than train.micro_batch_size "
                f"x train.num_workers = {t.micro_batch_size * world_size}"
            )
        steps_per_epoch = self.micro_per_epoch / t.grad_accum
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
        self.embeddings = (
            embedding_matrix(self.model, cfg.loss.emd_embedding)
            if cfg.loss.method == "emd"
            else None
        )
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        self.scheduler = _scheduler(self.optimizer, cfg, self.total_steps)
        self.step = 0
        self._order_cache: tuple[int, list[int]] | None = None

    # ------------------------------------------------------------------ data

    def _micro_batch(self, m: int) -> dict[str, torch.Tensor]:
        """Micro-batch number ``m`` of the endless stream this rank reads."""
        t = self.cfg.train
        epoch, within = divmod(m, self.micro_per_epoch)
        if self._order_cache is None or self._order_cache[0] != epoch:
            order = epoch_order(len(self.mixture), t.seed, epoch)
            shard = order[self.rank :: self.world_size][: self.micro_per_epoch * t.micro_batch_size]
            self._order_cache = (epoch, shard)
        idx = self._order_cache[1][within * t.micro_batch_size : (within + 1) * t.micro_batch_size]
        return collate(self.mixture, idx, self.tokenizer.pad_token_id)

    def micro_batches(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        first = step * self.cfg.train.grad_accum
        for m in range(first, first + self.cfg.train.grad_accum):
            yield self._micro_batch(m)

    # ------------------------------------------------------------------ maths

    def loss(self, batch: dict[str, torch.Tensor]) -> LossParts:
        lc = self.cfg.loss
        logits = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # (B, T, V)
        reference = None
        if lc.method == "kto":  # with LoRA the reference model is the adapter switched off
            with torch.no_grad(), self.model.disable_adapter():
                ref_logits = self.model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
                reference = sequence_logprobs(ref_logits, batch["labels"], chunk_size=lc.chunk_size)
        return tasft_loss(
            logits,
            batch["labels"],
            batch["kinds"],
            method=lc.method,
            lam=lc.lam,
            embeddings=self.embeddings,
            reference_logps=reference,
            reduction=lc.reduction,
            nlcl_variant=lc.nlcl_variant,
            kto_beta=lc.kto_beta,
            kto_desirable_weight=lc.kto_desirable_weight,
            kto_undesirable_weight=lc.kto_undesirable_weight,
            chunk_size=lc.chunk_size,
        )

    def train_step(self) -> dict:
        """One optimizer step over grad_accum micro-batches; returns its metrics."""
        t = self.cfg.train
        start = time.perf_counter()
        sums = {"total": 0.0, "sft": 0.0, "penalty": 0.0}
        tokens = n_safe = n_harmful = 0
        for batch in self.micro_batches(self.step):
            parts = self.loss(batch)
            (parts.total / t.grad_accum).backward()
            for key in sums:
                sums[key] += float(getattr(parts, key).detach()) / t.grad_accum
            tokens += int(batch["attention_mask"].sum())
            n_safe, n_harmful = n_safe + parts.n_safe, n_harmful + parts.n_harmful
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm or float("inf"))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        elapsed = time.perf_counter() - start
        return {
            "step": self.step,
            "epoch": self.step * t.grad_accum / self.micro_per_epoch,
            "loss/total": sums["total"],
            "loss/sft": sums["sft"],
            "loss/penalty": sums["penalty"],
            "lr": lr,
            "grad_norm": float(norm),
            "tokens_per_s": tokens / elapsed,
            "n_safe": n_safe,
            "n_harmful": n_harmful,
        }

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, directory: Path) -> Path:
        """Adapter + optimizer + schedule + step + RNG, written to a temp dir then renamed."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
        self.model.save_pretrained(tmp / ADAPTER_DIR)
        torch.save(
            {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": self.cfg.model_dump(mode="json"),
            },
            tmp / STATE_FILE,
        )
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
        return directory

    def load_checkpoint(self, directory: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = Path(directory)
        state = torch.load(directory / STATE_FILE, weights_only=False)
        adapter = load_file(str(directory / ADAPTER_DIR / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(self.model, adapter)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{directory}: adapter does not match the model ({result})")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])

    # ------------------------------------------------------------------ loop

    def fit(
        self,
        on_metrics: MetricsFn | None = None,
        on_checkpoint: CheckpointFn | None = None,
        progress: bool = True,
    ) -> TrainResult:
        from tqdm.auto import tqdm

        t = self.cfg.train
        ckpt_root = Path(t.output_dir) / "checkpoints"
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not progress or self.rank != 0,
        )
        metrics: dict = {}
        last_ckpt = None
        while self.step < self.total_steps:
            metrics = self.train_step()
            bar.update(1)
            bar.set_postfix(
                loss=f"{metrics['loss/total']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}"
            )
            if on_metrics and self.step % t.log_every == 0:
                on_metrics(metrics)
            due = t.checkpoint_every and self.step % t.checkpoint_every == 0
            if due or self.step == self.total_steps:
                last_ckpt = self.save_checkpoint(ckpt_root / f"step_{self.step:06d}")
                _prune(ckpt_root, t.keep_checkpoints)
                if on_checkpoint:
                    on_checkpoint(last_ckpt, metrics)
        bar.close()
        return TrainResult(self.step, metrics, last_ckpt)


def _scheduler(optimizer, cfg: Config, total_steps: int):
    from transformers import get_scheduler

    t = cfg.train
    warmup = t.warmup_steps if t.warmup_steps is not None else round(t.warmup_ratio * total_steps)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[t.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def _prune(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temp dirs start with a dot)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())


class MetricsLog:
    """metrics.jsonl in the output dir; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if resume_step and path.exists():
            rows = [
                r for r in path.read_text().splitlines() if json.loads(r)["step"] <= resume_step
            ]
        path.write_text("".join(r + "\n" for r in rows))

    def __call__(self, metrics: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")


def run_training(cfg: Config, resume: str | Path | bool | None = None, progress: bool = True):
    """Single-process training as `tasft-ray train` runs it; returns a TrainResult."""
    trainer = TASFTTrainer(cfg)
    ckpt_root = Path(cfg.train.output_dir) / "checkpoints"
    found = list_checkpoints(ckpt_root)
    if resume is True:
        if not found:
            raise ConfigError(f"--resume: no checkpoint under {ckpt_root}")
        resume = found[-1]
    elif not resume and found:
        raise ConfigError(
            f"train.output_dir {cfg.train.output_dir} already has checkpoints (latest "
            f"{found[-1].name}); pass --resume to continue, or choose another output_dir"
        )
    if resume:
        trainer.load_checkpoint(Path(resume))
        log.info("resumed from %s at step %d", resume, trainer.step)
    Path(cfg.train.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.train.output_dir) / "config.yaml").write_text(cfg.to_yaml())
    metrics_log = MetricsLog(Path(cfg.train.output_dir) / METRICS_FILE, trainer.step)
    return trainer.fit(on_metrics=metrics_log, progress=progress)
