"""Ray Train: the worker function and the TorchTrainer that runs it (Train V2 API).

The worker builds a ``TASFTTrainer`` and hands it two callbacks; the numbered comments mark the
only Ray lines. Rank 0 alone writes to MLflow: training metrics only at checkpoints (see
``StepLogger``), validation results as they arrive from the shared stage, each step once
(``training.validation``), so a restarted worker group never logs a step twice.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

import ray
import torch

from tasft_ray import tracking
from tasft_ray.config import Config
from tasft_ray.objective import VAL_STEP
from tasft_ray.storage import Location
from tasft_ray.tracking import StepLogger
from tasft_ray.training.loop import TASFTTrainer
from tasft_ray.training.validation import make_validation

log = logging.getLogger(__name__)


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    # [0] the config and the data come from the driver; nothing is read from this node's disk
    cfg = Config.from_dict(loop_config["config"], check_files=False)
    mixture = ray.get(loop_config["mixture"]) if loop_config.get("mixture") is not None else None
    # Ray sets OMP_NUM_THREADS=1 in every worker; a worker given N CPUs should use N threads.
    torch.set_num_threads(max(1, int(cfg.engine.cpus_per_worker)))
    ctx = ray.train.get_context()  # [1] who am I
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    trainer = TASFTTrainer(cfg, rank, world, mixture=mixture, device=ray.train.torch.get_device())

    # where this rank stages its checkpoints; a rank killed while staging (its group torn down
    # because another rank failed) leaves its folder: its restarted successor removes it
    staging = f"tasft_ckpt_{ctx.get_experiment_name()}_r{rank}_"
    for stale in Path(tempfile.gettempdir()).glob(f"{staging}*"):
        shutil.rmtree(stale, ignore_errors=True)

    mlflow = loop_config.get("mlflow")
    # rank 0's metrics go out through an outbox: a tracking outage never stops training
    steps = StepLogger(mlflow["uri"], mlflow["run_id"]) if rank == 0 and mlflow else None
    checkpoint = ray.train.get_checkpoint()  # [2] resume after a failure or a restore
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as directory:
        if steps and directory:  # the rows its checkpoint held unsent go first
            steps.restore(Path(directory))
        validation = make_validation(loop_config, trainer, rank, world, mlflow,
                                     steps.outbox if steps else None)  # fmt: skip
        if directory:
            trainer.load_checkpoint(Path(directory))
            validation.resume(Path(directory))
            log.info("rank %d resumed at step %d", rank, trainer.step)

    nodes = _node_ids(world)
    if steps:
        tracking.client(mlflow["uri"]).set_tag(mlflow["run_id"], NODES_TAG, ",".join(nodes))

    first = validation.start()  # where the curves start: the untrained adapter
    if first is not None:
        if steps:
            steps.add(_logged(first))
        if loop_config.get("objective") is not None:  # Tune ranks by it from the start
            ray.train.report(first)

    def on_metrics(metrics: dict) -> None:
        if steps:
            steps.add(metrics)
        # with inline validation Tune hears at checkpoints, objective and all
        if not validation.on or validation.every_step:
            ray.train.report(validation.at_step(metrics))  # [3] every rank (a barrier)

    def on_checkpoint(metrics: dict) -> None:
        # staged in a temp dir that goes once Ray has copied it to storage (a synchronous
        # upload): kept, one stage per checkpoint would fill the worker's disk over a sweep
        with tempfile.TemporaryDirectory(prefix=staging) as local:
            trainer.write_checkpoint(Path(local))  # each rank its share; Ray merges them
            reported = validation.at_checkpoint(metrics, Path(local))
            if steps:
                steps.add(_logged(reported) if validation.logs_reports else metrics)
                steps.flush()
                steps.save(Path(local))  # what is still unsent survives this worker
            # [4] persist the checkpoint with this step's metrics
            ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(local))

    watched = (
        tracking.system_metrics(mlflow["uri"], mlflow["run_id"], cfg.tracking)
        if rank == 0 and mlflow
        else contextlib.nullcontext()
    )  # the node that trains
    preempted = PreemptionCheck() if cfg.engine.preemption_checkpoint else None
    with watched:
        result = trainer.fit(on_metrics=on_metrics, on_checkpoint=on_checkpoint,
                             progress=rank == 0, checkpoint_now=preempted)  # fmt: skip
    last = {"step": trainer.step, **result.metrics}
    for metrics in validation.finish(last):  # the validations still in flight
        ray.train.report(metrics)
    if steps:  # the trial ends once its metrics are in MLflow (or the wait is given up)
        steps.drain(cfg.tracking.outage_wait)


class PreemptionCheck:
    """Whether a node of this worker group is being drained with notice (a spot reclaim): Ray
    Train tells every rank alike (``get_preemption_info`` is a collective), and the first step
    after the notice takes a checkpoint, once per notice, so the group Ray restarts on the
    nodes left loses no step. Without notice the last scheduled checkpoint is where it resumes."""

    def __init__(self):
        self.seen: set[tuple] = set()

    def __call__(self) -> bool:
        info = ray.train.get_preemption_info()  # [5] every rank, every step
        if info is None:
            return False
        key = (info.deadline_ms, tuple(info.preempted_node_ids))
        if key in self.seen:
            return False
        self.seen.add(key)
        log.warning("node(s) %s to be reclaimed (deadline %s ms): checkpointing now",
                    ", ".join(info.preempted_node_ids), info.deadline_ms)  # fmt: skip
        return True


def _logged(metrics: dict) -> dict:
    """What goes to MLflow of a report: ``val_step`` is Tune's (MLflow has the step itself)."""
    return {k: v for k, v in metrics.items() if k != VAL_STEP}


def _node_ids(world: int) -> list[str]:
    """The Ray node id of every rank, in rank order (where the worker group runs)."""
    me = ray.get_runtime_context().get_node_id()
    if world == 1 or not torch.distributed.is_initialized():
        return [me]
    nodes: list[str] = [""] * world
    torch.distributed.all_gather_object(nodes, me)
    return nodes


NODES_TAG = "tasft.nodes"  # MLflow tag: the node of each rank, in rank order (last placement)
PLACEMENT = {"pack": "PACK", "spread": "SPREAD", "strict_spread": "STRICT_SPREAD"}


def build_trainer(
    cfg: Config,
    name: str,
    storage: Location,
    mlflow: dict | None = None,
    callbacks: list | None = None,
    mixture=None,
    validation: dict | None = None,
):
    """A TorchTrainer for one training run of ``cfg`` (one Tune trial, or a plain fit):
    checkpoints in ``storage`` (a folder or an object store), the training mixture from Ray's
    object store when ``mixture`` (an ObjectRef) is given, validation during training with
    ``validation`` ({validator, objective, reference}: see ``training.validation``)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    e = cfg.engine
    backend = "nccl" if e.use_gpu else "gloo"
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.model_dump(mode="json"),
            "mlflow": mlflow,
            "mixture": mixture,
            **(validation or {}),
        },
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=e.use_gpu,
            resources_per_worker={"CPU": e.cpus_per_worker},
            placement_strategy=PLACEMENT[cfg.train.placement],
        ),
        run_config=RunConfig(
            name=name,
            failure_config=FailureConfig(
                max_failures=e.max_failures, max_preemption_failures=e.max_preemptions
            ),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=callbacks or [],
            **storage.ray_storage(),
        ),
    )
