"""DeepSpeed ZeRO-3, 2 workers: peak memory per worker and step time, fused loss vs reference.

Issue 24 (the fused loss under ZeRO-3, its output layer gathered once per micro-batch). Baseline:
``loss.impl=reference`` (the model's full (B, T, V) logits) under the same ZeRO-3 engine,
measured in the same invocation. Each impl runs in its own pair of spawned processes (gloo,
torch.distributed, the trainer Ray Train workers run), one torch thread each, so one impl's
allocations never count against the other. Both runs see the same micro-batches (same seed).

Memory: Linux's peak resident set (VmHWM) of each worker over the measured steps — reset with
``/proc/self/clear_refs`` after the warm-up step, so model loading and DeepSpeed's setup do not
count — and the same peak minus the resident set just before the steps (what the steps add).
RSS is what the loss's buffers really cost on CPU: glibc serves tensors this large with mmap and
returns them on free. Time: the mean of the measured steps (the first, warm-up step excluded).

    python bench/zero3_bench.py --steps 2                     # quickstart: Gemma 3 270M, EMD
    python bench/zero3_bench.py --config tiny --steps 2       # a smoke run in seconds

Targets: fused peak <= 0.6 x reference, fused step time <= 1.0 x reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

WORLD = 2


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS


def _overrides(impl: str, steps: int, sets: list[str]) -> list[str]:
    return [
        "engine.kind=deepspeed",
        "engine.zero_stage=3",
        f"loss.impl={impl}",
        "lora.dropout=0",
        f"train.num_workers={WORLD}",
        f"train.max_steps={steps + 1}",
        "train.checkpoint_every=0",
        *sets,
    ]


def _prepare(config: str, sets: list[str]) -> None:
    """Load the model once alone: the first load converts the GGUF (3.3 GB peak) and caches it,
    which two workers would otherwise both do at once."""
    from tasft_ray.config import load_config
    from tasft_ray.models import load_model

    load_model(load_config(config, sets).model)


def _worker(rank: int, port: int, config: str, impl: str, steps: int, sets: list, out: str):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
    )  # fmt: skip
    torch.set_num_threads(1)  # 2 workers on 2 cores
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    from tasft_ray.config import load_config
    from tasft_ray.training.loop import TASFTTrainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config, [*_overrides(impl, steps, sets), f"train.output_dir={tmp}"])
        t0 = time.perf_counter()
        trainer = TASFTTrainer(cfg, rank, WORLD)
        setup_s = time.perf_counter() - t0
        lifetime_peak = _status_kib("VmHWM")
        t0 = time.perf_counter()
        warm = trainer.train_step()  # allocator and DeepSpeed's module trace settle
        warm_s = time.perf_counter() - t0
        torch.distributed.barrier()
        before = _status_kib("VmRSS")
        _reset_peak_rss()
        times, losses = [], [warm["loss/total"]]
        for _ in range(steps):
            t0 = time.perf_counter()
            losses.append(trainer.train_step()["loss/total"])
            times.append(time.perf_counter() - t0)
        peak = _status_kib("VmHWM")
    result = {
        "rank": rank,
        "impl": impl,
        "setup_s": setup_s,
        "warmup_s": warm_s,
        "step_s": times,
        "losses": losses,
        "rss_before_gib": before / 2**20,
        "peak_rss_gib": peak / 2**20,
        "added_gib": (peak - before) / 2**20,
        "setup_peak_rss_gib": lifetime_peak / 2**20,
        "response_tokens": warm["response_tokens"],
    }
    Path(out, f"{impl}_{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(config: str, steps: int, sets: list[str]) -> dict:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    prep = ctx.Process(target=_prepare, args=(config, sets))
    prep.start()
    prep.join()
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for impl in ("reference", "fused"):
            args = (_free_port(), config, impl, steps, sets, out)
            mp.spawn(_worker, args=args, nprocs=WORLD, join=True)
            ranks = [json.loads(Path(out, f"{impl}_{r}.json").read_text()) for r in range(WORLD)]
            results[impl] = ranks
    return results


def summary(results: dict) -> dict:
    """Per impl: the worst worker's peak and added RSS, the mean step; then fused / reference."""
    out = {}
    for impl, ranks in results.items():
        out[impl] = {
            "peak_rss_gib": max(r["peak_rss_gib"] for r in ranks),
            "added_gib": max(r["added_gib"] for r in ranks),
            "rss_before_gib": max(r["rss_before_gib"] for r in ranks),
            "step_s": statistics.mean(map(max, zip(*(r["step_s"] for r in ranks), strict=True))),
            "setup_s": max(r["setup_s"] for r in ranks),
            "losses": ranks[0]["losses"],
        }
    f, r = out["fused"], out["reference"]
    out["ratio"] = {
        "peak_rss": f["peak_rss_gib"] / r["peak_rss_gib"],
        "added_rss": f["added_gib"] / r["added_gib"],
        "step_time": f["step_s"] / r["step_s"],
        "max_loss_diff": max(abs(a - b) for a, b in zip(f["losses"], r["losses"], strict=True)),
    }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="quickstart")
    p.add_argument("--steps", type=int, default=2, help="measured steps after one warm-up step")
    p.add_argument("--set", action="append", default=[], help="config override a.b=v")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    results = run(args.config, args.steps, args.set)
    s = summary(results)
    print(f"date {date.today()}  host {platform.node()}  cpus {os.cpu_count()}  torch", end=" ")
    print(torch.__version__)
    print(f"config {args.config} {args.set}  ZeRO-3, {WORLD} gloo workers x 1 thread")
    print("memory: per-worker peak RSS (VmHWM, reset after the warm-up step), worst worker")
    for impl in ("reference", "fused"):
        x = s[impl]
        print(
            f"{impl:9s}  peak RSS {x['peak_rss_gib']:.2f} GiB  added by the steps "
            f"{x['added_gib']:.2f} GiB (RSS before {x['rss_before_gib']:.2f})  "
            f"step {x['step_s']:.1f} s  losses {[round(v, 5) for v in x['losses']]}"
        )
    r = s["ratio"]
    print(
        f"fused / reference: peak RSS {r['peak_rss']:.2f} (target <= 0.6)  added RSS "
        f"{r['added_rss']:.2f}  step time {r['step_time']:.2f} (target <= 1.0)  "
        f"max |loss diff| {r['max_loss_diff']:.1e}"
    )
    print(f"wall {time.perf_counter() - t0:.0f} s")
    print(json.dumps({"summary": s, "per_worker": results}), file=sys.stderr)


if __name__ == "__main__":
    main()
