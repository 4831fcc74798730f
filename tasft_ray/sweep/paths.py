"""Where a sweep's files go: absolute local paths for every process of the machine, never
into Ray's temporary copy of a job's working directory, and the saved config ``--resume``
reads back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasft_ray.config import Config, ConfigError, parse_config
from tasft_ray.files import cache_root
from tasft_ray.storage import Location, location
from tasft_ray.tracking import sqlite_file, tracking_uri

SWEEP_CONFIG = "sweep_config.yaml"
RAY_JOB_COPY = "/runtime_resources/working_dir_files/"  # Ray's copy of a job's working dir


def resolve_paths(cfg: Config) -> Config:
    """Absolute local paths (storage, cache, data, a sqlite tracking store), so every process
    of this machine means the same folders whatever its cwd; a storage URI is kept as it is."""
    overrides: dict[str, Any] = {
        "tracking.uri": tracking_uri(cfg),
        "sweep.storage": location(cfg.sweep.storage, "sweep.storage").uri,
        "model.cache_dir": str(cache_root(cfg.model.cache_dir).resolve()),
    }
    if cfg.data_root:
        overrides["data.root"] = str(Path(cfg.data_root).expanduser().resolve())
    for key in ("safe", "harmful", "refusals", "contrastive"):  # local files, e.g. generated
        src = getattr(cfg.data, key)
        if src is not None and src.path:
            overrides[f"data.{key}.path"] = str(Path(src.path).expanduser().resolve())
    return cfg.with_overrides(overrides)


def check_results_last(storage: Location, tracking_uri: str) -> None:
    """One line when results would land in Ray's temporary copy of a job's working directory
    (``ray job submit --working-dir .``), which is deleted with the cluster session."""
    cwd = os.getcwd()
    if RAY_JOB_COPY not in cwd + "/":
        return
    store = sqlite_file(tracking_uri)
    inside = [
        what
        for what, path in (
            ("sweep.storage", storage.path if storage.local else None),
            ("the MLflow store", store),
        )
        if path and os.path.abspath(path).startswith(cwd)
    ]
    if inside:
        raise ConfigError(
            f"{' and '.join(inside)} would be written into Ray's temporary copy of the working "
            f"directory ({cwd}), deleted with the cluster session: set sweep.storage to a shared "
            "folder or s3://BUCKET/PREFIX and MLFLOW_TRACKING_URI (or tracking.uri) to an "
            "`mlflow server` at http://HOST:PORT"
        )


def load_sweep_config(resume: str, overrides: list[str]) -> Config:
    """The config a sweep started with (so --resume needs no flags), plus any overrides."""
    sweep = location(resume, "--resume")
    text = sweep.read_text(SWEEP_CONFIG)
    if text is None:
        raise ConfigError(f"--resume {resume}: not a tasft-ray sweep folder (no {SWEEP_CONFIG})")
    return parse_config(text, f"{sweep.uri}/{SWEEP_CONFIG}", overrides)
