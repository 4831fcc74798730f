"""Sweeps on a multi-node Ray cluster with no shared filesystem (issue 20), proven on this box.

The session's cluster of four raylets (a head and three worker nodes, one CPU each), its
S3-compatible object store served over HTTP by a real `moto_server` process and its real
`mlflow server` (conftest: ``cluster``, ``s3``, ``mlflow_url``) serve every test of this file.
The worker nodes start with no data root and an empty cache, so a worker that tried to read
data would fail; the sweep drivers run as the real CLI (`python -m tasft_ray.tune`) in
subprocesses that join the cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    AWS,
    BUCKET,
    SERVER_ENV,
    TUNE_ERROR,
    FaultyS3,
    adapter_loss,
    cli_env,
    free_ports,
    metric_steps,
    sqlite_uri,
    start_group,
    stop_group,
    sweep_runs,
    wait_http,
)

from tasft_ray.config import REPO_ROOT

TIMEOUT = 900


def _env(tmp_path: Path, cluster, s3: str, mlflow_url: str, data: Path | None) -> dict:
    c, _ = cluster
    env = cli_env(tmp_path, c.address, AWS_ENDPOINT_URL=s3, MLFLOW_TRACKING_URI=mlflow_url, **AWS)
    env.pop("TASFT_DATA_DIR", None)
    if data is not None:
        env["TASFT_DATA_DIR"] = str(data)
    return env


def _sweep_cmd(name: str, *sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "tasft_ray.tune", "--config", "tiny"]
    for s in (
        f"sweep.storage=s3://{BUCKET}/sweeps",
        f"sweep.name={name}",
        "train.num_workers=2",
        "train.placement=strict_spread",
        "engine.kind=ddp",
        "lora.dropout=0",
        *sets,
    ):
        cmd += ["--set", s]
    return cmd


def _data_copy(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(Path(os.environ["TASFT_DATA_DIR"]), data)
    return data


def _children(mlflow_url: str, sweep_name: str):
    c, (parent,), kids = sweep_runs(mlflow_url, sweep_name)
    return c, parent, kids


def _adapter_loss(c, run, tmp_path: Path) -> float:
    """The trial's logged adapter on fixed rows of the tiny mixture."""
    local = c.download_artifacts(run.info.run_id, "adapter", str(tmp_path / run.info.run_id))
    return adapter_loss(Path(local))


def _node_of(cluster, node_id: str):
    _, workers = cluster
    return next((n for n in workers if n.node_id == node_id), None)


