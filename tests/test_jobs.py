"""Cluster manifests: they parse, run the real module on a real config, and fit its resources."""

from __future__ import annotations

import shlex
import subprocess

import pytest
import yaml

from tasft_ray.config import REPO_ROOT, load_config

JOBS = REPO_ROOT / "jobs"


def _load(name: str) -> dict:
    return yaml.safe_load((JOBS / name).read_text())


def _entrypoint_config(entrypoint: str):
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "tasft_ray.tune"]
    path = argv[argv.index("--config") + 1]
    assert (REPO_ROOT / path).is_file()
    return load_config(REPO_ROOT / path)


def _gpu_capacity(group: dict, replicas_key: str) -> tuple[int, float]:
    gpus = int(group["rayStartParams"]["num-gpus"])
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) == gpus  # pod limit matches what Ray advertises
    assert float(limits["cpu"]) == float(group["rayStartParams"]["num-cpus"])
    return group[replicas_key] * gpus, float(group["rayStartParams"]["num-cpus"])


def test_rayjob_runs_the_tune_module_with_enough_gpus():
    job = _load("rayjob.yaml")
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    cfg = _entrypoint_config(job["spec"]["entrypoint"])
    assert cfg.engine.use_gpu and cfg.engine.kind == "deepspeed"
    (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    min_gpus, cpus = _gpu_capacity(group, "minReplicas")
    max_gpus, _ = _gpu_capacity(group, "maxReplicas")
    assert min_gpus >= cfg.train.num_workers  # one trial always fits
    assert max_gpus >= cfg.train.num_workers * cfg.sweep.max_concurrent_trials
    assert cpus >= cfg.engine.cpus_per_worker
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert "TASFT_DATA_DIR" in env["env_vars"]
    # no shared disk: results in object storage, runs on a tracking server
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[argv.index("--set") + 1].startswith("sweep.storage=s3://")
    assert env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http://")


def test_raycluster_fits_every_paper_config():
    cluster = _load("raycluster.yaml")
    assert cluster["kind"] == "RayCluster"
    (group,) = cluster["spec"]["workerGroupSpecs"]
    max_gpus, cpus = _gpu_capacity(group, "maxReplicas")
    for path in sorted((REPO_ROOT / "configs" / "paper").glob("*.yaml")):
        cfg = load_config(path)
        assert max_gpus >= cfg.train.num_workers * cfg.sweep.max_concurrent_trials, path
        assert cpus >= cfg.engine.cpus_per_worker, path


def test_cluster_launcher_yaml_is_consistent():
    launcher = _load("cluster-aws.yaml")
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    gpu = types["gpu"]
    assert gpu["max_workers"] <= launcher["max_workers"]
    cfg = load_config(REPO_ROOT / "configs" / "paper" / "llama7b.yaml")
    capacity = gpu["resources"]["GPU"] * gpu["max_workers"]
    assert capacity >= cfg.train.num_workers * cfg.sweep.max_concurrent_trials
    assert any("pip install -e ." in c for c in launcher["setup_commands"])


def test_submit_script_is_valid_bash_and_submits_the_module():
    text = (JOBS / "submit.sh").read_text()
    assert "python -m tasft_ray.tune" in text and "ray job submit" in text
    assert "MLFLOW_TRACKING_URI" in text and "AWS_ENDPOINT_URL" in text
    assert "AWS_SECRET_ACCESS_KEY" not in text  # credentials stay on the nodes
    subprocess.run(["bash", "-n", str(JOBS / "submit.sh")], check=True)


@pytest.mark.parametrize(
    ("name", "epochs", "emd100", "nlcl100"),
    [
        ("llama7b", 3, 9.0, 20.0),
        ("llama13b", 3, 7.1, 55.0),
        ("mistral7b", 4, 3.1, 25.0),
        ("llama31_8b", 3, 3.8, 16.0),
    ],
)
def test_paper_configs_carry_table4_and_appendix(name, epochs, emd100, nlcl100):
    cfg = load_config(REPO_ROOT / "configs" / "paper" / f"{name}.yaml")
    assert cfg.train.global_batch_size == 96 and cfg.train.epochs == epochs
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.05)
    assert cfg.train.lr == 1e-4 and cfg.data.safe_count == 20000
    lam = {(c["loss.method"], c["data.toxic_count"]): c["loss.lam"] for c in cfg.sweep.cases}
    assert lam[("emd", 100)] == emd100 and lam[("nlcl", 100)] == nlcl100
    assert {n for (m, n) in lam if m == "emd"} == {1000, 500, 300, 100}
