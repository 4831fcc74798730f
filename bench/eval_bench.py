"""Inline vs shared evaluation in a sweep (issue 30): one sweep, run twice through the real CLI,
one after the other on this machine, the same trials, seeds and evaluation sizes:
    inline   eval.stage.mode=inline: every trial validates on its own training worker (which
             waits meanwhile) and evaluates its final adapter in its own process, loading the
             model and the judge again
    shared   eval.stage.mode=shared: the sweep's evaluator holds the model and judge once; a
             trial's worker hands each checkpoint's adapter over and goes on training, its
             final evaluation goes there too
Printed per sweep: wall time, the training workers' idle share (inline: validation seconds;
shared: seconds rank 0 waited on the stage, val/blocked_seconds; each over the trials' wall
time), whether every val/* and eval/* number of every trial is identical in the two (greedy
decoding), and last ``ratio=R`` = shared wall / inline wall (target ≤ 0.75).

    TASFT_DATA_DIR=../shared/data python bench/eval_bench.py --quick      # ≤ 12 min, 2 cores
    TASFT_DATA_DIR=../shared/data python bench/eval_bench.py              # quickstart sizes
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from search_bench import _sweep, _trials  # noqa: E402  (the sibling bench's CLI runner)

COMMON = [
    "sweep.search=grid", "sweep.scheduler=none", "sweep.num_samples=1",
    "sweep.objective={minimize: val/harm_score}", "eval.in_sweep=true",
    "sweep.space={loss.lam: {grid: [1.0, 16.0]}}",
]  # fmt: skip
QUICK = [
    "train.max_steps=4", "train.checkpoint_every=2", "eval.validation.every=2",
    "eval.validation.max_prompts=8", "eval.validation.safe=2", "eval.validation.quality_limit=2",
    "eval.max_prompts=2", "eval.quality_limit=4", "eval.sampling.max_new_tokens=16",
    "data.safe_count=32", "data.toxic_count=16", "engine.cpus_per_worker=1",
]  # fmt: skip
TIMING = ("seconds", "prompts_per_s", "blocked_seconds")  # differ run to run by nature


def _numbers(uri: str, run_id: str) -> dict[str, dict[int, float]]:
    """Every val/* and eval/* metric of a run, step -> value (timings left out)."""
    from tasft_ray import tracking

    c = tracking.client(uri)
    keys = [k for k in c.get_run(run_id).data.metrics
            if k.startswith(("val/", "eval/")) and not k.endswith(TIMING)]  # fmt: skip
    return {k: {m.step: m.value for m in c.get_metric_history(run_id, k)} for k in sorted(keys)}


def _blocked(uri: str, run_id: str) -> float:
    from tasft_ray import tracking

    history = tracking.client(uri).get_metric_history(run_id, "val/blocked_seconds")
    return max((m.value for m in history), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="search")
    parser.add_argument("--quick", action="store_true", help="a few steps and prompts")
    parser.add_argument("--work", default="runs/eval_bench")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    args.overrides = [*COMMON, *(QUICK if args.quick else []), *args.overrides]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    wall, numbers, idle = {}, {}, {}
    for mode in ("inline", "shared"):
        name = f"eval-bench-{mode}-{os.getpid()}"
        wall[mode] = _sweep(args, name, work, [f"eval.stage.mode={mode}"])
        _, trials = _trials(uri, name)
        numbers[mode] = {t["label"]: _numbers(uri, t["run_id"]) for t in trials}
        busy = sum((t["end"] - t["start"]) / 1000 for t in trials)
        waited = (sum(t["val_s"] for t in trials) if mode == "inline"
                  else sum(_blocked(uri, t["run_id"]) for t in trials))  # fmt: skip
        idle[mode] = waited / busy
        print(f"{mode:7s} {len(trials)} trials, {wall[mode]:.0f} s; training workers idle "
              f"{idle[mode]:.0%} of trial time ({waited:.0f} s)")  # fmt: skip
    same, worst = True, 0.0
    for label, inline in numbers["inline"].items():
        shared = numbers["shared"].get(label, {})
        if set(shared) != set(inline):
            same = False
            print(f"{label}: metrics differ in kind: {sorted(set(shared) ^ set(inline))}")
            continue
        for key, steps in inline.items():
            if set(steps) != set(shared[key]):
                same = False
                print(f"{label}: {key} at steps {sorted(steps)} inline, "
                      f"{sorted(shared[key])} shared")  # fmt: skip
                continue
            worst = max(worst, *(abs(v - shared[key][s]) for s, v in steps.items()))
    count = sum(len(s) for trial in numbers["inline"].values() for s in trial.values())
    print(f"val/* and eval/* numbers: {count} per sweep, "
          f"{'identical' if same and worst == 0 else 'NOT identical'} (largest difference "
          f"{worst:.3g})")  # fmt: skip
    print(f"ratio={wall['shared'] / wall['inline']:.2f}")


if __name__ == "__main__":
    main()
