"""The answer pipeline `generate` and `evaluate` share, as a Ray Data dataset:

    prompts -> model answers (HF generate in an actor pool, or vLLM via ray.data.llm)
            -> harm judge + refusal detector -> rows

Ray must already be up (``tasft_ray.cluster.init_ray``; :func:`pipeline_cpus` says how many
logical CPUs the stages take).
"""

from __future__ import annotations

from tasft_ray.config import GenerateConfig, ModelConfig, SamplingConfig
from tasft_ray.data.template import format_prompt
from tasft_ray.inference.generator import HFGenerator
from tasft_ray.inference.judging import EXTRA, JudgeStage
from tasft_ray.inference.vllm import merged_model_dir, resolve_backend, vllm_stage

ROW_KEYS = (
    "id", "source", "instruction", "input", "response", "judge", "score", "harmful", "refused",
)  # fmt: skip


def pipeline_cpus(batching: GenerateConfig) -> int:
    """Logical CPUs the pipeline's actors take: the generators plus one for the judge."""
    return batching.num_actors * batching.cpus_per_actor + 1


def answer_pipeline(
    prompts: list[dict],
    model: ModelConfig,
    adapter: str | None,
    sampling: SamplingConfig,
    judge: str | None,
    judge_options: dict,
    batching: GenerateConfig,
    extra_judges: dict[str, dict] | None = None,
):
    """A lazy Ray dataset of judged answers to ``prompts`` (rows {id, instruction, input,
    source}); ``batching`` is the generate section's backend, batch_size, num_actors,
    cpus_per_actor and num_gpus_per_actor. ``judge`` None: the answers alone (text that is not
    an answer to judge, e.g. prompts an instruction model writes)."""
    import ray
    from ray.data import ActorPoolStrategy

    b = batching
    ds = ray.data.from_items(prompts)
    if resolve_backend(b.backend) == "vllm":
        source = merged_model_dir(model, adapter)
        ds = vllm_stage(ds, sampling, b.batch_size, b.num_actors, source)
    else:
        ds = ds.map_batches(
            HFGenerator,
            fn_constructor_kwargs={
                "model_cfg": model.model_dump(mode="json"),
                "adapter": adapter,
                "sampling": sampling.model_dump(mode="json"),
                "threads": b.cpus_per_actor,
            },
            compute=ActorPoolStrategy(size=b.num_actors),
            batch_size=b.batch_size,
            num_cpus=b.cpus_per_actor,
            num_gpus=b.num_gpus_per_actor,
        )
    if judge is None:
        return ds
    return ds.map_batches(
        JudgeStage,
        fn_constructor_kwargs={
            "judge": judge,
            "options": dict(judge_options),
            "extra": extra_judges or {},
        },
        compute=ActorPoolStrategy(size=1),
        batch_size=b.batch_size,
    )


def clean_row(row: dict) -> dict:
    """A judged row as JSON types in a fixed column order, with the exact prompt the model saw
    (and each extra judge's ``judges: {name: {score, harmful}}``)."""
    out = {k: row[k] for k in ROW_KEYS}
    extra = {k.split("/")[1] for k in row if k.startswith(EXTRA)}
    if extra:
        out["judges"] = {
            n: {"score": float(row[f"{EXTRA}{n}/score"]),
                "harmful": bool(row[f"{EXTRA}{n}/harmful"])}
            for n in sorted(extra)
        }  # fmt: skip
    out["score"], out["harmful"], out["refused"] = (
        float(out["score"]),
        bool(out["harmful"]),
        bool(out["refused"]),
    )
    out["prompt"] = format_prompt(out["instruction"], out["input"])
    return out