# ----------------------------------------------------------------------------- the main path


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` this module stops and starts again (the session's, conftest
    ``mlflow_url``, serves other tests and must stay up): same port, same store."""
    folder = tmp_path_factory.mktemp("mlflow_outage")
    (port,) = free_ports(1)
    server = RestartableServer(folder, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RestartableServer:
    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self) -> None:
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
               f"sqlite:///{self.folder / 'mlflow.db'}", "--artifacts-destination",
               str(self.folder / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]  # fmt: skip
        log = self.folder / f"server_{time.time_ns()}.log"
        self.proc = start_group(cmd, log, env=SERVER_ENV)
        wait_http(f"{self.url}/health", self.proc, log)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)


def test_sweep_across_nodes_survives_losing_one_and_a_tracking_outage(
    tmp_path, cluster, s3, tracking_server
):
    """Two ranks on different nodes; data prepared by the driver, then its data root moved away;
    a worker node removed mid-trial: the trial restores from its checkpoint in the object store
    on the nodes left and ends with the adapter of an uninterrupted run. Later the tracking
    server is stopped for 31 s and started again: training goes on meanwhile (rank 0 holds its
    rows, tasft_ray.outbox), every train and validation step is logged exactly once."""
    data = _data_copy(tmp_path)
    url = tracking_server.url
    sets = ["train.max_steps=20", "train.checkpoint_every=4", "engine.max_failures=2",
            "eval.in_sweep=true", "eval.max_prompts=1", "eval.quality_limit=2",
            "eval.sampling.max_new_tokens=4", "generate.batch_size=8",
            "eval.validation.every=4", "eval.validation.benchmarks=[advbench]",
            "eval.validation.max_prompts=2", "eval.validation.safe=1",
            "eval.validation.quality_limit=1", "tracking.system_metrics_every=2"]  # fmt: skip
    log = tmp_path / "driver.log"
    env = _env(tmp_path, cluster, s3, url, data)
    proc = start_group(_sweep_cmd("faulty", *sets), log, env)
    removed, outage = None, None
    try:
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and data.exists():  # the driver prepares, then we move it
            assert proc.poll() is None, log.read_text()[-4000:]
            if "data prepared for" in log.read_text():
                data.rename(tmp_path / "data_gone")
            time.sleep(0.2)
        while time.time() < deadline and outage is None:
            assert proc.poll() is None, log.read_text()[-4000:]
            time.sleep(0.3)
            try:
                c, _, kids = _children(url, "faulty")
            except (AssertionError, AttributeError):
                continue
            done = max(metric_steps(c, kids[0]) or [0]) if kids else 0
            if removed is None and done >= 4:  # a checkpoint is in the store
                tags = c.get_run(kids[0].info.run_id).data.tags
                nodes = tags["tasft.nodes"].split(",")
                assert len(set(nodes)) == 2  # strict_spread: the two ranks on two nodes
                # a rank's node, not the head's and not the one the trial itself runs on
                ranks = [_node_of(cluster, i) for i in nodes if i != tags["tasft.trial_node"]]
                victim = next(n for n in ranks if n is not None)
                cluster[0].remove_node(victim, allow_graceful=False)
                removed = victim.node_id
            elif removed is not None and done >= 9:  # step 12's checkpoint logged: 13-20 left
                tracking_server.stop()
                outage = time.time()
                time.sleep(31)  # the acceptance's "at least 30 s"
                assert proc.poll() is None, log.read_text()[-4000:]  # the sweep lives on
                tracking_server.start()
        assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()[-4000:]
    finally:
        stop_group(proc)
    c, parent, (kid,) = _children(url, "faulty")
    assert outage is not None
    assert parent.info.status == "FINISHED" and kid.info.status == "FINISHED"
    assert metric_steps(c, kid) == list(range(1, 21))  # every step exactly once
    assert metric_steps(c, kid, "val/harm_score") == [0, 4, 8, 12, 16, 20]
    after = kid.data.tags["tasft.nodes"].split(",")
    assert removed not in after and len(set(after)) == 2  # restored on the nodes left
    assert "final/eval/safety/n" in kid.data.metrics  # evaluated with the driver's prompts
    out = log.read_text()
    assert f"results: s3://{BUCKET}/sweeps/faulty" in out
    assert "not answering" in out and "answers again" in out  # the one line each way

    # the same training, nothing removed, no outage: the same final adapter
    got, want = _adapter_loss(c, kid, tmp_path), _two_rank_adapter_loss(tmp_path, steps=20)
    assert abs(got - want) < 1e-4, (got, want)


def _two_rank_training(rank: int, init: str, steps: int, out: str) -> None:
    import torch.distributed as dist

    from tasft_ray.config import load_config
    from tasft_ray.training.loop import TASFTTrainer

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    cfg = load_config("tiny", ["train.num_workers=2", "engine.kind=ddp", "lora.dropout=0",
                               f"train.max_steps={steps}"])  # fmt: skip
    trainer = TASFTTrainer(cfg, rank=rank, world_size=2)
    while trainer.step < trainer.total_steps:
        trainer.train_step()
    for name, data in trainer.adapter_files().items():  # rank 0's ({} on rank 1)
        (Path(out) / name).write_bytes(data)
    dist.destroy_process_group()


def _two_rank_adapter_loss(tmp_path: Path, steps: int) -> float:
    """The undisturbed run: the trial's training on two real gloo ranks. Two ranks need two
    processes, spawned here: a sweep on the cluster would cost a minute of Ray start-up for the
    same numbers. (test_step_metrics.py spawns its one-step pair the same way.)"""
    import multiprocessing as mp

    out = tmp_path / "two_ranks"
    out.mkdir()
    ctx = mp.get_context("spawn")
    init = f"file://{tmp_path / 'pg'}"
    procs = [ctx.Process(target=_two_rank_training, args=(r, init, steps, str(out)))
             for r in range(2)]  # fmt: skip
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=TIMEOUT)
        assert p.exitcode == 0, p.exitcode
    return adapter_loss(out)


def _local_adapter_loss(tmp_path: Path, lam: float, steps: int) -> float:
    """The undisturbed run: the same training (one rank) in this process."""
    from tasft_ray.config import load_config
    from tasft_ray.training.local import run_training

    out = tmp_path / f"local_lam{lam:g}"
    cfg = load_config("tiny", ["lora.dropout=0", "engine.kind=ddp", f"loss.lam={lam}",
                               f"train.max_steps={steps}", "train.checkpoint_every=4",
                               f"train.output_dir={out}"])  # fmt: skip
    result = run_training(cfg, progress=False)
    return adapter_loss(Path(result.checkpoint) / "adapter")


def test_killed_driver_resumes_from_object_storage_after_a_failed_checkpoint_upload(
    tmp_path, cluster, s3, mlflow_url
):
    """The object store fails mid-upload: the second checkpoint written gets S3's 503 for all
    but its first requests, more often than its tries (sweep.storage_attempts), so the upload
    fails; the trial's worker group restarts from its last complete checkpoint — the incomplete
    one stays in the bucket and is never restored. The driver is then killed once a trial has
    finished, and --resume from s3:// finishes the other; each trial ends with the adapter of
    an undisturbed run (the same training in this process)."""
    faults = FaultyS3(s3)
    env = _env(tmp_path, cluster, faults.url, mlflow_url, _data_copy(tmp_path))
    sets = ["train.max_steps=8", "train.checkpoint_every=4", "train.num_workers=1",
            "train.placement=pack", "sweep.space={loss.lam: {grid: [0, 1]}}",
            "sweep.storage_attempts=2"]  # fmt: skip
    faults.fail_checkpoint(nth=2, after=2, failures=100_000)
    log = tmp_path / "driver.log"
    proc = start_group(_sweep_cmd("killed", *sets), log, env)
    try:
        deadline, first = time.time() + TIMEOUT, None
        while time.time() < deadline and first is None:
            assert proc.poll() is None, log.read_text()[-4000:]
            time.sleep(1)
            try:
                c, _, kids = _children(mlflow_url, "killed")
            except (AssertionError, AttributeError):
                continue
            first = next((k for k in kids if k.info.status == "FINISHED"), None)
        assert first is not None, log.read_text()[-4000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "tasft_ray.tune", "--resume", f"s3://{BUCKET}/sweeps/killed"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    c, parent, kids = _children(mlflow_url, "killed")
    assert parent.info.status == "FINISHED" and len(kids) == 2
    again = next(k for k in kids if k.info.run_id == first.info.run_id)
    assert again.info.end_time == first.info.end_time  # the finished trial was not rerun
    for k in kids:
        assert k.info.status == "FINISHED" and metric_steps(c, k) == list(range(1, 9))
    # the upload really failed, and what it left is incomplete: some files, not all
    assert faults.failed > 0 and len(faults.folders) >= 3  # the restarted group wrote anew
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3, access_key="test", secret_key="test",
                           region="us-east-1")  # fmt: skip
    sweep_files = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/sweeps/killed", recursive=True))
    by_folder: dict[str, set[str]] = {}
    for info in sweep_files:
        parts = info.path.split("/")
        folder = next((p for p in parts if p.startswith("checkpoint_")), None)
        if folder and info.type == pafs.FileType.File:
            rest = "/".join(parts[parts.index(folder) + 1 :])
            by_folder.setdefault(folder, set()).add(rest)
    cut = by_folder.get(faults.folders[1], set())
    complete = by_folder[faults.folders[0]]
    assert cut < complete, (cut, complete)
    for k in kids:  # each ends where an undisturbed run of its λ does
        lam = float(k.data.params["loss.lam"])
        got = _adapter_loss(c, k, tmp_path)
        assert abs(got - _local_adapter_loss(tmp_path, lam, 8)) < 1e-4, (lam, got)
    faults.close()


def test_unreachable_object_store_is_one_line(tmp_path, cli_main, monkeypatch):
    """Checked before Ray starts: no cluster needed to see it."""
    for key, value in {**AWS, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(key, value)
    args = [*_sweep_cmd("nowhere")[3:], "--set", f"tracking.uri={sqlite_uri(tmp_path)}"]
    line = cli_main("tune", *args, prefix=TUNE_ERROR)
    assert line.startswith(f"sweep.storage s3://{BUCKET}/sweeps: cannot write there")


def test_doctor_checks_every_node(tmp_path, cluster, s3, mlflow_url):
    env = _env(tmp_path, cluster, s3, mlflow_url, None)
    cmd = [sys.executable, "-m", "tasft_ray", "doctor", "--config", "tiny",
           "--set", f"sweep.storage=s3://{BUCKET}/sweeps"]  # fmt: skip
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    nodes = [x for x in ok.stdout.splitlines() if x.startswith("node ")]
    assert len(nodes) >= 3 and "0 problem(s)" in ok.stdout
    bad = subprocess.run([*cmd, "--set", "tracking.uri=http://127.0.0.1:9"], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2
    problems = [x for x in bad.stderr.splitlines() if "problem:" in x]
    assert len(problems) == len(nodes) and all("tracking.uri http://127.0.0.1:9" in p
                                               for p in problems)  # fmt: skip


def _submit(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    """`ray job submit`, again while the head's dashboard agent is still registering."""
    deadline = time.time() + 240
    while True:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)  # fmt: skip
        if "No available agent" not in proc.stdout + proc.stderr or time.time() > deadline:
            return proc
        time.sleep(3)


def test_ray_job_submit_to_the_cluster_head(tmp_path, cluster, s3, mlflow_url):
    """As the README says: `ray job submit --working-dir .` against the head; results land in
    the object store and the tracking server, not in Ray's temporary copy of the folder."""
    c, _ = cluster
    dashboard = f"http://{c.head_node.address_info['webui_url']}"
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    runtime = {"env_vars": {"AWS_ENDPOINT_URL": s3, "MLFLOW_TRACKING_URI": mlflow_url,
                            "TASFT_DATA_DIR": os.environ["TASFT_DATA_DIR"], **AWS}}  # fmt: skip
    submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", dashboard,
              "--working-dir", ".", "--runtime-env-json", json.dumps(runtime), "--"]  # fmt: skip
    job = _sweep_cmd("submitted", "train.max_steps=2", "train.num_workers=1",
                     "train.placement=pack")[1:]  # fmt: skip
    job[job.index("tiny")] = "configs/tiny.yaml"
    # Ray's job supervisor hands its entrypoint the address this machine's Ray last recorded
    # (/tmp/ray/ray_current_cluster, "auto"), which the session heads' `ray start` also write:
    # one started after this cluster (the other xdist worker's) took the job's trials, which
    # then could not fetch the job's working dir. Name this cluster's head there again. (One
    # Ray per machine, as on a real cluster, never meets it.)
    Path("/tmp/ray/ray_current_cluster").write_text(c.head_node.gcs_address)
    proc = _submit([*submit, "python", *job], env)
    assert proc.returncode == 0, (proc.stdout[-6000:], proc.stderr[-3000:])
    assert f"results: s3://{BUCKET}/sweeps/submitted" in proc.stdout
    client, parent, kids = _children(mlflow_url, "submitted")
    assert parent.info.status == "FINISHED" and [k.info.status for k in kids] == ["FINISHED"]

    # without storage and tracking set, the same job stops with one line instead of writing
    # into the working-dir copy that vanishes with the session
    bare = {"env_vars": {"TASFT_DATA_DIR": os.environ["TASFT_DATA_DIR"]}}
    submit[submit.index("--runtime-env-json") + 1] = json.dumps(bare)
    proc = _submit([*submit, "python", "-m", "tasft_ray.tune", "--config", "configs/tiny.yaml",
                    "--smoke-test"], env)  # fmt: skip
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "would be written into Ray's temporary copy of the working directory" in out
