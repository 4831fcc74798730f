"""The ``data`` section: where the safe, harmful, refusal and contrastive sets come from,
how many of each, and the template; :class:`SourceConfig` is also how evaluation and generation
name their sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from tasft_ray.config.base import Section, SourceFormat


class SourceConfig(Section):
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
    prompt_part: Literal["all", "train", "heldout"] = Field(
        "all",
        description="Keep only the examples whose prompt falls in this part of a fixed split "
        "by prompt (a hash of the instruction, `heldout_share` of the prompts held out): "
        "`train` and `heldout` of one source never share a prompt, so held-out responses "
        "(eval.likelihood) can come from the set the training pairs are drawn from.",
    )
    heldout_share: float = Field(
        0.2, gt=0, lt=1, description="Share of the prompts in the `heldout` part."
    )
    fallback: SourceConfig | None = Field(
        None,
        description="Used, with a warning, while `path` does not exist yet (e.g. data that "
        "`tasft-ray generate` creates, with a shipped set until then).",
    )

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, raw: Any) -> Any:
        if isinstance(raw, str):  # data.safe: alpaca_1k
            raise ValueError(
                f"expected a source: {{name: {raw}}} for a registered data set, or {{path: FILE, "
                "format: FMT}, {url: URL, format: FMT}, {hf: DATASET_ID, format: FMT}"
            )
        return raw

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


class BenchmarkConfig(Section):
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


class DataConfig(Section):
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
