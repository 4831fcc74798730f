"""`tasft-ray train` as a tracked run, and an adapter in the MLflow Model Registry: logged like a
trial, registered with its setting, loadable offline by MLflow and by `tasft-ray evaluate`.

Everything here runs in this process (``cli_main``) on the tiny model and a sqlite store."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
from conftest import metric_steps, sqlite_uri

from tasft_ray import tracking
from tasft_ray.config import ConfigError, load_config
from tasft_ray.report import Trial
from tasft_ray.training.checkpoints import ADAPTER_DIR


def _train(cli_main, tmp_path: Path, *sets: str, resume: bool = False) -> str:
    args = ["train", "--config", "tiny", *(["--resume"] if resume else []),
            "--set", f"train.output_dir={tmp_path / 'train'}",
            "--set", f"tracking.uri={sqlite_uri(tmp_path)}", "--set", "lora.dropout=0",
            "--set", "tracking.system_metrics_every=0.1"]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    return cli_main.ok(*args)


def _runs(tmp_path: Path) -> list:
    c = tracking.client(sqlite_uri(tmp_path))
    exp = c.get_experiment_by_name("tasft-ray")
    return c.search_runs([exp.experiment_id], "tags.`tasft.kind` = 'train'")


def test_train_is_a_tracked_run_that_resumes_into_itself(tmp_path, cli_main):
    _train(cli_main, tmp_path, "train.max_steps=4", "train.checkpoint_every=2")
    (run,) = _runs(tmp_path)
    c = tracking.client(sqlite_uri(tmp_path))
    assert run.info.status == "FINISHED" and run.info.run_name == "emd λ=1 n=16 seed=0"
    tags = run.data.tags
    assert (tags["tasft.method"], tags["tasft.lam"], tags["tasft.seed"]) == ("emd", "1", "0")
    assert run.data.params["loss.method"] == "emd" and run.data.params["train.max_steps"] == "4"
    assert metric_steps(c, run) == [1, 2, 3, 4]
    assert "final/loss/total" in run.data.metrics
    inputs = {i.tags[0].value: i.dataset.name for i in run.inputs.dataset_inputs}
    assert inputs == {"safe": "alpaca_1k", "harmful": "jbb_jailbroken"}
    assert "adapter/adapter_model.safetensors" in {
        a.path for a in c.list_artifacts(run.info.run_id, ADAPTER_DIR)
    }
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)

    # resumed with more steps: the same run, every step once
    _train(cli_main, tmp_path, "train.max_steps=6", "train.checkpoint_every=2", resume=True)
    (again,) = _runs(tmp_path)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert metric_steps(c, again) == [1, 2, 3, 4, 5, 6]


def test_system_metrics_switch(tmp_path, cli_main):
    _train(cli_main, tmp_path, "train.max_steps=2", "tracking.system_metrics=false")
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert not [k for k in run.data.metrics if k.startswith("system/")]


def test_a_registered_adapter_loads_offline_and_is_what_evaluate_answers_with(
    tmp_path, cli_main, capsys
):
    """The pyfunc carries the adapter and its base model's spec: MLflow loads it with no hub,
    answers as the adapter does, and `evaluate --adapter models:/NAME@champion` gets the same
    files; a second registration becomes the champion."""
    import mlflow

    from tasft_ray.inference.adapters import adapter_from_spec
    from tasft_ray.inference.generator import generate_responses, load_generator_model
    from tasft_ray.sweep.register import ALIAS, register

    _train(cli_main, tmp_path, "train.max_steps=2", "tracking.system_metrics=false")
    (run,) = _runs(tmp_path)
    uri = sqlite_uri(tmp_path)
    cfg = load_config("tiny", [f"tracking.uri={uri}", "sweep.name=tiny-sweep",
                               "eval.sampling.max_new_tokens=6"])  # fmt: skip
    trial = Trial(run.info.run_id, run.info.run_name, "tiny", "emd", 16, 1.0,
                  {"safety/n_harmful": 3.0, "safety/n": 10.0}, seed=0)  # fmt: skip
    capsys.readouterr()
    first = register(uri, cfg, trial)
    assert (first.name, first.version) == ("tiny-sweep", "1")
    err = capsys.readouterr().err  # MLflow's own lines and its pickling warning stay off
    assert "Successfully registered" not in err and "CloudPickle" not in err, err
    assert first.uri == "models:/tiny-sweep@champion"
    c = tracking.client(uri)
    version = c.get_model_version_by_alias("tiny-sweep", ALIAS)
    assert str(version.version) == "1"
    assert version.tags["tasft.setting"] == "emd λ=1 n=16" and version.tags["tasft.run_id"] == (
        run.info.run_id
    )
    assert version.tags["metric.safety/n_harmful"] == "3"

    model = mlflow.pyfunc.load_model(first.uri)
    prompts = ["Give three tips for staying healthy.", "Name a colour."]
    got = model.predict(prompts)
    local = c.download_artifacts(run.info.run_id, ADAPTER_DIR, str(tmp_path / "logged"))
    tok, direct = load_generator_model(cfg.model, local, seed=0)
    assert got == generate_responses(direct, tok, prompts, ["", ""], cfg.eval.sampling)

    folder = adapter_from_spec(first.uri, "eval.adapter", uri, cfg.model)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        assert filecmp.cmp(Path(folder) / name, Path(local) / name, shallow=False)
    other = cfg.model.model_copy(update={"name": "gemma3-270m"})
    with pytest.raises(ConfigError, match="is an adapter of model.name=tiny, not gemma3-270m"):
        adapter_from_spec(first.uri, "eval.adapter", uri, other)
    with pytest.raises(ConfigError, match="models:/nope@champion: no such registered model"):
        adapter_from_spec("models:/nope@champion", "eval.adapter", uri, cfg.model)

    second = register(uri, cfg, trial)
    assert second.version == "2"
    assert str(c.get_model_version_by_alias("tiny-sweep", ALIAS).version) == "2"
