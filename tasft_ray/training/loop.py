"""The TA-SFT training loop of one worker: micro-batches, accumulation, checkpoints, resume.

``TASFTTrainer`` has no Ray inside: ``tasft-ray train`` runs it on one process
(``tasft_ray.training.local``), and ``train_loop_per_worker`` runs it inside a Ray Train worker
(``tasft_ray.training.ray_train``).

Data order is a pure function of (seed, epoch) and the optimizer step fixes the position in the
stream of micro-batches, so a resumed run replays exactly the batches a straight run would have
seen: no lost or repeated steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tasft_ray.config import Config, ConfigError
from tasft_ray.data.mixture import Mixture, build_mixture, collate, epoch_order, group_by_length
from tasft_ray.errors import one_line
from tasft_ray.files import atomic_dir, folder_bytes
from tasft_ray.losses import (
    HARMFUL,
    IGNORE_INDEX,
    SAFE,
    LossParts,
    OutputHead,
    sequence_logprobs,
    tasft_loss,
    token_logprobs,
)
from tasft_ray.models import (
    HiddenStateTap,
    attach_lora,
    embedding_matrix,
    gathered,
    is_partitioned,
    load_model,
)
from tasft_ray.training.checkpoints import (
    ADAPTER_DIR,
    ADAPTER_WEIGHTS,
    STATE_FILE,
    checkpoint_step,
    prune,
    rng_file,
    step_dir_name,
)
from tasft_ray.training.engine import build_engine
from tasft_ray.training.step_metrics import (
    SUMMED,
    WEIGHTS,
    reduce_over_ranks,
    torch_sum_over_ranks,
)

log = logging.getLogger(__name__)

MetricsFn = Callable[[dict], None]


class InjectedFault(RuntimeError):
    """Raised once by the testing.fail_at_step hook."""


def _batch_counts(batch: dict[str, torch.Tensor], parts: LossParts) -> dict[str, int]:
    """A micro-batch's token counts: input tokens, and response tokens by kind of row."""
    per_row = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(1)
    return {
        "tokens": int(batch["attention_mask"].sum()),
        "response_tokens": int(per_row.sum()),
        "safe_tokens": int(per_row[batch["kinds"] == SAFE].sum()),
        "harmful_tokens": int(per_row[batch["kinds"] == HARMFUL].sum()),
        "n_safe": parts.n_safe,
        "n_harmful": parts.n_harmful,
    }


@dataclass
class TrainResult:
    step: int
    metrics: dict
    checkpoint: Path | None
    finished_before: bool = False  # resumed at its last step: nothing was trained


