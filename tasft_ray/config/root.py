"""The whole configuration, :class:`Config`: its sections, the rules that span sections, and
the validation that turns pydantic's errors into one :class:`ConfigError` line blaming the
override (or file) that set the bad key."""

from __future__ import annotations

import difflib
import os
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from tasft_ray.config.base import ConfigError, Section
from tasft_ray.config.data import DataConfig
from tasft_ray.config.describe import describe
from tasft_ray.config.eval import EvalConfig
from tasft_ray.config.generate import GenerateConfig
from tasft_ray.config.loss import LossConfig
from tasft_ray.config.model import LoraConfig, ModelConfig
from tasft_ray.config.overrides import flatten, set_dotted
from tasft_ray.config.sweep import SweepConfig
from tasft_ray.config.testing import TestingConfig
from tasft_ray.config.tracking import TrackingConfig
from tasft_ray.config.train import EngineConfig, TrainConfig
from tasft_ray.objective import VALIDATION_METRICS
from tasft_ray.setting import NEEDS_RELATED, Setting


class Config(Section):
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
    testing: TestingConfig = Field(
        default_factory=TestingConfig, description="Fault injection for the project's tests."
    )

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
        every, ckpt = self.eval.validation.every, self.train.checkpoint_every
        if every and (not ckpt or every % ckpt):
            raise ValueError(
                f"eval.validation.every={every} must be a multiple of train.checkpoint_every="
                f"{ckpt}: validation runs on checkpoints"
            )
        return self

    @model_validator(mode="after")
    def _a_metric_that_compares_trials(self) -> Config:
        s, v = self.sweep, self.eval.validation
        if s.objective is not None:
            o = s.objective
            for metric in [o.minimize or o.maximize, *o.constraints, *o.pareto]:
                if metric not in VALIDATION_METRICS:
                    close = difflib.get_close_matches(str(metric), VALIDATION_METRICS, n=1)
                    hint = f"did you mean {close[0]}? " if close else ""
                    raise ValueError(
                        f"sweep.objective: unknown metric '{metric}' ({hint}validation reports "
                        f"{', '.join(VALIDATION_METRICS)})"
                    )
            if not v.every or not v.benchmarks:
                raise ValueError(
                    "sweep.objective needs validation during training: set "
                    "eval.validation.every and eval.validation.benchmarks (harm benchmarks "
                    "disjoint from the reported ones)"
                )
            return self
        ranks = s.search == "optuna" or s.scheduler != "none"
        if ranks and s.metric is None:
            what = f"sweep.scheduler={s.scheduler}"
            if s.search == "optuna":
                what = "sweep.search=optuna"
            raise ValueError(
                f"{what} ranks trials: set sweep.objective, e.g. {{minimize: val/harm_score}}, "
                "with eval.validation.every (or sweep.metric)"
            )
        varies = "loss.lam" in s.space or any("loss.lam" in c for c in s.cases)
        if (
            s.metric is not None
            and s.metric.startswith("loss/")
            and varies
            and (s.search == "optuna" or s.scheduler != "none")
        ):
            raise ValueError(
                f"sweep.metric={s.metric} is a training loss, which λ itself changes (a larger λ "
                "gives a lower loss): it cannot rank trials with different λ; set sweep.objective, "
                "e.g. {minimize: val/harm_score}, with eval.validation.every"
            )
        if s.toxic_search is not None:
            raise ValueError("sweep.toxic_search needs sweep.objective (its target metric)")
        return self

    @model_validator(mode="after")
    def _sweep_keys_exist(self) -> Config:
        # a key may set a whole section, e.g. data.contrastive: {path: ..., format: ...}
        leaves = flatten(self)
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

    @property
    def setting(self) -> Setting:
        """What this config trains, as runs, tables and the report name it."""
        return Setting(self.loss.method, self.loss.lam, self.data.toxic_count, self.train.seed)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def with_overrides(self, overrides: dict[str, Any], check_files: bool = True) -> Config:
        """A new validated config with dotted keys replaced (used by sweeps)."""
        raw = self.model_dump(mode="json")
        for key, value in overrides.items():
            set_dotted(raw, key, value, origin="override")
        return validate(raw, origin="override", check_files=check_files)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], check_files: bool = True) -> Config:
        """Validate a dumped config. Ray workers pass ``check_files=False``: they get their
        data through Ray, and the driver's file paths need not exist on their node."""
        return validate(raw, origin="config", check_files=check_files)


def validate(
    raw: dict[str, Any], origin: str, given: dict[str, str] | None = None, check_files: bool = True
) -> Config:
    """Validate; each problem is blamed on the override that set its key, else on ``origin``."""
    try:
        return Config.model_validate(raw, context={"check_files": check_files})
    except ValidationError as exc:
        given = given or {}
        whole = " with ".join([origin, *given.values()])  # a rule across keys: all of them
        by_origin: dict[str, list[str]] = {}
        for loc, line in describe(exc, Config):
            touched = [o for k, o in given.items() if f"{loc}.".startswith(f"{k}.")]
            touched += [o for k, o in given.items() if loc and k.startswith(f"{loc}.")]
            blamed = touched[-1] if touched else (origin if loc else whole)
            by_origin.setdefault(blamed, []).append(line)
        raise ConfigError("; ".join(f"{o}: {'; '.join(m)}" for o, m in by_origin.items())) from None
