"""Adaptive λ search vs the equivalent grid, on the same budget of λ values and steps (issue 21).

Runs two sweeps of one config through the real CLI, one after the other on this machine:
    grid       sweep.search=grid over --grid λ values, no early stopping
    adaptive   the config's own search (configs/search.yaml: Optuna TPE over log λ, ASHA on the
               objective at validation steps), --samples trials
Both validate during training and share the config's objective (and SFT reference). Then, from
MLflow: the grid's best feasible λ (lowest objective metric at its last validation); for each
sweep, the trials, trial-steps (steps trained, early-stopped trials counted to where they
stopped) and wall time it took to reach a feasible λ whose metric is within --within (10 %) of
the grid's best — the grid only knows its best once every trial has run; and the validation
overhead: seconds spent validating over the trials' wall time. Prints the adaptive / grid
ratios of trial-steps and wall time (target: trial-steps ≤ 0.5).

    TASFT_DATA_DIR=../shared/data python bench/search_bench.py --config search
    TASFT_DATA_DIR=../shared/data python bench/search_bench.py --config tiny-search --samples 4 \\
        --grid 0.3,1,3,10,30 --set train.max_steps=6          # minutes, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _sweep(args, name: str, work: Path, sets: list[str]) -> float:
    cmd = [sys.executable, "-m", "tasft_ray.tune", "--config", args.config,
           "--set", f"sweep.name={name}", "--set", f"sweep.storage={work / 'ray'}",
           "--set", f"tracking.uri=sqlite:///{work / 'mlflow.db'}"]  # fmt: skip
    for s in [*args.overrides, *sets]:
        cmd += ["--set", s]
    start = time.perf_counter()
    with open(work / f"{name}.log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    if code:
        raise SystemExit(f"{name} sweep failed ({code}): see {work / name}.log")
    return time.perf_counter() - start


def _trials(uri: str, sweep: str):
    from tasft_ray import tracking

    c = tracking.client(uri)
    exp = c.get_experiment_by_name("tasft-ray")
    (parent,) = c.search_runs([exp.experiment_id], f"tags.`{tracking.SWEEP_TAG}` = '{sweep}'")
    kids = c.search_runs([exp.experiment_id],
                         f"tags.`{tracking.PARENT_TAG}` = '{parent.info.run_id}'",
                         order_by=["attributes.start_time ASC"])  # fmt: skip
    out = []
    for k in kids:
        if k.data.tags.get("tasft.role") == "reference":
            continue
        steps = max((m.step for m in c.get_metric_history(k.info.run_id, "loss/total")),
                    default=0)  # fmt: skip
        vals = c.get_metric_history(k.info.run_id, "val/seconds")
        out.append({"label": k.info.run_name, "run_id": k.info.run_id, "steps": steps,
                    "end": k.info.end_time, "start": k.info.start_time,
                    "val_s": sum(m.value for m in vals),
                    "final": {x.removeprefix("final/"): v for x, v in k.data.metrics.items()
                              if x.startswith("final/")}})  # fmt: skip
    return parent, out


def _reach(objective, trials, reference, target: float):
    """(trials, trial-steps, seconds from the first start) up to the first feasible trial
    within ``target``, in the order the trials ended; None if none does."""
    done = sorted(trials, key=lambda t: t["end"])
    t0 = min(t["start"] for t in trials)
    for i, t in enumerate(done, 1):
        v = objective.value(t["final"])
        if objective.feasible(t["final"], reference) and v is not None and v <= target:
            return i, sum(x["steps"] for x in done[:i]), (t["end"] - t0) / 1000
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="search")
    parser.add_argument("--grid", default="0.5,1,2,4,8,16,32,64")
    parser.add_argument("--samples", type=int, default=None, help="adaptive trials (default: as "
                        "many as grid values)")  # fmt: skip
    parser.add_argument("--within", type=float, default=0.10)
    parser.add_argument("--work", default="runs/search_bench")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from tasft_ray.config import load_config

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    grid = [float(x) for x in args.grid.split(",")]
    samples = args.samples or len(grid)
    cfg = load_config(args.config, args.overrides)
    objective = cfg.sweep.objective.build()
    uri = f"sqlite:///{work / 'mlflow.db'}"
    grid_sets = ["sweep.search=grid", "sweep.scheduler=none", "sweep.num_samples=1",
                 "sweep.space={loss.lam: {grid: [" + ", ".join(map(str, grid)) + "]}}"]  # fmt: skip
    wall = {
        "grid": _sweep(args, "bench-grid", work, grid_sets),
        "adaptive": _sweep(args, "bench-adaptive", work, [f"sweep.num_samples={samples}"]),
    }
    result = {}
    for name in ("grid", "adaptive"):
        parent, trials = _trials(uri, f"bench-{name}")
        ref = {k.removeprefix("reference/"): v for k, v in parent.data.metrics.items()
               if k.startswith("reference/")} or None  # fmt: skip
        result[name] = {"parent": parent, "trials": trials, "reference": ref}
    g = result["grid"]
    feasible = [t for t in g["trials"] if objective.feasible(t["final"], g["reference"])]
    if not feasible:
        raise SystemExit("no grid λ meets the constraints: nothing to reach")
    best = min(feasible, key=lambda t: objective.score(t["final"], g["reference"]))
    target = objective.value(best["final"]) * (1 + args.within)
    print(f"objective: {objective.describe()}")
    print(f"grid best: {best['label']}, {objective.metric} {objective.value(best['final']):.4f}; "
          f"target ≤ {target:.4f} (within {args.within:.0%})")  # fmt: skip
    reached = {}
    for name, r in result.items():
        total_steps = sum(t["steps"] for t in r["trials"])
        share = sum(t["val_s"] for t in r["trials"]) / sum(
            (t["end"] - t["start"]) / 1000 for t in r["trials"])  # fmt: skip
        hit = _reach(objective, r["trials"], r["reference"], target)
        if name == "grid":  # the grid knows its best only once every trial has run
            hit = (len(r["trials"]), total_steps, wall["grid"]) if hit else None
        reached[name] = hit
        where = (f"reached with {hit[0]} trials, {hit[1]} trial-steps, {hit[2]:.0f} s"
                 if hit else "not reached")  # fmt: skip
        print(
            f"{name:8s} {len(r['trials'])} trials, {total_steps} trial-steps, "
            f"{wall[name]:.0f} s in all; {where}; validation {share:.0%} of trial time"
        )
    if reached["adaptive"] and reached["grid"]:
        a, gr = reached["adaptive"], reached["grid"]
        print(f"adaptive / grid: trial-steps {a[1] / gr[1]:.2f}, wall time {a[2] / gr[2]:.2f}")
    chosen = {n: r["parent"].data.tags.get("tasft.best_trial") for n, r in result.items()}
    print("chosen:", json.dumps(chosen, ensure_ascii=False))


if __name__ == "__main__":
    main()
