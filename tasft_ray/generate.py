"""`tasft-ray generate`: self-generated harmful data (paper §4.1) as a resumable Ray Data pipeline.

    toxic prompts -> model answers (HF generate in an actor pool, or vLLM via ray.data.llm)
                  -> harm judge + refusal detector -> JSONL (+ manifest), MLflow run

The paper SFTs the base model on Alpaca, lets it answer toxic prompts and keeps the answers a
moderation judge flags; ``generate.sft_first`` does the first step with the project's trainer.
Every judged row is kept (``harmful`` says which ones count); the ``generated`` reader keeps only
harmful rows when the file is used as ``data.harmful``.

Resumable: each prompt has a stable id, the output is rewritten atomically every
``flush_every`` rows, and a rerun skips ids already in the file, so an interrupted run never
duplicates or drops a prompt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasft_ray.config import Config, ConfigError, ModelConfig, SamplingConfig, UserError
from tasft_ray.data.sources import load_source
from tasft_ray.data.template import format_prompt

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"


class InjectedStop(UserError):
    """Raised by the generate.fail_after_rows test hook."""


def prompt_id(instruction: str, input_text: str = "") -> str:
    """Stable across runs and machines: the resume key of a prompt."""
    return hashlib.sha1(f"{instruction}\x00{input_text}".encode()).hexdigest()[:16]


def load_prompts(cfg: Config) -> list[dict[str, str]]:
    """Unique toxic prompts from generate.prompts, minus generate.exclude (seeded shuffle)."""
    g, root = cfg.generate, cfg.data_root
    excluded = {
        prompt_id(e.instruction, e.input) for src in g.exclude for e in load_source(src, root)
    }
    rows: dict[str, dict[str, str]] = {}
    for src in g.prompts:
        origin = src.name or src.path or src.url or src.hf or ""
        for ex in load_source(src, root):
            pid = prompt_id(ex.instruction, ex.input)
            if pid not in excluded and pid not in rows:
                rows[pid] = {
                    "id": pid,
                    "instruction": ex.instruction,
                    "input": ex.input,
                    "source": origin,
                }
    prompts = list(rows.values())
    if g.shuffle:
        random.Random(g.sampling.seed).shuffle(prompts)  # same order on resume
    return prompts[: g.max_prompts] if g.max_prompts else prompts


# ----------------------------------------------------------------------------- generation


def generate_responses(
    model,
    tokenizer,
    instructions: list[str],
    inputs: list[str],
    sampling: SamplingConfig,
    seed: int | None = None,
) -> list[str]:
    """One batched ``generate`` call; the only generation code both backends' HF path shares."""
    prompts = [format_prompt(i, x) for i, x in zip(instructions, inputs, strict=True)]
    tokenizer.padding_side = "left"  # decoder-only: pad on the left so answers start aligned
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if sampling.do_sample:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        torch.manual_seed(sampling.seed if seed is None else seed)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None)
    with torch.no_grad():
        out = model.generate(**enc, **kwargs)  # (B, prompt + new)
    new_tokens = out[:, enc["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def load_generator_model(model_cfg: ModelConfig, adapter: str | None, device: str = "cpu"):
    """Base model (+ LoRA adapter) in eval mode."""
    from tasft_ray.models import load_model

    tokenizer, model = load_model(model_cfg)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return tokenizer, model.to(device).eval()


class HFGenerator:
    """Ray Data actor: the model loads once in __init__, each __call__ answers one batch."""

    def __init__(self, model_cfg: dict, adapter: str | None, sampling: dict, threads: int = 1):
        torch.set_num_threads(threads)  # Ray pins OMP_NUM_THREADS=1 in every worker
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer, self.model = load_generator_model(
            ModelConfig.model_validate(model_cfg), adapter, device
        )
        self.sampling = SamplingConfig.model_validate(sampling)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seed = self.sampling.seed + int(str(batch["id"][0])[:8], 16)  # per batch, reproducible
        responses = generate_responses(
            self.model,
            self.tokenizer,
            list(batch["instruction"]),
            list(batch["input"]),
            self.sampling,
            seed,
        )
        return {**batch, "response": np.array(responses, dtype=object)}


class JudgeStage:
    """Ray Data actor: harm judge + refusal detector, loaded once."""

    def __init__(self, judge: str, options: dict):
        from tasft_ray.judges import load_judge, load_refusal_detector

        self.name = judge
        self.judge = load_judge(judge, **options)
        self.refusals = load_refusal_detector()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        prompts = [
            format_prompt(i, x) for i, x in zip(batch["instruction"], batch["input"], strict=True)
        ]
        responses = [str(r) for r in batch["response"]]
        scores = self.judge.score(prompts, responses)
        harmful = self.judge.harmful(prompts, responses)
        return {
            **batch,
            "judge": np.array([self.name] * len(responses), dtype=object),
            "score": np.array(scores, dtype=float),
            "harmful": np.array(harmful, dtype=bool),
            "refused": np.array(self.refusals.refused(responses), dtype=bool),
        }


def _vllm_available(cfg: Config) -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def _backend(cfg: Config) -> str:
    b = cfg.generate.backend
    if b == "auto":
        return "vllm" if _vllm_available(cfg) else "hf"
    if b == "vllm" and not _vllm_available(cfg):
        raise ConfigError("generate.backend=vllm needs a GPU and `pip install vllm`")
    return b


def _vllm_stage(ds, cfg: Config, model_source: str):
    """vLLM through ray.data.llm (GPU only; never imported on CPU machines)."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    s = cfg.generate.sampling
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=model_source,
            batch_size=cfg.generate.batch_size,
            concurrency=cfg.generate.num_actors,
            chat_template_stage=False,  # base models: the paper's Alpaca template, no chat
        ),
        preprocess=lambda row: {
            **row,
            "prompt": format_prompt(row["instruction"], row["input"]),
            "sampling_params": {
                "max_tokens": s.max_new_tokens,
                "temperature": s.temperature if s.do_sample else 0.0,
                "top_p": s.top_p if s.do_sample else 1.0,
                "seed": s.seed,
            },
        },
        postprocess=lambda row: (
            {k: row[k] for k in ("id", "instruction", "input", "source")}
            | {"response": row["generated_text"].strip()}
        ),
    )
    return processor(ds)


def _merged_model_dir(cfg: Config, adapter: str | None) -> str:
    """vLLM takes one model folder: merge the LoRA adapter into the base once and save it."""
    if adapter is None and "/" in cfg.model.name and not cfg.model.name.startswith("gguf:"):
        return cfg.model.name
    from tasft_ray.config import cache_root

    key = hashlib.sha1(f"{cfg.model.name}:{adapter}".encode()).hexdigest()[:12]
    target = cache_root(cfg.model.cache_dir) / "merged" / key
    if not (target / "config.json").is_file():
        tokenizer, model = load_generator_model(cfg.model, adapter)
        if adapter:
            model = model.merge_and_unload()
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return str(target)


# ----------------------------------------------------------------------------- output


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the dataset from collaborators
    os.replace(tmp, path)


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


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
        from tasft_ray.train import list_checkpoints, run_training

        out = Path(g.output).with_suffix(".sft")
        sft_cfg = cfg.with_overrides({"loss.method": "sft", "train.output_dir": str(out)})
        found = list_checkpoints(out / "checkpoints")
        done = found and json.loads((found[-1] / "trainer_state.json").read_text())["step"]
        if not found:
            run_training(sft_cfg)
        elif cfg.train.max_steps is None or done < cfg.train.max_steps:
            run_training(sft_cfg, resume=True)
        return str(list_checkpoints(out / "checkpoints")[-1] / "adapter")
    return adapter_from_spec(cfg, g.adapter, "generate.adapter")


def adapter_from_spec(cfg: Config, spec: str | None, field: str) -> str | None:
    """A LoRA adapter folder, or ``mlflow:RUN_ID`` (the run's logged adapter, downloaded)."""
    if spec and spec.startswith("mlflow:"):
        from tasft_ray import tracking

        run_id = spec.removeprefix("mlflow:")
        c = tracking.client(tracking.tracking_uri(cfg))
        return c.download_artifacts(run_id, "adapter", tempfile.mkdtemp(prefix="tasft_adapter_"))
    if spec and not Path(spec).is_dir():
        raise ConfigError(f"{field}: no such folder {spec}")
    return spec


def run_generate(cfg: Config, overwrite: bool = False, progress: bool = True) -> GenerateResult:
    """Generate, judge and write until the target is met or the prompts run out."""
    from tqdm.auto import tqdm

    g = cfg.generate
    out = Path(g.output)
    if overwrite and out.exists():
        out.unlink()
    rows = read_rows(out)
    done = {r["id"] for r in rows}
    prompts = [p for p in load_prompts(cfg) if p["id"] not in done]
    harmful = sum(bool(r["harmful"]) for r in rows)
    start, new = time.perf_counter(), 0
    if prompts and not (g.target and harmful >= g.target):
        adapter = resolve_adapter(cfg)
        meta = {"model": cfg.model.name, "adapter": adapter, "seed": g.sampling.seed}
        bar = tqdm(total=len(prompts), desc="generate", unit="row", disable=not progress)
        try:
            for row in build_pipeline(cfg, prompts, adapter).iter_rows():
                rows.append(clean_row(row) | meta)
                new += 1
                harmful += bool(row["harmful"])
                bar.update(1)
                bar.set_postfix(harmful=harmful)
                if new % g.flush_every == 0:
                    write_atomic(out, to_jsonl(rows))
                if g.fail_after_rows and new >= g.fail_after_rows:
                    write_atomic(out, to_jsonl(rows))
                    raise InjectedStop(f"generate.fail_after_rows: stopped after {new} rows")
                if g.target and harmful >= g.target:
                    break
        finally:
            bar.close()
        write_atomic(out, to_jsonl(rows))
    seconds = time.perf_counter() - start
    left = len(prompts) - new
    result = GenerateResult(out, len(rows), harmful, new, seconds, left)
    _write_manifest(cfg, result)
    if g.target and harmful < g.target:
        log.warning("prompts ran out: %d harmful pairs of the %d wanted", harmful, g.target)
    return result


def clean_row(row: dict) -> dict:
    """numpy scalars -> JSON types, fixed column order."""
    keys = (
        "id",
        "source",
        "instruction",
        "input",
        "response",
        "judge",
        "score",
        "harmful",
        "refused",
    )
    out = {k: row[k] for k in keys}
    out["score"], out["harmful"], out["refused"] = (
        float(out["score"]),
        bool(out["harmful"]),
        bool(out["refused"]),
    )
    out["prompt"] = format_prompt(out["instruction"], out["input"])
    return out


def build_pipeline(cfg: Config, prompts: list[dict], adapter: str | None):
    import ray
    from ray.data import ActorPoolStrategy

    from tasft_ray.tune import init_ray

    g = cfg.generate
    init_ray(cfg, num_cpus=g.num_actors * g.cpus_per_actor + 1)  # + 1 for the judge
    ds = ray.data.from_items(prompts)
    if _backend(cfg) == "vllm":
        ds = _vllm_stage(ds, cfg, _merged_model_dir(cfg, adapter))
    else:
        ds = ds.map_batches(
            HFGenerator,
            fn_constructor_kwargs={
                "model_cfg": cfg.model.model_dump(mode="json"),
                "adapter": adapter,
                "sampling": g.sampling.model_dump(mode="json"),
                "threads": g.cpus_per_actor,
            },
            compute=ActorPoolStrategy(size=g.num_actors),
            batch_size=g.batch_size,
            num_cpus=g.cpus_per_actor,
            num_gpus=g.num_gpus_per_actor,
        )
    return ds.map_batches(
        JudgeStage,
        fn_constructor_kwargs={"judge": g.judge, "options": dict(g.judge_options)},
        compute=ActorPoolStrategy(size=1),
        batch_size=g.batch_size,
    )


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
    from tasft_ray import tracking

    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri)
    c = tracking.client(uri)
    run = c.create_run(
        tracking.ensure_experiment(uri, cfg.tracking.experiment),
        run_name="generate",
        tags={"tasft.kind": "generate"},
    )
    tracking.log_params(uri, run.info.run_id, cfg)
    for key, value in {
        "rows": result.rows,
        "harmful": result.harmful,
        "new_rows": result.new_rows,
        "seconds": result.seconds,
        "rows_per_s": result.new_rows / max(result.seconds, 1e-9),
    }.items():
        c.log_metric(run.info.run_id, key, float(value))
    c.log_artifact(run.info.run_id, str(result.path), "dataset")
    c.log_artifact(run.info.run_id, str(result.path) + MANIFEST_SUFFIX, "dataset")
    tracking.finish_run(uri, run.info.run_id)
    return run.info.run_id
