"""What every config section shares: unknown keys are errors, numbers are finite, assignments are
validated, and a problem is one :class:`ConfigError` line naming the key and the fix."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from tasft_ray.errors import UserError

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


class Section(BaseModel):
    """A config section. ``ONE_VALUE``: logged to MLflow as one param, not key by key (the
    report reads such a section back whole)."""

    # YAML .inf passes a lower bound and .nan any unbounded field: no number may be either
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    ONE_VALUE: ClassVar[bool] = False
