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
    """Raised by the generate.fail_after_rows test hook."""


@dataclass
class GenerateResult:
    path: Path
    rows: int
    harmful: int
    new_rows: int
    seconds: float
    prompts_left: int


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
    return adapter_from_spec(g.adapter, "generate.adapter", tracking.tracking_uri(cfg))


def run_generate(cfg: Config, overwrite: bool = False, progress: bool = True) -> GenerateResult:
    """Generate, judge and write until the target is met or the prompts run out.

    The tracking store and the output path are checked before any work, and one run at a time
    writes an output (a lock beside it). A rerun resumes from the rows already written;
    ``overwrite`` starts over, and the old file is replaced only once the new one is complete.
    """
    g = cfg.generate
    out = Path(g.output)
    tracking.check_reachable(tracking.tracking_uri(cfg))
    check_writable(out, "generate.output", folder=False)
    check_judge(g.judge, g.judge_options, "generate.judge")
    with output_lock(out.with_name(f".{out.name}.lock"), "generate.output", str(out)):
        return _generate(cfg, out, overwrite, progress)


def _generate(cfg: Config, out: Path, overwrite: bool, progress: bool) -> GenerateResult:
    from tqdm.auto import tqdm

    g = cfg.generate
    # --overwrite writes aside until done: a failure leaves the old data set where it was
    dest = out.with_name(f".{out.name}.overwrite") if overwrite else out
    rows = [] if overwrite else read_jsonl(out)
    done = {r["id"] for r in rows}
    prompts = [p for p in load_prompts(g, cfg.data_root) if p["id"] not in done]
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
                if new % g.flush_every == 0:
                    write_atomic(dest, to_jsonl(rows))
                if g.fail_after_rows and new >= g.fail_after_rows:
                    write_atomic(dest, to_jsonl(rows))
                    raise InjectedStop(f"generate.fail_after_rows: stopped after {new} rows")
                if g.target and harmful >= g.target:
                    break
        finally:
            bar.close()
    if new or overwrite:
        write_atomic(dest, to_jsonl(rows))
    if overwrite:
        os.replace(dest, out)
    seconds = time.perf_counter() - start
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


def log_to_mlflow(cfg: Config, result: GenerateResult) -> str:
    """One MLflow run per generate call: params, counts, the dataset and its manifest."""
    metrics = {
        "rows": result.rows,
        "harmful": result.harmful,
        "new_rows": result.new_rows,
        "seconds": result.seconds,
        "rows_per_s": result.new_rows / max(result.seconds, 1e-9),
    }
    return log_dataset_run(cfg, "generate", result.path, metrics)


def log_dataset_run(cfg: Config, kind: str, path: Path, metrics: dict[str, float]) -> str:
    """A finished MLflow run of a data set written by ``kind``: params, counts, the file and its
    manifest."""
    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri)
    c = tracking.client(uri)
    run = c.create_run(
        tracking.ensure_experiment(uri, cfg.tracking.experiment),
        run_name=kind,
        tags={"tasft.kind": kind},
    )
    tracking.log_params(uri, run.info.run_id, cfg)
    for key, value in metrics.items():
        c.log_metric(run.info.run_id, key, float(value))
    c.log_artifact(run.info.run_id, str(path), "dataset")
    c.log_artifact(run.info.run_id, str(path) + MANIFEST_SUFFIX, "dataset")
    tracking.finish_run(uri, run.info.run_id)
    return run.info.run_id
