"""`python -m tasft_ray.tune`: a Ray Tune sweep of TA-SFT trainings, tracked in MLflow.

    python -m tasft_ray.tune                                   # configs/quickstart.yaml, local Ray
    python -m tasft_ray.tune --config tiny --set "sweep.space={loss.lam: {grid: [0, 1]}}"
    python -m tasft_ray.tune --config tiny --resume runs/ray/sweep      # finish an interrupted one
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m tasft_ray.tune --config configs/paper/llama7b.yaml

Each trial is a function that builds and fits a TorchTrainer (Ray 2.60's Train V2 cannot be
wrapped by a Tuner directly), reporting to Tune through TuneReportCallback. One MLflow parent run
per sweep, one child run per trial.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasft_ray.config import Config, ConfigError, UserError, cache_root, load_config
from tasft_ray.worker_env import worker_env

log = logging.getLogger(__name__)

CASE_KEY = "case"
EPILOG = """examples:
  python -m tasft_ray.tune                                    # the embedded default
  python -m tasft_ray.tune --config tiny --smoke-test
  python -m tasft_ray.tune --config tiny --set "sweep.space={loss.lam: {grid: [0, 1]}}"
  python -m tasft_ray.tune --config tiny --resume runs/ray/sweep
  ray job submit --working-dir . -- python -m tasft_ray.tune --config tiny
"""


# ----------------------------------------------------------------------------- search space


def param_space(cfg: Config) -> dict[str, Any]:
    """sweep.space / sweep.cases -> Tune's param_space (flat dotted keys)."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, p in cfg.sweep.space.items():
        if p.grid is not None:
            space[key] = tune.grid_search(list(p.grid))
        elif p.choice is not None:
            space[key] = tune.choice(list(p.choice))
        elif p.uniform is not None:
            space[key] = tune.uniform(*p.uniform)
        else:
            space[key] = tune.loguniform(*p.loguniform)
    if cfg.sweep.cases:
        space[CASE_KEY] = tune.grid_search([dict(c) for c in cfg.sweep.cases])
    return space


def trial_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled params -> dotted config overrides (a case expands into its keys)."""
    out = {k: v for k, v in params.items() if k != CASE_KEY}
    out.update(params.get(CASE_KEY, {}))
    return out


def _search_alg(cfg: Config):
    if cfg.sweep.search != "optuna":  # grid points enumerated, distributions sampled (seeded)
        from ray.tune.search import BasicVariantGenerator

        # Tune does not apply max_concurrent_trials to a BasicVariantGenerator passed in: without
        # this, every trial starts at once and their workers deadlock on the logical CPUs.
        return BasicVariantGenerator(
            random_state=cfg.train.seed, max_concurrent=cfg.sweep.max_concurrent_trials
        )
    if any(p.grid is not None for p in cfg.sweep.space.values()) or cfg.sweep.cases:
        raise ConfigError("sweep.search=optuna: use choice/uniform/loguniform, not grid or cases")
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError("sweep.search=optuna needs `pip install optuna`") from None
    return OptunaSearch()


def _scheduler(cfg: Config):
    if cfg.sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    max_t = cfg.train.max_steps or 10**6
    # scheduled on the reported step: training_iteration restarts at 0 after a restore
    return ASHAScheduler(time_attr="step", max_t=max_t, grace_period=cfg.sweep.grace_steps)


# ----------------------------------------------------------------------------- trial


def run_trial(params: dict[str, Any], base: dict, sweep_dir: str, mlflow: dict) -> None:
    """One trial: resolve its config, fit a TorchTrainer, log the outcome to its child run."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from tasft_ray import tracking
    from tasft_ray.ray_train import build_trainer

    ctx = tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    cfg = Config.model_validate(base).with_overrides(trial_overrides(params))
    trial_dir = Path(sweep_dir) / "trials" / trial_name
    cfg = cfg.with_overrides({"train.output_dir": str(trial_dir)})
    uri = mlflow["uri"]
    run_id = tracking.child_run(uri, cfg, mlflow["parent_run_id"], trial_id, trial_name)
    done = tracking.client(uri).get_run(run_id)
    if done.info.status == "FINISHED":
        # The driver died after this trial finished but before Tune saved that: do not rerun.
        final = {
            k.removeprefix("final/"): v
            for k, v in done.data.metrics.items()
            if k.startswith("final/")
        }
        tune.report(final)
        return
    for key, value in trial_overrides(params).items():
        tracking.client(uri).set_tag(run_id, f"sweep.{key}", str(value))
    trainer = build_trainer(
        cfg,
        name=f"train_{trial_id}",
        storage=sweep_dir,
        mlflow={"uri": uri, "run_id": run_id},
        callbacks=[TuneReportCallback()],
    )
    try:
        result = trainer.fit()
    except Exception:
        tracking.finish_run(uri, run_id, "FAILED")
        raise
    final = {
        f"final/{k}": float(v)
        for k, v in (result.metrics or {}).items()
        if isinstance(v, (int, float))
    }
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as directory:
            tracking.client(uri).log_artifacts(run_id, str(Path(directory) / "adapter"), "adapter")
        if cfg.eval.in_sweep:
            evaluated = _evaluate_trial(cfg, result, uri, run_id)
            final |= {f"final/{k}": v for k, v in evaluated.items()}
    for key, value in final.items():
        tracking.client(uri).log_metric(run_id, key, value)
    tracking.finish_run(uri, run_id)
    if cfg.eval.in_sweep:  # Tune's last result carries training and evaluation numbers
        tune.report({k.removeprefix("final/"): v for k, v in final.items()})


