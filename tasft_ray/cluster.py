"""Joining or starting the Ray cluster every Ray-using command runs on.

``ray job submit`` and ``RAY_ADDRESS`` name a running cluster to join; otherwise a new local one
is started with enough logical CPUs for the work (a trial's driver takes one CPU beside its
workers, or the workers never start) and token auth off (Ray 2.60 turns it on by default, which
breaks local ``ray job submit``).
"""

from __future__ import annotations

import math
import os

from tasft_ray.config import Config
from tasft_ray.worker_env import default_train_poll, quiet_ray_noise, worker_env


def logical_cpus(cfg: Config) -> int:
    """Each trial needs its driver (1 CPU) plus its workers, or workers never start; a shared
    evaluation stage holds its evaluators' CPUs for the whole sweep."""
    per_trial = 1 + cfg.train.num_workers * cfg.engine.cpus_per_worker
    s = cfg.eval.stage
    stage = s.evaluators * s.cpus_per_evaluator if s.mode == "shared" else 0
    need = cfg.sweep.max_concurrent_trials * per_trial + stage
    return cfg.sweep.num_cpus or int(max(2, math.ceil(need)))


def init_ray(cfg: Config, num_cpus: int | None = None) -> None:
    """Join a running cluster (ray job submit, RAY_ADDRESS) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    default_train_poll()
    quiet_ray_noise()
    runtime_env = {
        "env_vars": worker_env(cfg.engine),
        "worker_process_setup_hook": "tasft_ray.worker_env.setup_worker",
    }
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local use: no token auth
        ray.init(
            address="local",  # a new local cluster, never one a stale `ray start` file names
            num_cpus=num_cpus or logical_cpus(cfg),
            include_dashboard=True,
            runtime_env=runtime_env,
        )
