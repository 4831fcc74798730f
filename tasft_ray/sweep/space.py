"""Sweep definitions -> Tune: the search space (``sweep.space`` + ``sweep.cases``), each
trial's config overrides, the searcher and the scheduler."""

from __future__ import annotations

import itertools
from typing import Any

from tasft_ray.config import Config, ConfigError, SweepConfig
from tasft_ray.objective import TUNE_METRIC, VAL_STEP

CASE_KEY = "case"


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """sweep.space / sweep.cases -> Tune's param_space (flat dotted keys)."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, p in sweep.space.items():
        if p.grid is not None:
            space[key] = tune.grid_search(list(p.grid))
        elif p.choice is not None:
            space[key] = tune.choice(list(p.choice))
        elif p.uniform is not None:
            space[key] = tune.uniform(*p.uniform)
        else:
            space[key] = tune.loguniform(*p.loguniform)
    if sweep.cases:
        space[CASE_KEY] = tune.grid_search([dict(c) for c in sweep.cases])
    return space


def trial_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled params -> dotted config overrides (a case expands into its keys)."""
    out = {k: v for k, v in params.items() if k != CASE_KEY}
    out.update(params.get(CASE_KEY, {}))
    return out


# keys whose value changes what the driver prepares for a trial (its data, its evaluation)
PREPARED_KEYS = ("data.", "eval.", "loss.method", "train.seed", "model.name", "model.revision")


def trial_configs(cfg: Config) -> list[Config]:
    """The config of every trial the sweep can run, each validated before any trial starts:
    each grid and choice value, both ends of each range, crossed with every case. One line names
    the offending values. A key that changes the data the driver prepares once per sweep must
    take listed values (grid or choice), not a range."""
    axes = []
    for key, p in cfg.sweep.space.items():
        values = p.grid if p.grid is not None else p.choice
        if values is None:
            if key.startswith(PREPARED_KEYS):
                raise ConfigError(
                    f"sweep.space {key}: changes the data the driver prepares for each trial; "
                    "give its values as grid or choice, not a range"
                )
            values = list(p.uniform or p.loguniform or ())
        axes.append([(key, v) for v in values])
    cases = [dict(c) for c in cfg.sweep.cases] or [{}]
    configs = []
    for combo in itertools.product(*axes):
        for case in cases:
            overrides = {**dict(combo), **case}
            try:
                configs.append(cfg.with_overrides(overrides))
            except ConfigError as exc:
                shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
                raise ConfigError(
                    f"sweep trial with {shown}: {str(exc).removeprefix('override: ')}"
                ) from None
    return configs


def tune_metric(sweep: SweepConfig) -> tuple[str | list[str] | None, str | list[str] | None]:
    """What Tune ranks trials by: the objective's scalar (lower is better), the Pareto metrics
    of a multi-objective search, or ``sweep.metric`` without an objective."""
    if sweep.objective is None:
        return sweep.metric, sweep.mode
    if sweep.objective.pareto:
        return list(sweep.objective.pareto), list(sweep.objective.pareto.values())
    return TUNE_METRIC, "min"


def search_alg(sweep: SweepConfig, seed: int):
    """Tune's searcher for ``sweep.search``, holding ``max_concurrent_trials`` itself (Tune
    ignores its own limit, with a warning, once a searcher is passed in)."""
    if sweep.search != "optuna":  # grid points enumerated, distributions sampled (seeded)
        from ray.tune.search import BasicVariantGenerator

        # without the limit every trial starts at once and the workers deadlock on the CPUs
        return BasicVariantGenerator(random_state=seed, max_concurrent=sweep.max_concurrent_trials)
    try:
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("sweep.search=optuna needs `pip install optuna`") from None
    metric, mode = tune_metric(sweep)
    # TPE, seeded; log-uniform ranges (λ) are sampled on the log scale. One objective reaches
    # the searcher through TuneConfig; a Pareto search passes its lists here (TuneConfig takes
    # one metric only), which gives Optuna's multi-objective sampler.
    pareto = {"metric": metric, "mode": mode} if isinstance(metric, list) else {}
    searcher = OptunaSearch(seed=seed, **pareto)
    return ConcurrencyLimiter(searcher, max_concurrent=sweep.max_concurrent_trials)


def scheduler(cfg: Config):
    """ASHA (``sweep.scheduler: asha``) on the objective at validation steps, else none.
    Scheduled on the step of the checkpoint each reported objective scored (``val_step``):
    training_iteration restarts at 0 after a restore, and with the shared evaluation stage an
    objective reaches Tune some training steps after its checkpoint."""
    sweep = cfg.sweep
    if sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # (the config rejects asha on a Pareto front: it has one objective here)
    # its metric comes from TuneConfig (tune_metric). ASHA stops a trial whose step reaches
    # max_t, killing it before it logs its final metrics and adapter: one past the last step of
    # the longest trial, where the space or a case sets train.max_steps (an SFT optimiser search)
    steps = [c.train.max_steps for c in trial_configs(cfg)]
    max_t = max(steps) + 1 if all(steps) else 10**6
    return ASHAScheduler(time_attr=VAL_STEP, max_t=max_t, grace_period=sweep.grace_steps)
