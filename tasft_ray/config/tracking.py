"""The ``tracking`` section: which MLflow store and experiment, and what goes there besides
each run's params and metrics."""

from __future__ import annotations

from pydantic import Field

from tasft_ray.config.base import Section


class TrackingConfig(Section):
    uri: str | None = Field(
        None,
        description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<cwd>/mlflow.db).",
    )
    experiment: str = Field("tasft-ray", min_length=1)
    register_model: bool = Field(
        True,
        description="Register a sweep's chosen adapter in the MLflow Model Registry (a model "
        "named after the sweep, alias `champion`) when its trials evaluate themselves.",
    )
    system_metrics: bool = Field(
        True,
        description="MLflow system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) "
        "of trial, train and generate runs, every `system_metrics_every` seconds.",
    )
    system_metrics_every: float = Field(
        10.0, gt=0, description="Seconds between system-metric samples."
    )
    outage_wait: float = Field(
        600.0,
        ge=0,
        description="How long a trial that has finished training waits for an unreachable "
        "tracking server to take its held metric rows (they stay in its last checkpoint "
        "after that).",
    )
