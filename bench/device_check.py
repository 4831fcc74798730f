"""GPU checks that CPU CI cannot run, as one prepared script for the lent GPU machine.

1. fused == reference on CUDA in fp32 at a real vocabulary (loss and dL/dh), every penalty.
2. DeepSpeed ZeRO-2 bf16 training through TASFTTrainer on one GPU (nccl), fused vs reference:
   the tiny model (losses must agree) and a Llama-3-8B-shaped model with few layers (random
   weights: no hub here) for step time and peak memory, fused vs reference.
3. HF generation on the GPU through the generate pipeline's actor class (no Ray needed).

    python bench/device_check.py --data DIR --out DIR       # writes device_check.json

Needs: torch with CUDA, transformers, peft, deepspeed, pydantic (no Ray, no MLflow).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
from pathlib import Path


def _fused_equals_reference(results: dict) -> None:
    import torch

    from tasft_ray.losses import HARMFUL, SAFE, OutputHead, tasft_loss

    torch.manual_seed(0)
    v, d, b, t = 262144, 640, 4, 256
    weight = torch.randn(v, d, device="cuda") / d**0.5
    hid = torch.randn(b, t, d, device="cuda")
    labels = torch.randint(0, v, (b, t), device="cuda")
    labels[:, : t // 2] = -100
    kinds = torch.tensor([HARMFUL, SAFE, HARMFUL, SAFE], device="cuda")
    out = {}
    for method in ("sft", "emd", "nlcl", "kto"):
        vals = []
        for fused in (False, True):
            h = hid.clone().requires_grad_()
            head = OutputHead(h, weight, softcap=30.0)
            parts = tasft_loss(
                head if fused else head.logits(),
                labels,
                kinds,
                method=method,
                embeddings=weight,
                reference_logps=torch.full((b,), -1500.0, device="cuda"),
                chunk_size=300,
            )
            (g,) = torch.autograd.grad(parts.total, h)
            vals.append((parts.total.item(), g))
        (lr, gr), (lf, gf) = vals
        out[method] = {
            "loss_ref": lr,
            "loss_fused": lf,
            "abs_diff": abs(lr - lf),
            "grad_max_abs_diff": float((gr - gf).abs().max()),
            "grad_max_abs": float(gr.abs().max()),
        }
    results["fused_vs_reference_cuda_fp32"] = out


def _llama8b_shaped(path: Path, layers: int) -> None:
    """Llama-3-8B dimensions, few layers, random weights, with the tiny tokenizer beside it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasft_ray.models import build_tiny_tokenizer

    cfg = LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path)
    tok = build_tiny_tokenizer()
    tok.save_pretrained(path)


def _train(results: dict, key: str, overrides: list[str], steps: int) -> None:
    import torch

    from tasft_ray.config import load_config
    from tasft_ray.training.loop import TASFTTrainer

    out = {}
    for impl in ("reference", "fused"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(
                "tiny",
                [
                    f"train.output_dir={tmp}",
                    "engine.kind=deepspeed",
                    "engine.zero_stage=2",
                    "engine.precision=bf16",
                    "engine.use_gpu=true",
                    "lora.dropout=0",
                    f"loss.impl={impl}",
                    f"train.max_steps={steps}",
                    *overrides,
                ],
            )
            torch.cuda.reset_peak_memory_stats()
            trainer = TASFTTrainer(cfg, device=torch.device("cuda"))
            losses, times = [], []
            for _ in range(steps):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                m = trainer.train_step()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                losses.append(m["loss/total"])
            tokens = cfg.train.micro_batch_size * cfg.train.grad_accum * cfg.data.max_length
            out[impl] = {
                "losses": losses,
                "step_s_median_after_first": sorted(times[1:])[len(times[1:]) // 2],
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                "max_tokens_per_step": tokens,
            }
            del trainer
            torch.cuda.empty_cache()
    out["speedup_fused"] = (
        out["reference"]["step_s_median_after_first"] / out["fused"]["step_s_median_after_first"]
    )
    out["memory_ratio_fused"] = out["fused"]["peak_gib"] / out["reference"]["peak_gib"]
    results[key] = out


def _generate(results: dict) -> None:
    from tasft_ray.config import load_config
    from tasft_ray.inference.generator import HFGenerator

    cfg = load_config("tiny", ["generate.sampling.max_new_tokens=16"])
    gen = HFGenerator(
        cfg.model.model_dump(mode="json"), None, cfg.generate.sampling.model_dump(mode="json")
    )
    batch = {
        "id": ["0123456789abcdef"] * 4,
        "instruction": ["Give three tips.", "Name a colour.", "Say hi.", "Count to three."],
        "input": [""] * 4,
    }
    out = gen(batch)
    results["generate_cuda"] = {
        "device": str(gen.model.device),
        "responses": len(out["response"]),
        "nonempty": sum(bool(r) for r in out["response"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="TASFT_DATA_DIR with the tiny config's data")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=2)
    args = p.parse_args()
    os.environ["TASFT_DATA_DIR"] = args.data
    for k, v in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1").items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("MASTER_PORT", "29511")
    import torch

    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    model_dir = Path(tempfile.mkdtemp()) / "llama8b-shaped"
    checks = [
        ("fused_vs_reference_cuda_fp32", lambda: _fused_equals_reference(results)),
        ("train_tiny", lambda: _train(results, "train_tiny_ds2_bf16", [], 4)),
        ("build_llama8b", lambda: _llama8b_shaped(model_dir, args.layers)),
        (
            "train_llama8b",
            lambda: _train(
                results,
                "train_llama8b_shaped_ds2_bf16",
                [
                    f"model.name={model_dir}",
                    "model.dtype=bfloat16",
                    "data.max_length=512",
                    "train.micro_batch_size=8",
                    "train.grad_accum=1",
                    "loss.chunk_size=1024",
                ],
                6,
            ),
        ),
        ("generate", lambda: _generate(results)),
    ]
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            fn()
            status = "ok"
        except Exception:  # keep going: every check's outcome is worth its device time
            status = traceback.format_exc()[-3000:]
        results.setdefault("status", {})[name] = status
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
        print(name, status if status != "ok" else "ok", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "device_check.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
