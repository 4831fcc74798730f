"""Generation throughput: the Ray Data pipeline vs one-prompt-at-a-time HF generate.

Same prompts, greedy decoding (so outputs are comparable), same model. Baseline: a plain loop of
``model.generate`` on one prompt at a time in this process (model already loaded). Pipeline: the
HF generator stage of ``tasft-ray generate`` (Ray Data, actor pool, batched, left-padded),
timed from the first row requested to the last row received, actor start-up and model load
included. Prints rows/s of both, the ratio, and how many outputs are identical.

    python bench/generate_bench.py --model gemma3-270m --prompts 32 --new-tokens 32
    python bench/generate_bench.py --batch-sizes 8 16 32 --actors 1 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    p.add_argument("--actors", type=int, nargs="+", default=[1])
    p.add_argument("--results", default=None, help="append markdown rows to this file")
    args = p.parse_args()

    import ray
    import torch
    from ray.data import ActorPoolStrategy

    from tasft_ray.config import ModelConfig, load_config
    from tasft_ray.generation.prompts import load_prompts
    from tasft_ray.inference.generator import (
        HFGenerator,
        generate_responses,
        load_generator_model,
    )

    cfg = load_config(
        "tiny",
        [
            f"model.name={args.model}",
            "generate.prompts=[{name: harmfulq}]",
            f"generate.max_prompts={args.prompts}",
            f"generate.sampling.max_new_tokens={args.new_tokens}",
            "generate.sampling.do_sample=false",
        ],
    )
    prompts = load_prompts(cfg.generate, cfg.data_root)
    sampling = cfg.generate.sampling
    tokenizer, model = load_generator_model(
        ModelConfig.model_validate(cfg.model.model_dump()), None
    )
    start = time.perf_counter()
    single = [
        generate_responses(model, tokenizer, [q["instruction"]], [q["input"]], sampling)[0]
        for q in prompts
    ]
    base_s = time.perf_counter() - start
    del model
    print(f"baseline one-at-a-time: {len(prompts) / base_s:.3f} rows/s ({base_s:.1f} s)")

    ray.init(num_cpus=(os.cpu_count() or 2) + 1, include_dashboard=False)
    rows = []
    for actors in args.actors:
        for bs in args.batch_sizes:
            ds = ray.data.from_items(prompts).map_batches(
                HFGenerator,
                fn_constructor_kwargs={
                    "model_cfg": cfg.model.model_dump(mode="json"),
                    "adapter": None,
                    "sampling": sampling.model_dump(mode="json"),
                    "threads": max(1, (os.cpu_count() or 2) // actors),  # the cores, split
                },
                compute=ActorPoolStrategy(size=actors),
                num_cpus=max(1, (os.cpu_count() or 2) // actors),
                batch_size=bs,
            )
            start = time.perf_counter()
            out = {r["id"]: r["response"] for r in ds.iter_rows()}
            pipe_s = time.perf_counter() - start
            same = sum(out[q["id"]] == s for q, s in zip(prompts, single, strict=True))
            ratio = base_s / pipe_s
            print(
                f"pipeline actors={actors} batch={bs}: {len(prompts) / pipe_s:.3f} rows/s "
                f"({pipe_s:.1f} s) -> {ratio:.2f}x baseline; identical {same}/{len(prompts)}"
            )
            rows.append((actors, bs, pipe_s, ratio, same))
    if args.results:
        with open(args.results, "a") as f:
            for actors, bs, pipe_s, ratio, same in rows:
                f.write(
                    f"| {date.today()} | {platform.node()} cpu torch {torch.__version__} | "
                    f"{args.model} | {len(prompts)} x {args.new_tokens} tok | "
                    f"{len(prompts) / base_s:.3f} | actors {actors}, batch {bs}: "
                    f"{len(prompts) / pipe_s:.3f} | {ratio:.2f}x | {same}/{len(prompts)} |\n"
                )


if __name__ == "__main__":
    main()
