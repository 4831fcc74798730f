"""Quality scoring: tasft-ray's ContinuationLM vs lm-eval's own HFLM, same model and docs.

Both run the same lm-eval tasks (PIQA / BoolQ / OpenBookQA from the shipped files, first
``--limit`` docs each) on the same model and batch size, each in its own process so peak RSS is
its own; HFLM takes log_softmax over every position's full vocabulary, ContinuationLM projects
only continuation tokens. Prints seconds and peak RSS of each, the ratios, and whether every
accuracy is identical.

    python bench/quality_bench.py --model gemma3-270m --limit 40
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date


def _one(args) -> None:
    """Child process: one implementation; prints a JSON line."""
    from tasft_ray.config import ModelConfig
    from tasft_ray.evaluation.quality import continuation_lm, hf_lm, run_quality
    from tasft_ray.models import load_model

    tok, model = load_model(ModelConfig(name=args.model))
    make = {"hflm": hf_lm, "continuation": continuation_lm}[args.impl]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    accs = run_quality(make(model.eval(), tok, batch_size=args.batch_size), args.tasks, None,
                       args.limit)  # fmt: skip
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "model_kib": base_rss, "acc": accs}))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--limit", type=int, default=40, help="docs per task")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tasks", nargs="+", default=["piqa", "boolq", "openbookqa"])
    p.add_argument("--impl", choices=["hflm", "continuation"], help=argparse.SUPPRESS)
    p.add_argument("--results", default=None, help="append a markdown row to this file")
    args = p.parse_args()
    if args.impl:
        return _one(args)

    got = {}
    for impl in ("hflm", "continuation"):
        cmd = [sys.executable, __file__, "--impl", impl, "--model", args.model,
               "--limit", str(args.limit), "--batch-size", str(args.batch_size),
               "--tasks", *args.tasks]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        got[impl] = json.loads(out.strip().splitlines()[-1])
        g = got[impl]
        print(f"{impl:13s} {g['seconds']:7.1f} s  peak RSS {g['peak_kib'] / 2**20:5.2f} GiB  "
              f"(model loaded: {g['model_kib'] / 2**20:4.2f})  "
              f"mean acc {g['acc']['quality/mean_acc']:.4f}")  # fmt: skip
    h, c = got["hflm"], got["continuation"]
    speed = h["seconds"] / c["seconds"]
    extra = (h["peak_kib"] - h["model_kib"]) / max(c["peak_kib"] - c["model_kib"], 1)
    same = h["acc"] == c["acc"]
    print(f"speed-up vs HFLM {speed:.2f}x; scoring memory (peak - loaded) {extra:.1f}x less; "
          f"identical accuracies: {same}")  # fmt: skip
    if args.results:
        with open(args.results, "a") as f:
            f.write(
                f"| {date.today()} | {platform.node()} | `python bench/quality_bench.py "
                f"--model {args.model} --limit {args.limit}` | HFLM {h['seconds']:.0f} s, "
                f"ContinuationLM {c['seconds']:.0f} s (**{speed:.2f}×**); scoring memory "
                f"{extra:.1f}× less; identical accuracies: {same} |\n"
            )


if __name__ == "__main__":
    main()
