"""Validation during training, as the Train workers run it (``eval.validation``): before the
first step, every ``every`` steps and at the last one, the adapter being trained is scored on
the held-out split and the val/* metrics (and the objective Tune ranks by) go to Tune and MLflow.

Two ways, one protocol for the worker loop (``ray_train``):

- :class:`InlineValidation` (``eval.stage.mode: inline``): the worker group answers the
  validation prompts itself, every rank its shard, while training waits.
- :class:`StagedValidation` (``shared``): rank 0 hands each checkpoint's adapter to the sweep's
  evaluation stage and goes on training. A result reaches MLflow (at its checkpoint's step) as
  soon as it is ready and Tune with the next report, always in step order; the last reports
  wait for what is still in flight. Every report carries the latest objective (Tune's searcher
  needs one in each result), so the first report waits for the step-0 validation. Reports are
  collective in Ray Train (every rank makes the same ones), so their number never depends on
  what rank 0 alone knows: results ride on the reports the loop makes anyway, plus a fixed
  number at the end.

A checkpoint keeps the adapters of the validations still in flight when it was taken
(``pending_validation/step_N``): a trial restored from it submits again those, and the
checkpoint's own, that MLflow does not have yet, so no val/* step goes missing or appears twice.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from tasft_ray import tracking
from tasft_ray.files import folder_bytes, write_folder
from tasft_ray.objective import TUNE_METRIC, VAL_STEP
from tasft_ray.training.checkpoints import ADAPTER_DIR

log = logging.getLogger(__name__)

PENDING_DIR = "pending_validation"
MARKER = "val/seconds"  # logged by every validation: which steps MLflow has
BLOCKED = "val/blocked_seconds"  # how long rank 0 has waited on the stage (backpressure)


def make_validation(loop_config: dict, trainer, rank: int, world: int, mlflow: dict | None,
                    outbox=None):  # fmt: skip
    """The worker's validation: none, inline or through the stage (the ``validator`` the
    trial put in the loop config says which). ``outbox``: rank 0's (``tasft_ray.outbox``),
    through which staged results reach MLflow behind the training steps."""
    validator = loop_config.get("validator")
    if validator is None or not trainer.cfg.eval.validation.every:
        return NoValidation()
    if getattr(validator, "asynchronous", False):
        return StagedValidation(loop_config, trainer, rank, world, mlflow, outbox)
    return InlineValidation(loop_config, trainer, rank, world)


class NoValidation:
    on = False
    every_step = False  # whether the loop reports to Tune at every logged step
    logs_reports = True  # whether what is reported goes to MLflow as it is (else val/* apart)

    def resume(self, folder: Path) -> None:
        """Called with the checkpoint a restored trial starts from, while it exists."""

    def start(self) -> dict | None:
        """Before the first step: step-0 metrics for the loop to log and report, if any."""
        return None

    def at_step(self, metrics: dict) -> dict:
        return metrics

    def at_checkpoint(self, metrics: dict, local: Path) -> dict:
        return metrics

    def finish(self, metrics: dict) -> list[dict]:
        """Reports after the last step (the same number on every rank)."""
        return []


class _Scheduled(NoValidation):
    on = True

    def __init__(self, loop_config: dict, trainer, rank: int, world: int):
        self.validator = loop_config["validator"]
        self.objective = loop_config.get("objective")
        self.reference = loop_config.get("reference")
        self.trainer, self.rank, self.world = trainer, rank, world
        self.every = trainer.cfg.eval.validation.every
        self.latest: dict = {}

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.trainer.total_steps

    def scored(self, step: int, metrics: dict) -> dict:
        """val/* with the objective and the step they belong to."""
        out = {**metrics, VAL_STEP: step}
        if self.objective is not None:
            out[TUNE_METRIC] = self.objective.score(metrics, self.reference)
        return out


class InlineValidation(_Scheduled):
    """The worker group validates the model it trains, every rank its shard; Tune hears at
    checkpoints, each report carrying the latest validation."""

    def _run(self, step: int) -> dict:
        t = self.trainer
        self.latest = self.scored(step, self.validator(t.model, t.tokenizer, self.rank, self.world))
        return self.latest

    def start(self) -> dict | None:
        if self.trainer.step != 0:  # restored: the next checkpoint's validation comes soon
            return None
        return {"step": 0, **self._run(0)}

    def at_checkpoint(self, metrics: dict, local: Path) -> dict:
        if self.due(metrics["step"]):
            self._run(metrics["step"])
        return {**metrics, **self.latest}


class StagedValidation(_Scheduled):
    """Rank 0 submits to the stage and delivers results in step order; see the module doc."""

    every_step = True
    logs_reports = False

    def __init__(self, loop_config: dict, trainer, rank: int, world: int, mlflow: dict | None,
                 outbox=None):  # fmt: skip
        super().__init__(loop_config, trainer, rank, world)
        s = trainer.cfg.eval.stage
        self.max_pending = s.max_pending
        self.mlflow, self.outbox = mlflow, outbox
        self.pending: deque[tuple[int, dict[str, bytes], Any]] = deque()  # (step, files, ref)
        self.ready: deque[dict] = deque()  # delivered to MLflow, not yet to Tune
        self.blocked = 0.0  # seconds rank 0 waited on the stage
        self.logged: set[int] = set()  # the steps MLflow has
        self.resumed = False
        if rank == 0 and mlflow:
            if outbox is None:  # rank 0 normally shares its step logger's
                from tasft_ray.outbox import MetricOutbox

                self.outbox = outbox = MetricOutbox(mlflow["uri"], mlflow["run_id"])
            c = tracking.client(mlflow["uri"])
            history = {m.step for m in c.get_metric_history(mlflow["run_id"], MARKER)}
            # and those a restored checkpoint holds unsent, queued ahead of everything
            unsent = outbox.unsent() if outbox else []
            queued = {m.step for m in unsent if m.key == MARKER}
            self.logged = history | queued
            if self.logged:  # restored: carry the latest validation (only validations log
                # val/* and the objective, so the run's latest ones are its step's)
                newest = max(self.logged)
                if newest in queued:
                    got = {m.key: m.value for m in unsent if m.step == newest}
                else:
                    got = c.get_run(mlflow["run_id"]).data.metrics
                self.latest = {k: v for k, v in got.items()
                               if k.startswith("val/") or k == TUNE_METRIC}  # fmt: skip
                self.latest[VAL_STEP] = newest

    # ------------------------------------------------------------ rank 0's bookkeeping

    def _submit(self, step: int, files: dict[str, bytes]) -> None:
        if step in self.logged or any(p[0] == step for p in self.pending):
            return
        while len(self.pending) >= self.max_pending:  # backpressure: the stage is behind
            self._collect(block=True)
        self.pending.append((step, files, self.validator.submit(files)))

    def _collect(self, block: bool) -> None:
        """Move finished validations, oldest first, from in flight to delivered."""
        import ray

        while self.pending:
            step, _, ref = self.pending[0]
            start = time.perf_counter()
            done, _ = ray.wait([ref], timeout=None if block else 0)
            self.blocked += time.perf_counter() - start
            if not done:
                return
            self.pending.popleft()
            result = self.scored(step, ray.get(ref))
            self._log(step, result)
            self.ready.append(result)
            block = False  # one wait at most: then only what is already there

    def _log(self, step: int, result: dict) -> None:
        if self.mlflow and step not in self.logged:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            values = {**result, BLOCKED: self.blocked}  # rank 0's wait on the stage so far
            batch = [Metric(k, float(v), now, step) for k, v in values.items()
                     if k != VAL_STEP and isinstance(v, (int, float))]  # fmt: skip
            self.outbox.put(batch)
            self.logged.add(step)

    def _carry(self, metrics: dict, wait: bool) -> dict:
        """``metrics`` with the next delivered validation, else the latest one; with ``wait``,
        a validation is waited for when there has been none yet."""
        self._collect(block=False)
        if not self.ready and not self.latest and wait and self.pending:
            self._collect(block=True)
        if self.ready:
            self.latest = self.ready.popleft()
        out = {**metrics, **self.latest}
        return out | {BLOCKED: self.blocked}

    # ------------------------------------------------------------ the loop's calls

    def resume(self, folder: Path) -> None:
        """What was in flight when the checkpoint was taken, and its own validation if due,
        submitted again (those MLflow has are skipped)."""
        if self.rank != 0:
            return
        for sub in sorted((folder / PENDING_DIR).glob("step_*"), key=_step_of):
            self._submit(_step_of(sub), folder_bytes(sub))
        step = self.trainer.step
        if self.due(step):
            self._submit(step, folder_bytes(folder / ADAPTER_DIR))
        self.resumed = True

    def start(self) -> dict | None:
        if self.trainer.step == 0 and not self.resumed:
            files = self.trainer.adapter_files()  # collective under ZeRO-3
            if self.rank == 0:
                self._submit(0, files)
        return None

    def at_step(self, metrics: dict) -> dict:
        if self.rank != 0:
            return metrics
        return self._carry(metrics, wait=self.objective is not None)

    def at_checkpoint(self, metrics: dict, local: Path) -> dict:
        """Rank 0 (whose ``local`` holds the adapter just written) submits a due validation
        and keeps the adapters of those in flight in the checkpoint."""
        if self.rank != 0:
            return metrics
        step = metrics["step"]
        if self.due(step):
            self._submit(step, folder_bytes(local / ADAPTER_DIR))
        self._collect(block=False)
        for pending_step, files, _ in self.pending:
            if pending_step != step:
                write_folder(local / PENDING_DIR / f"step_{pending_step}", files)
        return self._carry(metrics, wait=self.objective is not None)

    def finish(self, metrics: dict) -> list[dict]:
        """The reports after the last step: a fixed number on every rank, rank 0's carrying
        what was still in flight, in step order, the last of them the final validation."""
        count = self.max_pending + 2
        if self.rank != 0:
            return [metrics] * count
        while self.pending:
            self._collect(block=True)
        out = [self._carry(metrics, wait=False) for _ in range(count - 1)]
        while len(self.ready) > 1:  # not expected (at most max_pending + 1 are ready): the
            self.ready.popleft()  # final validation must be the last report, MLflow has all
        return [*out, self._carry(metrics, wait=False)]


def _step_of(folder: Path) -> int:
    return int(folder.name.removeprefix("step_"))
