"""The one validated configuration object that flows through every entry point.

A YAML file (``configs/*.yaml``) plus dotted ``--set a.b=v`` overrides is parsed into
:class:`Config`. Every field is typed, bounded and described; unknown keys are errors. Any
failure is raised as a single :class:`ConfigError` whose one-line message names the file and the
key, so the CLI can print it and exit without a traceback.

One module per section (``model``, ``data``, ``loss``, ``train``, ``tracking``, ``sweep``,
``generate``, ``eval``, ``testing``) with its own checks; ``root`` combines them with the rules
across sections; ``loading`` reads YAML and overrides; ``overrides`` maps dotted keys;
``describe`` words pydantic's errors as the lines users read.
"""

from tasft_ray.config.base import ConfigError, JudgeName, Section, SourceFormat
from tasft_ray.config.data import Benchmark, BenchmarkConfig, DataConfig, SourceConfig
from tasft_ray.config.eval import (
    AlpacaEvalConfig,
    EvalConfig,
    EvalStageConfig,
    ValidationConfig,
)
from tasft_ray.config.generate import ContrastiveConfig, GenerateConfig, SamplingConfig
from tasft_ray.config.loading import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    REPO_ROOT,
    load_config,
    parse_config,
    resolve_config_path,
)
from tasft_ray.config.loss import LossConfig
from tasft_ray.config.model import LoraConfig, ModelConfig
from tasft_ray.config.overrides import flatten
from tasft_ray.config.root import Config
from tasft_ray.config.sweep import (
    ConstraintConfig,
    ObjectiveConfig,
    SweepConfig,
    SweepParam,
    ToxicSearchConfig,
)
from tasft_ray.config.testing import TestingConfig
from tasft_ray.config.tracking import TrackingConfig
from tasft_ray.config.train import EngineConfig, TrainConfig
from tasft_ray.setting import Method

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_CONFIG",
    "REPO_ROOT",
    "AlpacaEvalConfig",
    "Benchmark",
    "BenchmarkConfig",
    "Config",
    "ConfigError",
    "ConstraintConfig",
    "ContrastiveConfig",
    "DataConfig",
    "EngineConfig",
    "EvalConfig",
    "EvalStageConfig",
    "GenerateConfig",
    "JudgeName",
    "LoraConfig",
    "LossConfig",
    "Method",
    "ModelConfig",
    "ObjectiveConfig",
    "SamplingConfig",
    "Section",
    "SourceConfig",
    "SourceFormat",
    "SweepConfig",
    "SweepParam",
    "TestingConfig",
    "ToxicSearchConfig",
    "TrackingConfig",
    "TrainConfig",
    "ValidationConfig",
    "flatten",
    "load_config",
    "parse_config",
    "resolve_config_path",
]
