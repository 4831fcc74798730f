"""What the multi-node path costs and saves (issue 20), on the quickstart's model and data.

1. Trial start-up, from a Train worker's start to its first optimizer step, two ways:
     baseline   the worker loads the model, reads the data sources from the data root, selects
                and tokenises the mixture itself (what every worker of every trial did before)
     shipped    the driver prepared the mixture once; the worker unpickles it (what ray.get of
                a local object costs: the object store serves it from shared memory) and loads
                the model
   Printed: each phase, the time to the first step's start and to its end, and
   shipped / baseline for both. The runs alternate, medians over --repeats.

2. A checkpoint of the quickstart trainer (LoRA adapter, AdamW state, RNG): written to and
   restored from an S3-compatible object store (a real `moto_server` process over HTTP on this
   machine, through pyarrow's S3 filesystem, as Ray Train does) vs a local folder (pyarrow's
   local filesystem). Printed: medians and the ratio object store / local disk. Moto keeps
   objects in memory on localhost: a real S3 bucket adds network latency and bandwidth.

    TASFT_DATA_DIR=../shared/data python bench/cluster_bench.py
    TASFT_DATA_DIR=../shared/data python bench/cluster_bench.py --config tiny --repeats 2
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _startup(cfg, mixture_bytes: bytes | None) -> dict[str, float]:
    """Seconds of each phase a worker goes through up to the end of its first step."""
    from tasft_ray.training.loop import TASFTTrainer

    t0 = time.perf_counter()
    mixture = pickle.loads(mixture_bytes) if mixture_bytes is not None else None
    t1 = time.perf_counter()
    trainer = TASFTTrainer(cfg, mixture=mixture)  # model load (+ the mixture when not given)
    t2 = time.perf_counter()
    trainer.train_step()
    t3 = time.perf_counter()
    return {"unpickle": t1 - t0, "setup": t2 - t1, "to_first_step": t2 - t0, "total": t3 - t0}


def startup(cfg, repeats: int) -> None:
    from tasft_ray.data.mixture import build_mixture
    from tasft_ray.models import load_model, load_tokenizer

    load_model(cfg.model)  # warm the dequantised-weights cache: both paths then load the same way
    start = time.perf_counter()
    tok = load_tokenizer(cfg.model)
    mixture = build_mixture(cfg.data, cfg.loss.method, tok, cfg.train.seed, cfg.data_root)
    blob = pickle.dumps(mixture)
    driver_s = time.perf_counter() - start
    runs: dict[str, list[dict]] = {"baseline": [], "shipped": []}
    for _ in range(repeats):
        runs["baseline"].append(_startup(cfg, None))
        runs["shipped"].append(_startup(cfg, blob))
    med = {k: {p: statistics.median(r[p] for r in v) for p in v[0]} for k, v in runs.items()}
    print(f"driver, once per sweep: tokenizer + mixture of {len(mixture)} examples "
          f"{driver_s:.2f} s, pickled {len(blob) / 2**20:.2f} MiB")  # fmt: skip
    for name, m in med.items():
        print(
            f"{name:9s} unpickle {m['unpickle']:.3f} s  model+data+engine {m['setup']:.2f} s"
            f"  to first step {m['to_first_step']:.2f} s  to its end {m['total']:.2f} s"
        )
    b, s = med["baseline"], med["shipped"]
    print(f"shipped / baseline: to the first step {s['to_first_step'] / b['to_first_step']:.3f}, "
          f"through it {s['total'] / b['total']:.3f}  (median of {repeats})")  # fmt: skip


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto_server did not start")


def checkpoint(cfg, repeats: int) -> None:
    import pyarrow.fs as pafs

    from tasft_ray.training.loop import TASFTTrainer

    trainer = TASFTTrainer(cfg)
    trainer.train_step()  # AdamW state exists, as in a real checkpoint
    src = Path(tempfile.mkdtemp(prefix="ckpt_src_"))
    trainer.write_checkpoint(src)
    files = [p for p in src.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    proc, endpoint = _moto()
    local = pafs.LocalFileSystem()
    s3 = pafs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test",
                           region="us-east-1", allow_bucket_creation=True)  # fmt: skip
    s3.create_dir("bench")
    times: dict[str, list[float]] = {k: [] for k in ("local write", "local restore",
                                                      "s3 write", "s3 restore")}  # fmt: skip
    try:
        for i in range(repeats):
            for kind, fs, dest in (("local", local, tempfile.mkdtemp(prefix="ckpt_dst_")),
                                   ("s3", s3, f"bench/ckpt_{i}")):  # fmt: skip
                t0 = time.perf_counter()
                pafs.copy_files(str(src), dest, source_filesystem=local, destination_filesystem=fs)
                t1 = time.perf_counter()
                back = tempfile.mkdtemp(prefix="ckpt_back_")
                pafs.copy_files(dest, back, source_filesystem=fs, destination_filesystem=local)
                t2 = time.perf_counter()
                times[f"{kind} write"].append(t1 - t0)
                times[f"{kind} restore"].append(t2 - t1)
                shutil.rmtree(back)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(src)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"checkpoint {size / 2**20:.2f} MiB in {len(files)} files: "
          + "  ".join(f"{k} {v * 1000:.1f} ms" for k, v in med.items()))  # fmt: skip
    print(
        f"object store / local disk: write {med['s3 write'] / med['local write']:.2f}x, "
        f"restore {med['s3 restore'] / med['local restore']:.2f}x  (median of {repeats})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["startup", "checkpoint"], default=None)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from tasft_ray.config import load_config

    cfg = load_config(args.config, ["train.max_steps=1", *args.overrides])
    if args.only in (None, "startup"):
        startup(cfg, args.repeats)
    if args.only in (None, "checkpoint"):
        checkpoint(cfg, max(args.repeats, 5))


if __name__ == "__main__":
    main()
