"""Output-layer loss cost: time and peak memory of forward+backward, as ratios to baselines.

What is measured: hidden states (B, T, d) -> logits = h @ Wᵀ (frozen (V, d) output weight) ->
loss -> backward to h. That is the part of a training step the TA-SFT penalty can make worse.

Implementations:
    fused       tasft_ray.losses.tasft_loss on an OutputHead: logits one chunk of response
                positions at a time, analytic backward (loss.impl=fused, the default)
    reference   tasft_ray.losses.tasft_loss on full logits (response positions only, chunked,
                recomputed in backward)
    hf          transformers' ForCausalLMLoss on full logits, what ``model(labels=...)``
                computes (SFT only): the baseline a user would otherwise run
Losses: sft (every row safe), sft+emd and sft+nlcl (--harmful-frac of the rows harmful, the rest
safe): the same tokens in every case, so a ratio is the price of the penalty. Prompts are the
first half of each row (masked).

Each (impl, loss) runs in its own subprocess so peak RSS (CPU) or max_memory_allocated (CUDA)
belongs to that case alone; memory is reported above the process's footprint after setup.

    python bench/loss_bench.py                                  # V = 49152 and 262144, 4x256
    python bench/loss_bench.py --vocab 262144 --hidden 640 --tokens 4x256 --json
    python bench/loss_bench.py --device cuda --dtype bfloat16 --vocab 128256 --hidden 4096
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
import time
from datetime import date

IMPLS = ("fused", "reference", "hf")
LOSSES = ("sft", "sft+emd", "sft+nlcl")


def _case(
    impl: str,
    loss: str,
    vocab: int,
    hidden: int,
    batch: int,
    seqlen: int,
    reps: int,
    device: str,
    dtype: str = "float32",
    harmful_frac: float = 0.25,
    chunk_size: int = 1024,
) -> dict:
    import torch

    from tasft_ray.losses import HARMFUL, SAFE, OutputHead, tasft_loss

    torch.manual_seed(0)
    dev, dt = torch.device(device), getattr(torch, dtype)
    weight = (torch.randn(vocab, hidden, device=dev) / hidden**0.5).to(dt)
    hid = torch.randn(batch, seqlen, hidden, device=dev).to(dt)
    labels = torch.randint(0, vocab, (batch, seqlen), device=dev)
    labels[:, : seqlen // 2] = -100  # prompt half masked
    n_harmful = 0 if loss == "sft" else max(1, round(batch * harmful_frac))
    kinds = torch.tensor([HARMFUL] * n_harmful + [SAFE] * (batch - n_harmful), device=dev)
    method = {"sft": "sft", "sft+emd": "emd", "sft+nlcl": "nlcl"}[loss]

    def step():
        h = hid.detach().requires_grad_()
        head = OutputHead(h, weight)
        if impl == "hf":
            from transformers.loss.loss_utils import ForCausalLMLoss

            out = ForCausalLMLoss(head.logits(), labels, vocab)
        else:
            out = tasft_loss(
                head if impl == "fused" else h @ weight.T,
                labels,
                kinds,
                method=method,
                lam=1.0,
                embeddings=weight,
                chunk_size=chunk_size,
            ).total
        out.backward()
        return h.grad

    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first run warms allocators and kernels
            times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds": statistics.median(times), "peak_bytes": int(peak)}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run_case(impl, loss, args, batch, seqlen) -> dict:
    if impl == "hf" and loss != "sft":
        return {}
    cmd = [
        sys.executable,
        __file__,
        "--_case",
        impl,
        loss,
        "--vocab",
        str(args.vocab_one),
        "--hidden",
        str(args.hidden),
        "--tokens",
        f"{batch}x{seqlen}",
        "--reps",
        str(args.reps),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--harmful-frac",
        str(args.harmful_frac),
        "--chunk-size",
        str(args.chunk_size),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--vocab", type=int, nargs="+", default=[49152, 262144])
    p.add_argument("--hidden", type=int, default=640)
    p.add_argument("--tokens", default="4x256", help="BATCHxSEQLEN")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--harmful-frac", type=float, default=0.25, help="harmful rows in sft+penalty")
    p.add_argument("--chunk-size", type=int, default=1024, help="loss.chunk_size")
    p.add_argument("--json", action="store_true", help="print one JSON object (first vocab only)")
    p.add_argument("--results", default=None, help="append a markdown row per vocab to this file")
    p.add_argument("--_case", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    batch, seqlen = (int(x) for x in args.tokens.lower().split("x"))
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if args._case:
        res = _case(
            *args._case,
            args.vocab[0],
            args.hidden,
            batch,
            seqlen,
            args.reps,
            args.device,
            args.dtype,
            args.harmful_frac,
            args.chunk_size,
        )
        print(json.dumps(res))
        return
    report = {}
    for vocab in args.vocab:
        args.vocab_one = vocab
        cases = {
            impl: {loss: _run_case(impl, loss, args, batch, seqlen) for loss in LOSSES}
            for impl in IMPLS
        }
        cases = {impl: {k: v for k, v in d.items() if v} for impl, d in cases.items()}
        report[vocab] = cases
        if args.json:
            print(
                json.dumps(
                    {
                        "vocab": vocab,
                        "hidden": args.hidden,
                        "tokens": args.tokens,
                        "device": args.device,
                        "dtype": args.dtype,
                        "harmful_frac": args.harmful_frac,
                        "chunk_size": args.chunk_size,
                        "results": cases,
                    }
                )
            )
            return
        _print_table(vocab, args, cases)
        if args.results:
            _append_results(args.results, vocab, args, cases)


def _print_table(vocab, args, cases) -> None:
    fused, hf = cases["fused"], cases["hf"]["sft"]
    print(
        f"\nV={vocab} d={args.hidden} tokens={args.tokens} device={args.device} {args.dtype} "
        f"harmful rows={args.harmful_frac:.0%}"
    )
    print(
        f"{'impl/loss':22} {'sec':>8} {'peak MiB':>9} {'t/fused-sft':>11} {'t/hf':>6} {'m/hf':>6}"
    )
    rows = [("hf/sft", hf)] + [
        (f"{impl}/{k}", v) for impl in ("fused", "reference") for k, v in cases[impl].items()
    ]
    for name, r in rows:
        print(
            f"{name:22} {r['seconds']:8.3f} {r['peak_bytes'] / 2**20:9.0f} "
            f"{r['seconds'] / fused['sft']['seconds']:11.2f} "
            f"{r['seconds'] / hf['seconds']:6.2f} {r['peak_bytes'] / hf['peak_bytes']:6.2f}"
        )


def _append_results(path, vocab, args, cases) -> None:
    """One row: fused sft vs HF, then each penalty as time vs fused sft and memory vs HF."""
    fused, ref, hf = cases["fused"], cases["reference"], cases["hf"]["sft"]

    def cell(r):
        return (
            f"{r['seconds'] / fused['sft']['seconds']:.2f}x t, "
            f"{r['peak_bytes'] / hf['peak_bytes']:.2f}x m"
        )

    line = (
        f"| {date.today()} | {platform.node() or 'host'} {args.device} {args.dtype} | {vocab} "
        f"| {args.hidden} | {args.tokens} | {args.harmful_frac:.0%} "
        f"| {hf['seconds']:.3f} s / {hf['peak_bytes'] / 2**20:.0f} MiB "
        f"| {' | '.join(cell(fused[k]) for k in LOSSES)} "
        f"| {' | '.join(cell(ref[k]) for k in LOSSES)} |\n"
    )
    with open(path, "a") as f:
        f.write(line)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
