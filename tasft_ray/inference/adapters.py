"""Which LoRA adapter to answer with: a folder, ``mlflow:RUN_ID`` (a run's logged adapter) or
``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` (a registered one, ``inference.registered``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.config import ConfigError, ModelConfig
from tasft_ray.errors import one_line
from tasft_ray.training.checkpoints import ADAPTER_CONFIG, ADAPTER_DIR


def adapter_from_spec(
    spec: str | None, field: str, tracking_uri: str, model: ModelConfig | None = None
) -> str | None:
    """A LoRA adapter folder, ``mlflow:RUN_ID`` (the run's logged adapter, downloaded) or a
    registered model (downloaded; its base model must be ``model``'s); checked here, so a
    wrong one is one line before any model is loaded."""
    if spec and spec.startswith("models:/"):
        return _registered(spec, field, tracking_uri, model)
    if spec and spec.startswith("mlflow:"):
        run_id = spec.removeprefix("mlflow:")
        if not run_id:
            raise ConfigError(f"{field}: {spec}: expected mlflow:RUN_ID, with the run's id")
        if not tracking.has_store(tracking_uri):  # (opening it would create it)
            raise ConfigError(f"{field}: {spec}: no such MLflow run at {tracking_uri}")
        c = tracking.client(tracking_uri)
        try:
            c.get_run(run_id)
            logged = c.list_artifacts(run_id, ADAPTER_DIR)
        except Exception:  # MLflow raises its own exception types for an unknown run
            raise ConfigError(f"{field}: {spec}: no such MLflow run at {tracking_uri}") from None
        if not logged:
            raise ConfigError(f"{field}: {spec}: the run has no logged {ADAPTER_DIR}/")
        folder = c.download_artifacts(run_id, ADAPTER_DIR, tempfile.mkdtemp(prefix="tasft_"))
        return check_adapter(folder, f"{field}: {spec}")
    if spec:
        return check_adapter(spec, field)
    return None


def check_adapter(folder: str, field: str) -> str:
    """``folder`` if it holds a peft adapter, else one line naming ``field``."""
    path = Path(folder)
    if path.is_file():
        raise ConfigError(f"{field}: {folder} is a file; expected an adapter folder (a "
                          f"checkpoint's {ADAPTER_DIR}/)")  # fmt: skip
    if not path.is_dir():
        raise ConfigError(f"{field}: no such folder {folder}")
    if not (path / ADAPTER_CONFIG).is_file():
        raise ConfigError(
            f"{field}: {folder} is not a LoRA adapter (no {ADAPTER_CONFIG}); give a checkpoint's "
            f"{ADAPTER_DIR}/ folder"
        )
    return folder


def _registered(spec: str, field: str, tracking_uri: str, model: ModelConfig | None) -> str:
    import mlflow

    from tasft_ray.inference.registered import registered_parts

    if not tracking.has_store(tracking_uri):  # (opening it would create it)
        raise ConfigError(f"{field}: {spec}: no registered model at {tracking_uri}")
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=spec, dst_path=tempfile.mkdtemp(prefix="tasft_"),
            tracking_uri=tracking_uri, registry_uri=tracking_uri,
        )  # fmt: skip
    except Exception as exc:  # MLflow raises its own types for an unknown name/alias/version
        raise ConfigError(
            f"{field}: {spec}: no such registered model version at {tracking_uri} "
            f"({one_line(exc, 160)})"
        ) from None
    folder, config = registered_parts(local)
    base = (config.get("model") or {}).get("name")
    if model is not None and base and base != model.name:
        raise ConfigError(
            f"{field}: {spec} is an adapter of model.name={base}, not {model.name}; "
            f"set --set model.name={base}"
        )
    return check_adapter(str(folder), f"{field}: {spec}")