def _evaluate_trial(cfg: Config, result, uri: str, run_id: str) -> dict[str, float]:
    """eval/* of the final adapter (and, with eval.checkpoints=all, of every kept checkpoint),
    logged at each checkpoint's step; returns the final one's. Quality: final adapter only."""
    import torch
    from mlflow.entities import Metric

    from tasft_ray import tracking
    from tasft_ray.evaluate import RESPONSES_FILE, evaluate_in_process, judge_stage
    from tasft_ray.generate import to_jsonl, write_atomic

    # The trial's Train workers have exited; their CPUs stay this trial's until it reports.
    torch.set_num_threads(max(1, int(cfg.train.num_workers * cfg.engine.cpus_per_worker)))
    final_step = int(result.metrics["step"])
    todo = {final_step: result.checkpoint}
    if cfg.eval.checkpoints == "all":
        todo |= {int(m["step"]): c for c, m in result.best_checkpoints or [] if "step" in m}
    c = tracking.client(uri)
    metrics: dict[str, float] = {}
    judge = judge_stage(cfg)  # loaded once, not per checkpoint
    for step in sorted(todo):
        with todo[step].as_directory() as directory:
            rows, metrics = evaluate_in_process(
                cfg,
                str(Path(directory) / "adapter"),
                batch_size=cfg.generate.batch_size,
                with_quality=step == final_step,
                judge=judge,
            )
        where = "eval" if step == final_step else f"eval/step_{step}"
        out = Path(cfg.train.output_dir) / where / RESPONSES_FILE
        write_atomic(out, to_jsonl(rows))
        c.log_artifact(run_id, str(out), where)
        now = int(time.time() * 1000)
        batch = [Metric(f"eval/{k}", float(v), now, step) for k, v in metrics.items()]
        c.log_batch(run_id, metrics=batch)
    return {f"eval/{k}": float(v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------- sweep


def _resolve_paths(cfg: Config) -> Config:
    """Absolute data/cache/storage paths, so workers (any cwd, any node) find the same files."""
    overrides: dict[str, Any] = {
        "sweep.storage": str(Path(cfg.sweep.storage).expanduser().resolve()),
        "model.cache_dir": str(cache_root(cfg.model.cache_dir).resolve()),
    }
    if cfg.data_root:
        overrides["data.root"] = str(Path(cfg.data_root).expanduser().resolve())
    for key in ("safe", "harmful", "refusals"):  # local data files, e.g. generated pairs
        src = getattr(cfg.data, key)
        if src is not None and src.path:
            overrides[f"data.{key}.path"] = str(Path(src.path).expanduser().resolve())
    return cfg.with_overrides(overrides)


def logical_cpus(cfg: Config) -> int:
    """Each trial needs its driver (1 CPU) plus its workers, or workers never start."""
    per_trial = 1 + cfg.train.num_workers * cfg.engine.cpus_per_worker
    return cfg.sweep.num_cpus or int(max(2, cfg.sweep.max_concurrent_trials * per_trial))


def init_ray(cfg: Config, num_cpus: int | None = None) -> None:
    """Join a running cluster (ray job submit, RAY_ADDRESS) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    env = worker_env(cfg)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env={"env_vars": env})
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local use: no token auth
        ray.init(
            address="local",  # a new local cluster, never one a stale `ray start` file names
            num_cpus=num_cpus or logical_cpus(cfg),
            include_dashboard=True,
            runtime_env={"env_vars": env},
        )


SWEEP_CONFIG = "sweep_config.yaml"


@dataclass
class SweepOutcome:
    results: Any  # Tune's ResultGrid
    report: Path | None  # the sweep's report folder (eval.in_sweep) or None
    report_text: str = ""  # the report's terminal table


def run_sweep(cfg: Config, resume: str | Path | None = None) -> SweepOutcome:
    """Run a new sweep, or finish the one in folder ``resume``; with eval.in_sweep, also write
    its report (``tasft-ray report``) into SWEEP_DIR/report and log it to the parent run."""
    from ray import tune

    from tasft_ray import tracking

    cfg = _resolve_paths(cfg)
    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri)
    sweep_dir = Path(resume).resolve() if resume else Path(cfg.sweep.storage) / cfg.sweep.name
    if not resume and (sweep_dir / SWEEP_CONFIG).is_file():
        raise ConfigError(
            f"sweep folder {sweep_dir} exists; pass --resume {sweep_dir} to finish it, or set "
            "sweep.name to start a new sweep"
        )
    parent = tracking.start_parent_run(uri, cfg, sweep_dir)
    (sweep_dir / SWEEP_CONFIG).write_text(cfg.to_yaml())
    init_ray(cfg)
    trainable = tune.with_parameters(
        run_trial,
        base=cfg.model_dump(mode="json"),
        sweep_dir=str(sweep_dir),
        mlflow={"uri": uri, "parent_run_id": parent},
    )
    if resume:
        tuner = tune.Tuner.restore(
            str(sweep_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(cfg),
            tune_config=tune.TuneConfig(
                metric=cfg.sweep.metric,
                mode=cfg.sweep.mode,
                num_samples=cfg.sweep.num_samples,
                max_concurrent_trials=cfg.sweep.max_concurrent_trials,
                search_alg=_search_alg(cfg),
                scheduler=_scheduler(cfg),
            ),
            run_config=tune.RunConfig(name=sweep_dir.name, storage_path=str(sweep_dir.parent)),
        )
    results = tuner.fit()
    errors = [r for r in results if r.error]
    outcome = SweepOutcome(results, None)
    if cfg.eval.in_sweep:
        from tasft_ray.report import ReportError, format_trials, write_report

        try:
            outcome.report, trials = write_report(uri, sweep_dir / "report", parent_run_id=parent)
            outcome.report_text = format_trials(trials)
        except ReportError as exc:  # every trial failed: the sweep's own error says why
            log.warning("no report: %s", exc)
    tracking.finish_run(uri, parent, "FAILED" if errors else "FINISHED")
    return outcome


def load_sweep_config(resume: str | Path, overrides: list[str]) -> Config:
    """The config a sweep started with (so --resume needs no flags), plus any overrides."""
    path = Path(resume) / SWEEP_CONFIG
    if not path.is_file():
        raise ConfigError(f"--resume {resume}: not a tasft-ray sweep folder (no {SWEEP_CONFIG})")
    return load_config(path, overrides)


def summary(results, cfg: Config) -> str:
    """A plain-text table of trials: the swept values and the final metrics."""
    keys = list(cfg.sweep.space) + sorted({k for c in cfg.sweep.cases for k in c})
    cols = [*keys, "step", "loss/total", "loss/sft", "loss/penalty", "status"]
    rows = []
    for r in results:
        params = trial_overrides(r.config or {})
        m = r.metrics or {}
        rows.append(
            [str(params.get(k, "")) for k in keys]
            + [
                str(m.get("step", "")),
                *(f"{m[k]:.4f}" if k in m else "" for k in cols[-4:-1]),
                "error" if r.error else "ok",
            ]
        )
    widths = [
        max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)
    ]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasft_ray.tune",
        description="Ray Tune sweep of TA-SFT trainings.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="YAML file or a name in configs/")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override (repeatable)",
    )
    parser.add_argument(
        "--resume",
        default=None,
        metavar="SWEEP_DIR",
        help="restore an interrupted sweep with its saved config; runs only "
        "unfinished/errored trials",
    )
    parser.add_argument("--smoke-test", action="store_true", help="2 steps per trial")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        overrides = list(args.overrides) + (["train.max_steps=2"] if args.smoke_test else [])
        if args.resume and args.config:
            raise ConfigError("--resume uses the sweep's saved config; drop --config")
        if args.resume:
            cfg = load_sweep_config(args.resume, overrides)
        else:
            cfg = load_config(args.config, overrides)
        outcome = run_sweep(cfg, resume=args.resume)
    except UserError as exc:
        print(f"tasft-ray tune: error: {exc}", file=sys.stderr)
        return 2
    results = outcome.results
    print(summary(results, cfg))
    if outcome.report:
        print(f"\n{outcome.report_text}\nreport: {outcome.report / 'report.md'}")
    failed = sum(1 for r in results if r.error)
    if failed:
        print(f"{failed} trial(s) failed; finish them with --resume", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
