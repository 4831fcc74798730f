"""Which LoRA adapter to answer with: a folder, or ``mlflow:RUN_ID`` (a run's logged adapter)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.config import ConfigError
from tasft_ray.training.checkpoints import ADAPTER_DIR


def adapter_from_spec(spec: str | None, field: str, tracking_uri: str) -> str | None:
    """A LoRA adapter folder, or ``mlflow:RUN_ID`` (the run's logged adapter, downloaded)."""
    if spec and spec.startswith("mlflow:"):
        run_id = spec.removeprefix("mlflow:")
        c = tracking.client(tracking_uri)
        return c.download_artifacts(run_id, ADAPTER_DIR, tempfile.mkdtemp(prefix="tasft_adapter_"))
    if spec and not Path(spec).is_dir():
        raise ConfigError(f"{field}: no such folder {spec}")
    return spec
