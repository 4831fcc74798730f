"""`tasft-ray generate`: self-generated harmful data (paper §4.1), resumable.

    toxic prompts -> the answer pipeline (tasft_ray.inference) -> JSONL (+ manifest), MLflow run

The paper SFTs the base model on Alpaca, lets it answer toxic prompts and keeps the answers a
moderation judge flags; ``generate.sft_first`` does the first step with the project's trainer.
Every judged row is kept (``harmful`` says which ones count); the ``generated`` reader keeps only
harmful rows when the file is used as ``data.harmful``.

Resumable: each prompt has a stable id, the output is rewritten atomically every
``flush_every`` rows, and a rerun skips ids already in the file, so an interrupted run never
duplicates or drops a prompt.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import Config
from tasft_ray.errors import UserError
from tasft_ray.files import check_writable, output_lock, read_jsonl, to_jsonl, write_atomic
from tasft_ray.generation.prompts import load_prompts
from tasft_ray.inference.adapters import adapter_from_spec
from tasft_ray.inference.pipeline import answer_pipeline, clean_row, pipeline_cpus
from tasft_ray.judges import check_judge
from tasft_ray.training.checkpoints import ADAPTER_DIR, checkpoint_step, list_checkpoints
from tasft_ray.training.local import run_training

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"


class InjectedStop(UserError):
    """Raised by the testing.fail_after_rows hook."""


@dataclass
class GenerateResult:
    path: Path
    rows: int
    harmful: int
    new_rows: int
    seconds: float
    prompts_left: int
    run_id: str = ""  # its MLflow run


def resolve_adapter(cfg: Config) -> str | None:
    """generate.adapter (a folder or mlflow:RUN_ID), or a fresh SFT adapter (sft_first)."""
    g = cfg.generate
    if g.sft_first:
        out = Path(g.output).with_suffix(".sft")
        sft_cfg = cfg.with_overrides({"loss.method": "sft", "train.output_dir": str(out)})
        found = list_checkpoints(out / "checkpoints")
        if not found:
            run_training(sft_cfg)
        elif cfg.train.max_steps is None or checkpoint_step(found[-1]) < cfg.train.max_steps:
            run_training(sft_cfg, resume=True)
        return str(list_checkpoints(out / "checkpoints")[-1] / ADAPTER_DIR)
    return adapter_from_spec(g.adapter, "generate.adapter", tracking.tracking_uri(cfg), cfg.model)


def run_generate(cfg: Config, overwrite: bool = False, progress: bool = True) -> GenerateResult:
    """Generate, judge and write until the target is met or the prompts run out.

    The tracking store and the output path are checked before any work, and one run at a time
    writes an output (a lock beside it). A rerun resumes from the rows already written;
    ``overwrite`` starts over, and the old file is replaced only once the new one is complete.
    The MLflow run is open while the work runs (progress metrics) and ends FAILED if it fails.
    """
    g = cfg.generate
    out = Path(g.output)
    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri)
    check_writable(out, "generate.output", folder=False)
    check_judge(g.judge, g.judge_options, "generate.judge")
    prompts = load_prompts(g, cfg.data_root)  # bad data: one line before any run or file
    with (
        output_lock(out.with_name(f".{out.name}.lock"), "generate.output", str(out)),
        tracking.live_run(uri, cfg, "generate") as run,
    ):
        result = _generate(cfg, out, prompts, overwrite, progress, run)
        metrics = {"rows": result.rows, "harmful": result.harmful, "new_rows": result.new_rows,
                   "seconds": result.seconds,
                   "rows_per_s": result.new_rows / max(result.seconds, 1e-9)}  # fmt: skip
        log_dataset(run, out, metrics, result.rows)
        result.run_id = run.run_id
        return result


def progress_metrics(done: int, kept: int, new: int, seconds: float) -> dict[str, float]:
    """What a generating run shows while it runs: rows judged (in the file), rows kept, speed."""
    return {"progress/rows_done": done, "progress/rows_kept": kept,
            "progress/rows_per_s": new / max(seconds, 1e-9)}  # fmt: skip


def _generate(
    cfg: Config,
    out: Path,
    prompts: list[dict[str, str]],
    overwrite: bool,
    progress: bool,
    run: tracking.LiveRun,
) -> GenerateResult:
    from tqdm.auto import tqdm

    g = cfg.generate
    # --overwrite writes aside until done: a failure leaves the old data set where it was
    dest = out.with_name(f".{out.name}.overwrite") if overwrite else out
    rows = [] if overwrite else read_jsonl(out)
    done = {r["id"] for r in rows}
    prompts = [p for p in prompts if p["id"] not in done]
    harmful = sum(bool(r["harmful"]) for r in rows)
    start, new = time.perf_counter(), 0
    if prompts and not (g.target and harmful >= g.target):
        adapter = resolve_adapter(cfg)
        meta = {"model": cfg.model.name, "adapter": adapter, "seed": g.sampling.seed}
        bar = tqdm(total=len(prompts), desc="generate", unit="row", disable=not progress)
        try:
            init_ray(cfg, num_cpus=pipeline_cpus(g))
            pipe = answer_pipeline(
                prompts, cfg.model, adapter, g.sampling, g.judge, g.judge_options, batching=g
            )
            for row in pipe.iter_rows():
                rows.append(clean_row(row) | meta)
                new += 1
                harmful += bool(row["harmful"])
                bar.update(1)
                bar.set_postfix(harmful=harmful)
                stop_at = cfg.testing.fail_after_rows
                flush = new % g.flush_every == 0 or stop_at == new
                if flush:
                    write_atomic(dest, to_jsonl(rows))
                seconds = time.perf_counter() - start
                run.progress(len(rows), progress_metrics(len(rows), harmful, new, seconds), flush)
                if stop_at and new >= stop_at:
                    raise InjectedStop(f"testing.fail_after_rows: stopped after {new} rows")
                if g.target and harmful >= g.target:
                    break
        finally:
            bar.close()
    if new or overwrite:
        write_atomic(dest, to_jsonl(rows))
    if overwrite:
        os.replace(dest, out)
    seconds = time.perf_counter() - start
    run.progress(len(rows), progress_metrics(len(rows), harmful, new, seconds), force=True)
    left = len(prompts) - new
    result = GenerateResult(out, len(rows), harmful, new, seconds, left)
    _write_manifest(cfg, result)
    if g.target and harmful < g.target:
        log.warning("prompts ran out: %d harmful pairs of the %d wanted", harmful, g.target)
    return result


def _write_manifest(cfg: Config, result: GenerateResult) -> None:
    manifest = {
        "output": str(result.path),
        "rows": result.rows,
        "harmful": result.harmful,
        "new_rows": result.new_rows,
        "prompts_left": result.prompts_left,
        "seconds": round(result.seconds, 2),
        "rows_per_s": round(result.new_rows / result.seconds, 3) if result.seconds else None,
        "model": cfg.model.name,
        "judge": cfg.generate.judge,
        "config": cfg.model_dump(mode="json"),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_atomic(Path(str(result.path) + MANIFEST_SUFFIX), json.dumps(manifest, indent=2) + "\n")


def log_dataset(run: tracking.LiveRun, path: Path, metrics: dict[str, float], rows: int) -> None:
    """A generating run's results: its counts, the file and its manifest as artifacts, and the
    file as a dataset input, digest and all, for the training runs that use it to match."""
    from tasft_ray.data.lineage import describe_file

    run.log_metrics(metrics)
    c = tracking.client(run.uri)
    c.log_artifact(run.run_id, str(path), "dataset")
    c.log_artifact(run.run_id, str(path) + MANIFEST_SUFFIX, "dataset")
    tracking.log_inputs(run.uri, run.run_id, [describe_file("generated", path, rows)])