class TASFTTrainer:
    """Owns model, data, engine and schedule for one worker."""

    def __init__(
        self,
        cfg: Config,
        rank: int = 0,
        world_size: int = 1,
        mixture: Mixture | None = None,
        device: torch.device | None = None,
    ):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        t = cfg.train
        torch.manual_seed(t.seed + rank)  # LoRA init and dropout; offset per rank
        self.tokenizer, base = load_model(cfg.model, seed=t.seed)
        self.device = device or torch.device("cpu")
        self.model = attach_lora(base, cfg.lora).to(self.device)
        self.model.train()
        self.mixture = (
            mixture
            if mixture is not None
            else build_mixture(cfg.data, cfg.loss.method, self.tokenizer, t.seed, cfg.data_root)
        )
        if cfg.loss.method == "star" and self.mixture.safety is None:
            raise ConfigError(
                "loss.method=star trains on STAR scores computed with the mixture by "
                "loss.star_judge; build it with tasft_ray.sweep.prepared.training_mixture (as "
                "sweeps and `tasft-ray train` do) and pass it as the trainer's mixture"
            )
        self.micro_per_epoch = len(self.mixture) // (world_size * t.micro_batch_size)
        if self.micro_per_epoch == 0:
            raise ConfigError(
                f"the mixture has {len(self.mixture)} examples, fewer than train.micro_batch_size "
                f"x train.num_workers = {t.micro_batch_size * world_size}"
            )
        steps_per_epoch = self.micro_per_epoch / t.grad_accum
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * steps_per_epoch))
        self.embeddings = self._emd_embeddings(cfg.loss) if cfg.loss.method == "emd" else None
        self.tap = HiddenStateTap(self.model) if cfg.loss.impl == "fused" else None
        self.engine = build_engine(self.model, t, cfg.engine, self.total_steps, rank, world_size)
        self.step = 0
        self.run_sums: dict[str, tuple[float, float]] = {}  # term -> (weighted sum, tokens)
        self._order_cache: tuple[int, list[int]] | None = None

    def _emd_embeddings(self, lc) -> torch.Tensor:
        """Built once per run, before the engine exists, and a copy, not a view: ZeRO-3
        partitions the frozen embedding too once the engine starts, and gathering a V x d table
        every step would cost an all-gather per step for a constant. The penalty only needs the
        expected embedding to bf16 precision when asked."""
        emb = embedding_matrix(self.model, lc.emd_embedding)
        return emb.to(torch.bfloat16 if lc.emd_dtype == "bfloat16" else emb.dtype, copy=True)

    # ------------------------------------------------------------------ data

    def _micro_batch(self, m: int) -> dict[str, torch.Tensor]:
        """Micro-batch number ``m`` of the endless stream this rank reads."""
        t = self.cfg.train
        epoch, within = divmod(m, self.micro_per_epoch)
        if self._order_cache is None or self._order_cache[0] != epoch:
            order = epoch_order(len(self.mixture), t.seed, epoch)
            shard = order[self.rank :: self.world_size][: self.micro_per_epoch * t.micro_batch_size]
            lengths = [len(ids) for ids in self.mixture.input_ids]
            shard = group_by_length(
                shard, lengths, t.micro_batch_size, t.group_by_length, t.seed, epoch
            )
            self._order_cache = (epoch, shard)
        idx = self._order_cache[1][within * t.micro_batch_size : (within + 1) * t.micro_batch_size]
        batch = collate(self.mixture, idx, self.tokenizer.pad_token_id)
        return {k: v.to(self.device) for k, v in batch.items()}

    def micro_batches(self, step: int) -> Iterator[dict[str, torch.Tensor]]:
        first = step * self.cfg.train.grad_accum
        for m in range(first, first + self.cfg.train.grad_accum):
            yield self._micro_batch(m)

    # ------------------------------------------------------------------ maths

    def _outputs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor | OutputHead:
        """Full logits (reference) or hidden states + output layer (fused)."""
        if self.tap is not None:
            return self.tap(self.engine.model, **inputs)
        return self.engine.model(**inputs).logits  # (B, T, V)

    def loss(self, batch: dict[str, torch.Tensor]) -> LossParts:
        lc = self.cfg.loss
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        outputs = self._outputs(inputs)
        reference_outputs = None
        if lc.method in ("kto", "star"):  # with LoRA the reference is the adapter switched off
            with torch.no_grad(), self.model.disable_adapter():
                reference_outputs = self._outputs(inputs)
        with self._output_layer(outputs):
            return self._loss_terms(batch, outputs, reference_outputs)

    @staticmethod
    def _output_layer(outputs: torch.Tensor | OutputHead):
        """The output layer whole for the fused loss, once per micro-batch.

        Under ZeRO-3 the model's forward released its shard of the (V, d) head (the tap only
        asked it for one position), so the fused loss gathers it here. Once per micro-batch, not
        per chunk: every chunk needs all V rows anyway, so per-chunk gathers would only repeat
        the all-gather for the same peak. The frozen head's gradient w.r.t. the hidden states is
        taken during the loss's forward (``FusedHeadStats``), so nothing needs it in backward and
        it is released before the engine's backward and step, where DeepSpeed's own hooks run.
        """
        if not isinstance(outputs, OutputHead):
            return contextlib.nullcontext()
        layer = [p for p in (outputs.weight, outputs.bias) if p is not None]
        if any(is_partitioned(p) and p.requires_grad for p in layer):
            # its gradient would be computed after the release, outside DeepSpeed's hooks
            raise ConfigError(
                "loss.impl=fused under DeepSpeed ZeRO-3 needs a frozen output layer (LoRA); "
                "with a trainable one set loss.impl=reference"
            )
        return gathered(layer)

    def _loss_terms(
        self,
        batch: dict[str, torch.Tensor],
        outputs: torch.Tensor | OutputHead,
        reference_outputs: torch.Tensor | OutputHead | None,
    ) -> LossParts:
        lc = self.cfg.loss
        reference = reference_tokens = None
        if reference_outputs is not None:
            with torch.no_grad():
                if lc.method == "star":  # per token: ★DSS's KL estimate at the data token
                    reference_tokens = token_logprobs(
                        reference_outputs, batch["labels"], chunk_size=lc.chunk_size
                    )
                else:
                    reference = sequence_logprobs(
                        reference_outputs, batch["labels"], chunk_size=lc.chunk_size
                    )
        return tasft_loss(
            outputs,
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
            star_safety=batch.get("safety"),
            reference_token_logps=reference_tokens,
            star_kl_weight=lc.star_kl_weight,
            chunk_size=lc.chunk_size,
        )

    def train_step(self) -> dict:
        """One optimizer step over grad_accum micro-batches; returns its metrics, over the
        whole worker group (``step_metrics``). ``self.local_metrics`` keeps this rank's own."""
        t = self.cfg.train
        start = time.perf_counter()
        sums = {"total": 0.0, "sft": 0.0, "penalty": 0.0}
        counts = dict.fromkeys(SUMMED, 0)
        lr = self.engine.lr()
        for i, batch in enumerate(self.micro_batches(self.step)):
            with self.engine.accumulate(last=i == t.grad_accum - 1):
                parts = self.loss(batch)
                self.engine.backward(parts.total)
            for key in sums:
                sums[key] += float(getattr(parts, key).detach()) / t.grad_accum
            for key, n in _batch_counts(batch, parts).items():
                counts[key] += n
        norm = self.engine.step()
        self.step += 1
        local = {
            "step": self.step,
            "epoch": self.step * t.grad_accum / self.micro_per_epoch,
            "loss/total": sums["total"],
            "loss/sft": sums["sft"],
            "loss/penalty": sums["penalty"],
            "lr": lr,
            "grad_norm": norm,
            **counts,
        }
        self.local_metrics = local
        metrics = local
        if self.world_size > 1 and torch.distributed.is_initialized():
            metrics = reduce_over_ranks(local, torch_sum_over_ranks)
        metrics["tokens_per_s"] = metrics["tokens"] / (time.perf_counter() - start)
        return metrics | self._run_averages(metrics)

    def _run_averages(self, metrics: dict) -> dict[str, float]:
        """avg/loss/*: each loss term over every step so far, token-weighted (what a trial's
        loss was; the last step alone can lack harmful rows, making its penalty 0)."""
        out = {}
        for term, weight in WEIGHTS.items():
            total, tokens = self.run_sums.get(term, (0.0, 0.0))
            total, tokens = total + metrics[term] * metrics[weight], tokens + metrics[weight]
            self.run_sums[term] = (total, tokens)
            out[f"avg/{term}"] = total / tokens if tokens else 0.0
        return out

    # ------------------------------------------------------------------ checkpoints

    def write_checkpoint(self, directory: Path) -> None:
        """This rank's share of a checkpoint: adapter + step (rank 0), RNG, engine state.

        Every rank writes into its own ``directory``; Ray merges the ranks' directories into one
        checkpoint, and a local run passes the same directory on its single rank.
        """
        directory.mkdir(parents=True, exist_ok=True)
        with self.engine.full_parameters():
            if self.rank == 0:
                self.model.save_pretrained(directory / ADAPTER_DIR)
        if self.rank == 0:
            state = {"step": self.step, "run_sums": self.run_sums}
            (directory / STATE_FILE).write_text(json.dumps(state))
        torch.save(torch.get_rng_state(), directory / rng_file(self.rank))
        self.engine.save(directory)

    def adapter_files(self) -> dict[str, bytes]:
        """The adapter as peft saves it, file name -> bytes, on rank 0 ({} on the others).
        Every rank calls it: under ZeRO-3 the gather of the full parameters is collective."""
        with self.engine.full_parameters():
            if self.rank != 0:
                return {}
            with tempfile.TemporaryDirectory(prefix="tasft_adapter_") as tmp:
                self.model.save_pretrained(tmp)
                return folder_bytes(tmp)

    def save_checkpoint(self, directory: Path) -> Path:
        """A complete single-process checkpoint, written to a temp dir then renamed."""
        with atomic_dir(directory) as tmp:
            self.write_checkpoint(tmp)
        return Path(directory)

    def load_checkpoint(self, directory: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = Path(directory)
        adapter = load_file(str(directory / ADAPTER_DIR / ADAPTER_WEIGHTS))
        try:
            with self.engine.full_parameters():
                result = set_peft_model_state_dict(self.model, adapter)
        except RuntimeError as exc:  # a tensor of another shape: lora.r differs
            raise ConfigError(
                f"{directory}: its adapter does not fit this model and lora settings "
                f"(lora.r, lora.target_modules and model.name must match the run that wrote "
                f"it): {one_line(str(exc).splitlines()[-1], 200)}"
            ) from None
        if getattr(result, "unexpected_keys", None):
            raise ConfigError(
                f"{directory}: its adapter does not fit this model and lora settings (unexpected "
                f"keys, e.g. {result.unexpected_keys[0]}; lora.target_modules differ?)"
            )
        self.engine.load(directory)
        rng = directory / rng_file(self.rank)
        if rng.is_file():  # absent when resuming on more ranks than wrote the checkpoint
            torch.set_rng_state(torch.load(rng))
        self.step = checkpoint_step(directory)
        state = json.loads((directory / STATE_FILE).read_text())
        self.run_sums = {k: tuple(v) for k, v in state.get("run_sums", {}).items()}

    # ------------------------------------------------------------------ loop

    def fit(
        self,
        on_metrics: MetricsFn | None = None,
        on_checkpoint: Callable[[dict], Path | None] | None = None,
        progress: bool = True,
        checkpoint_now: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train to total_steps; ``on_checkpoint(metrics)`` persists one when due, or after any
        step at which ``checkpoint_now()`` (asked on every rank after every step) says so."""
        from tqdm.auto import tqdm

        t = self.cfg.train
        on_checkpoint = on_checkpoint or self._local_checkpoint
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            unit="step",
            disable=not progress or self.rank != 0,
        )
        metrics: dict = {}
        last = None
        while self.step < self.total_steps:
            metrics = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss/total']:.4f}")
            if self.cfg.testing.fail_at_step == self.step and self.rank == 0:
                _fail_once(Path(t.output_dir) / ".fault_injected", self.step)
            due = t.checkpoint_every and self.step % t.checkpoint_every == 0
            if checkpoint_now is not None and checkpoint_now():
                due = True  # e.g. a node about to be reclaimed: keep the work done so far
            if due or self.step == self.total_steps:
                last = on_checkpoint(metrics)
            elif on_metrics and self.step % t.log_every == 0:
                on_metrics(metrics)
        bar.close()
        return TrainResult(self.step, metrics, last)

    def _local_checkpoint(self, metrics: dict) -> Path:
        root = Path(self.cfg.train.output_dir) / "checkpoints"
        path = self.save_checkpoint(root / step_dir_name(self.step))
        prune(root, self.cfg.train.keep_checkpoints)
        return path


def _fail_once(marker: Path, step: int) -> None:
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(step))
    raise InjectedFault(f"testing.fail_at_step: injected failure at step {step}")
