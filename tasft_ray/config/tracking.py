"""The ``tracking`` section: which MLflow store and experiment."""

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
