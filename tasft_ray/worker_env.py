"""The environment every Ray worker process of a sweep or a generation run starts with.

Threads: Ray's own default is one OpenMP thread per worker; a training worker given N CPUs raises
it to N itself (training/ray_train.py), a generation actor likewise (inference/generator.py).

Allocator: on CPU a fused-loss chunk allocates (tokens x vocabulary) buffers of hundreds of MB
(262k x 1024 fp32 = 1 GiB for Gemma 3). glibc serves any block above its mmap threshold (at
most 32 MB by default) with a fresh mmap and unmaps it on free, so every chunk of every step
page-faults its buffers in again, an order of magnitude slower than filling a kept buffer
(bench/RESULTS.md). Raising the mmap and trim thresholds keeps freed blocks
in the heap for the next chunk. ``MALLOC_ARENA_MAX=1`` is what makes it reach the training
loop at all: Ray Train runs it in a non-main thread, and a thread's own arena cannot grow past
64 MB, so without it every large block is still mmap'd whatever the threshold. glibc reads
these at process start, hence environment variables for the workers rather than ``mallopt``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from tasft_ray.config import EngineConfig
from tasft_ray.errors import quiet_user_errors

MALLOC_REUSE = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": str(1 << 30),  # blocks up to 1 GiB come from the heap
    "MALLOC_TRIM_THRESHOLD_": str(4 << 30),  # and up to 4 GiB of free heap is kept
}


# Set on the driver, needed where the work runs: the API keys of judges (openai-moderation,
# AlpacaEval's judge) and of gated hub models. On a cluster the workers are other machines'
# processes, started by their own raylets, which never saw the driver's environment.
FORWARDED = ("OPENAI_API_KEY", "HF_TOKEN", "HF_HUB_OFFLINE")

# How often Ray Train's controller polls its worker group. Every change of a run's state (workers
# started, finished, failed) waits for the next poll, and Ray's default (2 s) cost about ten
# seconds a trial (a 2-trial tiny sweep: 50 s against 33 s at 0.2 s). A poll is one small call per
# worker. Ray Tune hands the driver's value to each trial's controller, which hands it to its
# workers; a user's own value wins.
TRAIN_POLL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


def default_train_poll() -> None:
    """Ray Train's poll interval, where the user has not chosen one (before Ray Train starts)."""
    os.environ.setdefault(*TRAIN_POLL)


# Ray's core worker logs at ERROR, once per trial, that Ray Train's own PreemptionWatcher actor
# (max_restarts=-1) keeps its constructor arguments in the object store (ray-project/ray#53727):
# Ray's internals, nothing a user can act on, and it reads like a failure on the sweep's console.
RAY_NOISE = r"has constructor arguments in the object store and max_restarts > 0"


def quiet_ray_noise() -> None:
    """Drop ``RAY_NOISE`` from the worker logs the driver prints, with Ray's own filter (the one
    ``RAY_DEDUP_LOGS_SKIP_REGEX`` sets; Ray reads that variable on import, so a user's own value
    wins and ours is set on the filter itself)."""
    from ray._private import ray_logging

    pattern = re.compile(RAY_NOISE)
    for dedup in (ray_logging.stdout_deduplicator, ray_logging.stderr_deduplicator):
        if dedup.skip_re is None:
            dedup.skip_re = pattern


def worker_env(e: EngineConfig) -> dict[str, str]:
    """Environment variables for Ray's runtime_env (``engine.cpu_malloc`` selects the
    allocator), with the driver's own values of ``FORWARDED``."""
    env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if e.cpu_malloc == "reuse":
        env.update(MALLOC_REUSE)
    env.update({k: os.environ[k] for k in (*FORWARDED, TRAIN_POLL[0]) if os.environ.get(k)})
    return env


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: user errors without Ray's copies of their traceback,
    and ``RAY_ADDRESS`` naming the cluster this worker belongs to. Ray's own helpers that look
    the cluster up from inside a worker (Ray Train's placement-group cleaner, through the state
    API) otherwise search the machine's processes and give up when a second Ray instance runs on
    it; a Tune trial stopped early then keeps its worker group's CPUs, and the next trial
    waits for them forever."""
    import ray

    quiet_user_errors()
    quiet_train_reports()
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


# Ray Train logs every ray.train.report of a worker at INFO, the whole metrics dict on one line:
# a screen of the sweep's console per trial that says what Tune's own table says. Its logger is
# named by the module's file path (found without importing Ray Train: 0.8 s per process).
_TRAIN_REPORT_MODULE = ("train", "v2", "_internal", "execution", "context.py")


def quiet_train_reports() -> None:
    """Ray Train's per-report log line at WARNING and above only (in a worker process)."""
    import ray

    path = Path(ray.__file__).parent.joinpath(*_TRAIN_REPORT_MODULE)
    logging.getLogger(str(path)).setLevel(logging.WARNING)
