"""The sweep's chosen adapter in the MLflow Model Registry: one registered model per sweep name,
a version per registration (tagged with the trial's setting and its numbers), alias
``champion`` on the newest.

Which adapter: with an objective, the trial it ranks best; otherwise the report's λ choices
(one per method and toxic count, ``report.rule``) ranked by that rule's own key — fewest
harmful answers (on the validation prompts when there are some), then harm score, then the
smaller λ. The adapter is the trial's logged ``adapter/`` (so a driver on any machine can
register it), wrapped as the pyfunc of ``inference.registered``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.config import Config
from tasft_ray.inference.registered import ADAPTER_ARTIFACT, MODEL_CODE, model_config
from tasft_ray.report import Trial, best_lambda
from tasft_ray.report.best_per_method import fewest_harmful_key
from tasft_ray.training.checkpoints import ADAPTER_DIR

log = logging.getLogger(__name__)

ALIAS = "champion"
# The numbers a version carries as tags (when the trial has them), final evaluation's
METRIC_TAGS = ("safety/n_harmful", "safety/n", "safety/harm_score",
               "xstest/safe_refusal_rate", "quality/mean_acc", "nll/harmful/response_mean",
               "answers/degenerate_rate")  # fmt: skip


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    label: str  # the setting the version was trained with

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{ALIAS}"


def champion(trials: list[Trial], best_trial_id: str | None = None) -> Trial | None:
    """The trial whose adapter the sweep registers (module doc), or None: the objective's
    best (a Tune trial id), else the best of the report's λ choices."""
    if best_trial_id is not None:
        return next((t for t in trials if t.trial_id == best_trial_id), None)
    choices = best_lambda(trials)
    if not choices:
        return None

    return min(choices, key=lambda c: fewest_harmful_key(c.setting)).trial


def register(uri: str, cfg: Config, trial: Trial) -> Registered:
    """Log ``trial``'s adapter as a pyfunc model in its run and register it under the sweep's
    name, tagged, with the ``champion`` alias moved onto it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    c = tracking.client(uri)
    folder = c.download_artifacts(trial.run_id, ADAPTER_DIR, tempfile.mkdtemp(prefix="tasft_"))
    trial_cfg = cfg.with_overrides({"model.name": trial.model, "train.seed": trial.seed},
                                   check_files=False)  # fmt: skip
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # a model of the trial's run (its source), logged without reopening the finished run
    logged = mlflow.initialize_logged_model(
        name="model", source_run_id=trial.run_id,
        experiment_id=c.get_run(trial.run_id).info.experiment_id,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tasft_") as code:
        # models from code: MLflow warns about (and cloudpickles) a PythonModel object
        entry = Path(code, "adapter_model.py")
        entry.write_text(MODEL_CODE)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(entry),
            artifacts={ADAPTER_ARTIFACT: folder},
            model_config=model_config(trial_cfg.model, trial.seed, trial_cfg.eval.sampling),
            pip_requirements=["tasft-ray"],  # the package that loads it: base model + adapter
            model_id=logged.model_id,
        )
    tags = {"tasft.setting": trial.label, "tasft.method": trial.method,
            "tasft.lam": f"{trial.lam:g}", "tasft.toxic_count": str(trial.toxic),
            "tasft.seed": str(trial.seed), "tasft.run_id": trial.run_id,
            "tasft.model": trial.model}  # fmt: skip
    tags |= {f"metric.{k}": f"{trial.final[k]:.6g}" for k in METRIC_TAGS if k in trial.final}
    # the client's calls, not mlflow.register_model's, which prints its own lines to stderr
    try:
        c.create_registered_model(cfg.sweep.name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    made = c.create_model_version(cfg.sweep.name, info.model_uri, run_id=trial.run_id,
                                  tags=tags, model_id=info.model_id)  # fmt: skip
    version = str(made.version)
    c.set_registered_model_alias(cfg.sweep.name, ALIAS, version)
    log.info("registered %s version %s (%s) as @%s", cfg.sweep.name, version, trial.label, ALIAS)
    return Registered(cfg.sweep.name, version, trial.label)
