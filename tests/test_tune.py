"""Ray Tune over Ray Train with MLflow, on the tiny model and real local Ray clusters.

Each sweep runs as the real CLI (`python -m tasft_ray.tune`) in a subprocess with its own local
Ray, so the tests exercise exactly what users run; results are read back from the sqlite MLflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from test_report import check_png, md_table

from tasft_ray import tracking
from tasft_ray.cluster import logical_cpus
from tasft_ray.config import REPO_ROOT, ConfigError, load_config
from tasft_ray.data.mixture import build_mixture, collate
from tasft_ray.losses import tasft_loss
from tasft_ray.sweep.space import param_space, trial_overrides
from tasft_ray.training.models import attach_lora, load_model

SWEEP_TIMEOUT = 900


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["RAY_TMPDIR"] = "/tmp"  # short socket paths
    # everything else the driver and its Ray workers stage goes here, where a test can see it
    env["TMPDIR"] = str(_scratch(tmp_path))
    return env


def _scratch(tmp_path: Path) -> Path:
    path = tmp_path / "tmp"
    path.mkdir(exist_ok=True)
    return path


def _tune_cmd(tmp_path: Path, *overrides: str) -> list[str]:
    sets = [
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"sweep.storage={tmp_path / 'ray'}",
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "lora.dropout=0",
        *overrides,
    ]
    cmd = [sys.executable, "-m", "tasft_ray.tune", "--config", "tiny"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    return proc


def _runs(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    exp = c.get_experiment_by_name("tasft-ray")
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    children = [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    return c, parents, children


def _inputs(c, run) -> list:
    return c.get_run(run.info.run_id).inputs.dataset_inputs


def _tags(dataset_input) -> dict[str, str]:
    return {t.key: t.value for t in dataset_input.tags}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _steps(c, run) -> list[int]:
    return sorted(m.step for m in c.get_metric_history(run.info.run_id, "loss/total"))


# ----------------------------------------------------------------------------- unit level


def test_param_space_and_cases():
    cfg = load_config(
        "tiny",
        [
            "sweep.space={loss.lam: {grid: [0, 1]}, train.lr: {loguniform: [1.0e-5, 1.0e-3]}}",
            "sweep.cases=[{loss.method: emd, data.toxic_count: 8}, {loss.method: nlcl}]",
        ],
    )
    space = param_space(cfg.sweep)
    assert space["loss.lam"] == {"grid_search": [0, 1]}
    assert space["case"]["grid_search"][0] == {"loss.method": "emd", "data.toxic_count": 8}
    params = {"loss.lam": 1, "case": {"loss.method": "nlcl"}}
    assert trial_overrides(params) == {"loss.lam": 1, "loss.method": "nlcl"}
    assert cfg.with_overrides(trial_overrides(params)).loss.method == "nlcl"


def test_bad_sweep_keys_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.cases\[0\] key 'loss.lamda' is not a config key"):
        load_config("tiny", ["sweep.cases=[{loss.lamda: 1}]"])
    # a case may set a whole section, and the trial's config (with that section set) is valid
    (tmp_path / "c.jsonl").write_text("")
    whole = f"{{data.contrastive: {{path: {tmp_path}/c.jsonl, format: generated}}, "
    cfg = load_config("tiny", [f"sweep.cases=[{whole}data.harmful: {{name: harmfulq}}}}]"])
    trial = cfg.with_overrides(cfg.sweep.cases[0])
    assert trial.data.contrastive.path.endswith("c.jsonl") and trial.data.harmful.name == "harmfulq"
    with pytest.raises(ConfigError, match=r"sweep.cases\[0\] key 'data.contrast' is not a"):
        load_config("tiny", ["sweep.cases=[{data.contrast: {path: c.jsonl}}]"])


def test_logical_cpus_never_deadlock():
    # every concurrent trial needs its own driver CPU plus its workers' CPUs
    cfg = load_config("tiny", ["sweep.max_concurrent_trials=2", "train.num_workers=2"])
    assert logical_cpus(cfg) == 6


def test_unreachable_tracking_server_fails_fast(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasft_ray.tune",
            "--config",
            "tiny",
            "--set",
            "tracking.uri=http://127.0.0.1:9",
            "--set",
            f"sweep.storage={tmp_path}",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert "tracking.uri http://127.0.0.1:9: MLflow server unreachable" in err
    assert time.perf_counter() - start < 60


def test_step_logger_skips_steps_already_logged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.ensure_experiment(uri, "x")
    run_id = tracking.client(uri).create_run(exp).info.run_id
    first = tracking.StepLogger(uri, run_id)
    for step in (1, 2, 3):
        first.add({"step": step, "loss/total": float(step)})
    first.flush()
    # a restarted worker resumes from the step-2 checkpoint and replays step 3
    again = tracking.StepLogger(uri, run_id)
    for step in (3, 4):
        again.add({"step": step, "loss/total": float(step)})
    again.flush()
    history = tracking.client(uri).get_metric_history(run_id, "loss/total")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- sweeps


def test_lambda_grid_over_two_ddp_workers_with_mlflow_and_a_worker_failure(tmp_path):
    """SFT vs EMD λ=1 × a 2-worker DDP TorchTrainer; the EMD trial's rank 0 crashes once.
    Each trial evaluates both its checkpoints; the sweep writes its report."""
    proc = _run(
        _tune_cmd(
            tmp_path,
            "train.num_workers=2",
            "engine.kind=ddp",
            "sweep.max_concurrent_trials=2",
            "sweep.cases=[{loss.method: sft, loss.lam: 0}, {loss.lam: 1, engine.fail_at_step: 3}]",
            "eval.in_sweep=true",
            "eval.checkpoints=all",
            "eval.max_prompts=2",
            "eval.benchmarks=[i_malicious, xstest_safe]",
            "eval.validation=[advbench]",
            "eval.validation_max_prompts=2",
            "eval.sampling.max_new_tokens=6",
            "eval.quality_tasks=[boolq]",
            "eval.quality_limit=3",
        ),
        tmp_path,
    )
    c, parents, children = _runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    assert all(ch.data.tags[tracking.PARENT_TAG] == parents[0].info.run_id for ch in children)
    assert sorted(ch.data.params["loss.lam"] for ch in children) == ["0.0", "1.0"]
    for ch in children:
        assert ch.info.status == "FINISHED"
        assert ch.data.params["train.num_workers"] == "2"
        # continuous, none repeated: the crashed trial re-ran step 3 but logged it once
        assert _steps(c, ch) == [1, 2, 3, 4]
        adapter = [a.path for a in c.list_artifacts(ch.info.run_id, "adapter")]
        assert "adapter/adapter_model.safetensors" in adapter
        # in-sweep evaluation of the final adapter: metrics and the responses table
        m = ch.data.metrics
        assert m["final/eval/safety/n"] == 2 and m["final/eval/xstest_safe/n"] == 2
        assert 0 <= m["final/eval/xstest/safe_refusal_rate"] <= 1
        assert 0 <= m["final/eval/quality/boolq/acc"] <= 1
        got = Path(c.download_artifacts(ch.info.run_id, "eval", str(tmp_path / ch.info.run_id)))
        rows = [json.loads(x) for x in (got / "responses.jsonl").read_text().splitlines()]
        assert len(rows) == 6  # 2 i_malicious + 2 xstest_safe + 2 validation (AdvBench)
        assert m["final/eval/safety/n_harmful"] == sum(
            r["harmful"] for r in rows if r["source"] == "i_malicious"
        )
        assert m["final/eval/val/n"] == 2 and m["final/eval/val/n_harmful"] == sum(
            r["harmful"] for r in rows if r["source"] == "val/advbench"
        )
        # eval.checkpoints=all: both kept checkpoints (steps 2 and 4) evaluated, by step
        curve = c.get_metric_history(ch.info.run_id, "eval/safety/harm_score")
        assert sorted(x.step for x in curve) == [2, 4]
        assert "eval/step_2/responses.jsonl" in {
            a.path for a in c.list_artifacts(ch.info.run_id, "eval/step_2")
        }
        # the answers as MLflow tables, per checkpoint, equal to the JSONL rows
        for where, n in (("eval", 6), ("eval/step_2", 6)):
            table = json.loads(
                Path(c.download_artifacts(ch.info.run_id, f"{where}/answers.json")).read_text()
            )
            cols = table["columns"]
            assert cols[:8] == ["benchmark", "prompt_id", "prompt", "response", "harm_score",
                                "harmful", "refused", "judge"]  # fmt: skip
            answers = [dict(zip(cols, r, strict=True)) for r in table["data"]]
            assert len(answers) == n
            if where == "eval":
                assert [(a["prompt_id"], a["response"], a["harmful"]) for a in answers] == [
                    (r["id"], r["response"], r["harmful"]) for r in rows
                ]
        # dataset lineage: the mixture's sources with the digests of their files
        used = {i.tags[0].value: i for i in _inputs(c, ch)}
        safe = used["safe"].dataset
        alpaca = Path(os.environ["TASFT_DATA_DIR"], "alpaca_data_1k_sample", "alpaca_data_1k.json")
        assert safe.name == "alpaca_1k" and safe.digest == _digest(alpaca)
        assert _tags(used["safe"])[tracking.ROWS_TAG] == "64"
        if ch.data.params["loss.method"] == "sft":  # SFT trains on no harmful rows
            assert set(used) == {"safe"}
        else:
            assert used["harmful"].dataset.name == "jbb_jailbroken"
            assert _tags(used["harmful"])[tracking.ROWS_TAG] == "16"
    # the sweep's report: written, logged to the parent run, its numbers are the runs' numbers
    parent = parents[0].info.run_id
    report = tmp_path / "ray" / "sweep" / "report"
    assert f"report: {report / 'report.md'}" in proc.stdout
    assert "report/report.md" in {a.path for a in c.list_artifacts(parent, "report")}
    for png in ("fig2_harm_vs_step.png", "fig3_refusal_vs_safety.png"):
        check_png(report / png)
    table = {r["method"]: r for r in md_table((report / "report.md").read_text(), "## Table 2")}
    for ch in children:
        m, row = ch.data.metrics, table[ch.data.params["loss.method"]]
        assert int(row["i_malicious (n=2)"]) == m["final/eval/i_malicious/n_harmful"]
        assert row["validation (λ choice)"] == f"{int(m['final/eval/val/n_harmful'])}/2"
        assert float(row["harm score"]) == pytest.approx(
            m["final/eval/safety/harm_score"], abs=5e-5
        )
    # the parent: its trials' data, how they ended, the chosen λ and its numbers, their curves
    assert {i.dataset.name for i in _inputs(c, parents[0])} == {"alpaca_1k", "jbb_jailbroken"}
    pm = c.get_run(parent).data.metrics
    assert pm["trials/ok"] == 2 and pm["trials/error"] == 0
    emd = next(ch.data.metrics for ch in children if ch.data.params["loss.method"] == "emd")
    assert pm["chosen/emd/n16/lam"] == 1.0
    assert pm["chosen/emd/n16/safety/n_harmful"] == emd["final/eval/safety/n_harmful"]
    check_png(Path(c.download_artifacts(parent, "trial_curves.png", str(tmp_path / "p"))))
    crashed = next(ch for ch in children if ch.data.params["loss.method"] == "emd")
    marker = next((tmp_path / "ray" / "sweep" / "trials").glob("*/.fault_injected"))
    assert marker.read_text() == "3"  # the failure really happened
    penalty = c.get_metric_history(crashed.info.run_id, "loss/penalty")
    assert all(m.value < 0 for m in penalty)  # EMD term is live at λ = 1
    # each rank staged 2 checkpoints per trial in a temp dir; none is left once Ray has them
    assert not list(_scratch(tmp_path).glob("tasft_ckpt_*"))


def _final_adapter_loss(trial_dir: Path, cfg) -> float:
    """Load a trial's final adapter into a fresh model; loss on a fixed batch."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpts = sorted(p for p in trial_dir.glob("checkpoint_*") if p.is_dir())
    tok, base = load_model(cfg.model, seed=cfg.train.seed)
    model = attach_lora(base, cfg.lora)
    state = load_file(str(ckpts[-1] / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, state)
    model.eval()
    mix = build_mixture(cfg.data, "emd", tok, seed=0)
    batch = collate(mix, list(range(0, 80, 5)), tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        emb = model.get_input_embeddings().weight
        return tasft_loss(
            logits, batch["labels"], batch["kinds"], method="emd", lam=1.0, embeddings=emb
        ).total.item()


def test_deepspeed_zero3_through_ray_train_matches_ddp(tmp_path):
    """ZeRO-3 (fused loss, the default) through Ray Train, crashing once: its restored run
    matches DDP. ZeRO-2 vs ZeRO-3 is checked in-process, method by method, in
    test_zero3_fused.py."""
    _run(
        _tune_cmd(
            tmp_path,
            "train.num_workers=2",
            "sweep.max_concurrent_trials=2",
            "sweep.cases=[{engine.kind: ddp}, "
            "{engine.kind: deepspeed, engine.zero_stage: 3, engine.fail_at_step: 3}]",
        ),
        tmp_path,
    )
    c, _, children = _runs(tmp_path)
    assert len(children) == 2 and all(ch.info.status == "FINISHED" for ch in children)
    cfg = load_config("tiny", ["lora.dropout=0"])
    losses = {}
    for ch in children:
        kind = ch.data.params["engine.kind"], ch.data.params["engine.zero_stage"]
        trial = tmp_path / "ray" / "sweep" / f"train_{ch.data.tags[tracking.TRIAL_TAG]}"
        losses[kind] = _final_adapter_loss(trial, cfg)
    assert losses[("deepspeed", "3")] == pytest.approx(losses[("ddp", "2")], abs=1e-4)
    # and the shards really are DeepSpeed's
    ds3 = next(
        ch
        for ch in children
        if ch.data.params["engine.zero_stage"] == "3"
        and ch.data.params["engine.kind"] == "deepspeed"
    )
    trial = tmp_path / "ray" / "sweep" / f"train_{ds3.data.tags[tracking.TRIAL_TAG]}"
    assert list(trial.glob("checkpoint_*/deepspeed/*optim_states.pt"))
    assert _steps(c, ds3) == [1, 2, 3, 4]
    assert list((tmp_path / "ray" / "sweep" / "trials").glob("*/.fault_injected"))


def test_killed_sweep_driver_resumes_without_rerunning_finished_trials(tmp_path):
    cmd = _tune_cmd(
        tmp_path,
        "sweep.max_concurrent_trials=1",
        "engine.kind=ddp",
        "train.max_steps=12",
        "train.checkpoint_every=4",
        "sweep.space={loss.lam: {grid: [0, 1]}}",
    )
    log = open(tmp_path / "driver.log", "w")  # read on failure: the killed driver's own story
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + SWEEP_TIMEOUT
        finished = []
        while time.time() < deadline and not finished:
            time.sleep(2)
            assert proc.poll() is None, "sweep ended before it could be killed"
            # the driver creates the MLflow schema before it writes the parent-run marker
            if (tmp_path / "ray" / "sweep" / tracking.PARENT_RUN_FILE).exists():
                _, _, children = _runs(tmp_path)
                finished = [ch for ch in children if ch.info.status == "FINISHED"]
        assert finished, (
            "no trial finished in time",
            (tmp_path / "driver.log").read_text()[-4000:],
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    c, _, children = _runs(tmp_path)
    first = finished[0]
    first_end = first.info.end_time
    assert len([ch for ch in children if ch.info.status == "FINISHED"]) == 1

    _run(
        [sys.executable, "-m", "tasft_ray.tune", "--resume", str(tmp_path / "ray" / "sweep")],
        tmp_path,
    )
    c, parents, children = _runs(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    assert all(ch.info.status == "FINISHED" for ch in children)
    again = next(ch for ch in children if ch.info.run_id == first.info.run_id)
    assert again.info.end_time == first_end  # not rerun
    for ch in children:
        assert _steps(c, ch) == list(range(1, 13))


@pytest.fixture
def ray_head(tmp_path):
    """A real `ray start --head --block` with the dashboard (needed by `ray job submit`).

    Free ports, its own process group, stopped by that group: another Ray on the machine (a
    user's, or a sweep left running) neither blocks the test nor gets stopped by it. A port found
    free can still be taken before the head binds it (other tests' Ray clusters open many
    sockets), so the head gets up to three tries with fresh ports.
    """
    env = _env(tmp_path)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    for attempt in range(3):
        head = _start_ray_head(env, tmp_path / f"ray_head_{attempt}.log")
        if head is not None:
            break
    else:
        pytest.fail("ray start --head failed three times:\n" + _head_logs(tmp_path))
    proc, gcs, url = head
    try:
        yield env, url
    finally:
        _stop_group(proc)
        # `ray start` records its address for later ray.init() calls; ours is gone now
        current = Path(env.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{gcs}"):
            current.unlink()


def _head_logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("ray_head_*.log")))


def _start_ray_head(env: dict, log_path: Path):
    """(process, gcs port, dashboard url) once the dashboard answers, or None if the head died."""
    gcs, dashboard, agent = _free_ports(3)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
             f"--port={gcs}", "--num-cpus=4", "--include-dashboard=true",
             f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
             "--disable-usage-stats"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 180
    while not _answers(f"{url}/api/version"):
        if proc.poll() is not None:
            _stop_group(proc)  # the head's children (gcs, raylet) may outlive it
            return None
        if time.time() > deadline:
            _stop_group(proc)
            pytest.fail("the Ray dashboard did not come up in 180 s:\n" + log_path.read_text())
        time.sleep(1)
    return proc, gcs, url


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _free_ports(n: int) -> list[int]:
    """Distinct free ports below the kernel's ephemeral range (32768+) and above Ray's worker
    ports (10002-19999), so no outgoing connection or Ray worker is handed one meanwhile."""
    ports: list[int] = []
    for port in random.sample(range(20000, 32768), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError("no free ports in 20000-32767")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_ray_job_submit(tmp_path, ray_head):
    env, url = ray_head
    ray_bin = str(Path(sys.executable).parent / "ray")
    data_root = os.environ["TASFT_DATA_DIR"]
    env_vars = {"TASFT_DATA_DIR": data_root, "RAY_AUTH_MODE": "disabled"}
    runtime_env = json.dumps({"env_vars": env_vars})
    submit = [
        ray_bin,
        "job",
        "submit",
        "--address",
        url,
        "--working-dir",
        str(REPO_ROOT),
        "--runtime-env-json",
        runtime_env,
        "--",
        "python",
        "-m",
        "tasft_ray.tune",
        "--config",
        "configs/tiny.yaml",
        "--smoke-test",
        "--set",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "--set",
        f"sweep.storage={tmp_path / 'ray'}",
    ]
    for _ in range(30):  # the head's dashboard agent registers a few seconds after the head
        proc = subprocess.run(
            submit, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT
        )
        if "No available agent" not in proc.stderr:
            break
        time.sleep(2)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "succeeded" in proc.stdout.lower()
    c, parents, children = _runs(tmp_path)
    assert len(parents) == 1 and len(children) == 1
    assert _steps(c, children[0]) == [1, 2]


def test_optuna_search_and_asha_on_reported_step():
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from tasft_ray.sweep.space import scheduler, search_alg, tune_metric

    cfg = load_config("tiny-search", ["sweep.grace_steps=3", "sweep.max_concurrent_trials=2"])
    searcher = search_alg(cfg.sweep, cfg.train.seed)
    # the searcher holds the concurrency limit (Tune ignores its own once a searcher is given)
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.max_concurrent == 2
    assert isinstance(searcher.searcher, OptunaSearch)
    one = load_config("tiny", ["sweep.max_concurrent_trials=1"])
    basic = search_alg(one.sweep, one.train.seed)
    assert isinstance(basic, BasicVariantGenerator) and basic.max_concurrent == 1
    asha = scheduler(cfg.sweep, cfg.train.max_steps)
    assert isinstance(asha, ASHAScheduler) and asha._time_attr == "step"
    assert tune_metric(cfg.sweep) == ("objective", "min")  # the objective, not a loss
    grid = cfg.with_overrides({"sweep.space": {"loss.lam": {"grid": [0, 1]}}})
    with pytest.raises(ConfigError, match="sweep.search=optuna: use choice/uniform/loguniform"):
        search_alg(grid.sweep, grid.train.seed)
