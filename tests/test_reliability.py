"""Every failure one clear line, nothing lost, nothing left RUNNING (issue 19).

Each test runs the real CLI as a user would and checks the exit code, the single line it
prints, the MLflow run states and the files left behind. The ones that need Ray start it from
the CLI itself (its own local cluster), on the tiny model.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_tune import SWEEP_TIMEOUT, _env, _runs, _tune_cmd

from tasft_ray import tracking
from tasft_ray.errors import UserError, find_user_error
from tasft_ray.files import LOCK_FILE, output_lock
from tasft_ray.sweep.driver import SWEEP_CONFIG


def _cli(tmp_path: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(_env(tmp_path), OPENAI_API_KEY="")
    return subprocess.run(
        [sys.executable, "-m", "tasft_ray", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# A line a Ray worker printed, forwarded to the driver's stderr: "(pid=N) ..." or
# "(MapWorker(...) pid=N) ...", possibly coloured
RAY_WORKER_LINE = re.compile(r"^(\x1b\[\d+m)?\(\S*?\s?pid=\d+\)")


def _one_line(proc: subprocess.CompletedProcess, prefix: str = "tasft-ray: error: ") -> str:
    """The command failed for bad input: exit code 2 and a single error line; no traceback
    through our code anywhere, the driver's or a Ray worker's (Ray's own internals may log
    theirs: several local clusters on one machine make its placement-group cleaner complain,
    and a Ray worker still starting when the driver exits may report its own abort)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert not re.search(r'File ".*/tasft_ray/', proc.stderr), proc.stderr[-3000:]
    assert not re.search(r"tasft_ray\.[\w.]+Error: ", proc.stderr), proc.stderr[-3000:]
    ours = [line for line in proc.stderr.splitlines() if not RAY_WORKER_LINE.match(line)]
    errors = [line for line in ours if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(prefix), proc.stderr[-3000:]
    return errors[0].removeprefix(prefix)


def _train_args(out: Path, *sets: str) -> list[str]:
    args = ["train", "--config", "tiny", "--set", f"train.output_dir={out}"]
    for s in sets:
        args += ["--set", s]
    return args


# ----------------------------------------------------------------------------- errors from Ray


class _Wrapper(Exception):
    """Stands for Ray's wrappers: the shapes find_user_error must see through."""


def test_find_user_error_sees_through_every_wrapper_shape():
    inner = UserError("data.toxic_count=9 but data.harmful has only 3 usable pairs")
    task = _Wrapper("Traceback (most recent call last): ...")
    task.cause = inner  # RayTaskError
    group = _Wrapper("Training failed")
    group.worker_failures = {1: RuntimeError("other rank"), 0: task}  # WorkerGroupError
    controller = _Wrapper("controller")
    controller.controller_failure = group  # ControllerError
    try:
        raise _Wrapper("trial errored") from controller  # Tune's chaining
    except _Wrapper as exc:
        assert find_user_error(exc) is inner
    assert find_user_error(RuntimeError("a bug")) is None


def test_user_error_raised_inside_a_ray_actor_is_one_line(tmp_path):
    """The judge fails inside the Ray Data actor that holds it (an unreachable endpoint)."""
    proc = subprocess.run(
        [sys.executable, "-m", "tasft_ray", "generate", "--config", "tiny",
         "--set", "generate.prompts=[{name: harmfulq}]", "--set", "generate.max_prompts=2",
         "--set", "generate.sampling.max_new_tokens=4", "--set", "generate.judge=openai-moderation",
         "--set", "generate.judge_options={base_url: 'http://127.0.0.1:9/v1', max_retries: 0}",
         "--set", f"generate.output={tmp_path / 'gen.jsonl'}",
         "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path, env=dict(_env(tmp_path), OPENAI_API_KEY="sk-test-not-a-real-key"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    line = _one_line(proc)
    assert line.startswith("openai-moderation: cannot reach http://127.0.0.1:9/v1")
    assert "sk-test" not in proc.stderr + proc.stdout


OTHER_RAY = """
import ray, time
ray.init(address="local", num_cpus=1, include_dashboard=False)
print("up", flush=True)
time.sleep(600)
"""

WORKER_LOOKUP = """
import os, ray
from tasft_ray.cluster import init_ray
from tasft_ray.config import load_config

init_ray(load_config("tiny"))

@ray.remote
class Probe:
    def ping(self):
        return 1

@ray.remote
def look_up(actor_id):  # what Ray Train's placement-group cleaner does from its actor
    from ray.util.state import get_actor
    return os.environ.get("RAY_ADDRESS"), get_actor(actor_id).state

probe = Probe.remote()
ray.get(probe.ping.remote())
address, state = ray.get(look_up.remote(probe._actor_id.hex()))
assert address == ray.get_runtime_context().gcs_address, address
print("state", state)
"""


def test_ray_workers_find_their_own_cluster_beside_another_ray_instance(tmp_path):
    """With a second Ray instance on the machine (another sweep, a CI worker), Ray's state API
    inside a worker cannot guess which one it belongs to; Ray Train's placement-group cleaner
    then dies, and a trial that Tune stops early keeps its workers' CPUs for good."""
    env = _env(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", OTHER_RAY], stdout=subprocess.PIPE, text=True,
                             env=env, cwd=tmp_path, start_new_session=True)  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "up"
        proc = subprocess.run([sys.executable, "-c", WORKER_LOOKUP], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "state ALIVE" in proc.stdout
    finally:
        os.killpg(other.pid, signal.SIGTERM)
        other.wait(timeout=60)


def test_bad_judges_and_adapters_are_one_line_before_any_work(tmp_path):
    start = time.perf_counter()
    line = _one_line(_cli(tmp_path, "generate", "--config", "tiny", "--set", "generate.judge=x"))
    assert line.startswith("override 'generate.judge=x': generate.judge: Input should be")
    line = _one_line(
        _cli(tmp_path, "evaluate", "--config", "tiny", "--set", "eval.judge=openai-moderation")
    )
    assert line == (
        "eval.judge: openai-moderation judge needs the OPENAI_API_KEY environment variable"
    )
    not_adapter = tmp_path / "not_adapter"
    not_adapter.mkdir()
    line = _one_line(_cli(tmp_path, "evaluate", "--config", "tiny", "--adapter", str(not_adapter)))
    assert line.startswith(f"eval.adapter: {not_adapter} is not a LoRA adapter")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    line = _one_line(
        _cli(
            tmp_path,
            "evaluate",
            "--config",
            "tiny",
            "--adapter",
            "mlflow:0123abcd",
            "--set",
            f"tracking.uri={uri}",
        )  # fmt: skip
    )
    assert line == f"eval.adapter: mlflow:0123abcd: no such MLflow run at {uri}"
    assert time.perf_counter() - start < 120  # no model was loaded, no Ray started
    assert not (tmp_path / "runs").exists()


def test_bad_sweep_value_is_one_line_and_writes_nothing(tmp_path):
    proc = subprocess.run(
        _tune_cmd(tmp_path, "sweep.space={loss.lam: {grid: [1.0, -1.0]}}"),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    line = _one_line(proc, "tasft-ray tune: error: ")
    assert line == (
        "sweep trial with loss.lam=-1.0: loss.lam: Input should be greater than or equal to 0 "
        "(got -1.0)"
    )
    assert "--resume" not in proc.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_trial_failing_in_its_train_worker_is_one_line_per_trial(tmp_path):
    """A user error only the Train worker can see (the model lacks the LoRA target modules):
    unwrapped from Tune and Train, exit 2, and no advice to resume what cannot succeed. Bad
    data fails in the driver, which prepares every trial's data, before any run exists."""
    proc = subprocess.run(
        _tune_cmd(tmp_path, "sweep.cases=[{lora.target_modules: [nosuch_proj]}]",
                  "engine.max_failures=0"),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip
    line = _one_line(proc, "tasft-ray tune: error: ")
    assert line.startswith("trial run_trial_") and "--resume" not in proc.stderr
    assert "lora.target_modules: ['nosuch_proj'] not in the model" in line
    _, parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["FAILED"]
    assert [c.info.status for c in children] == ["FAILED"]

    proc = subprocess.run(
        _tune_cmd(tmp_path, "sweep.name=data", "sweep.cases=[{data.toxic_count: 100000}]"),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip
    line = _one_line(proc, "tasft-ray tune: error: ")
    assert line == (
        "data.toxic_count=100000 but data.harmful (name 'jbb_jailbroken') has only 750 usable pairs"
    )
    assert not (tmp_path / "ray" / "data").exists() and len(_runs(tmp_path)[1]) == 1


# ----------------------------------------------------------------------------- interrupted sweeps


def test_ctrl_c_on_a_sweep_leaves_it_killed_and_resumable(tmp_path):
    cmd = _tune_cmd(
        tmp_path,
        "sweep.max_concurrent_trials=1",
        "engine.kind=ddp",
        "train.max_steps=12",
        "train.checkpoint_every=4",
        "sweep.space={loss.lam: {grid: [0, 1]}}",
    )
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + SWEEP_TIMEOUT
        logged = False
        while time.time() < deadline and not logged:  # a trial is training and has logged
            time.sleep(2)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            if (tmp_path / "ray" / "sweep" / tracking.PARENT_RUN_FILE).exists():
                c, _, children = _runs(tmp_path)
                logged = any(c.get_metric_history(ch.info.run_id, "loss/total") for ch in children)
        assert logged, (tmp_path / "driver.log").read_text()[-3000:]
        proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the driver
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = (tmp_path / "driver.log").read_text()
    assert code == 130, out[-3000:]
    # one trial was training, the grid's second (one at a time) was never started
    assert "interrupted with 1 trial(s) unfinished (run_trial_" in out
    assert "and 1 not started; finish them with --resume" in out
    _, parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert children and all(ch.info.status == "KILLED" for ch in children), [
        ch.info.status for ch in children
    ]

    resumed = subprocess.run(
        [sys.executable, "-m", "tasft_ray.tune", "--resume", str(tmp_path / "ray" / "sweep")],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c, parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(children) == 2 and all(ch.info.status == "FINISHED" for ch in children)
    for ch in children:
        steps = sorted(m.step for m in c.get_metric_history(ch.info.run_id, "loss/total"))
        assert steps == list(range(1, 13))


def test_sweep_killed_in_start_up_is_restartable_with_resume(tmp_path):
    proc = subprocess.Popen(_tune_cmd(tmp_path), cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    sweep = tmp_path / "ray" / "sweep"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (sweep / SWEEP_CONFIG).exists():
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # as the sweep starts
        proc.wait()
    # The driver saves its config only once the data is prepared, right before Tune starts: to
    # meet the state a kill in between leaves every time, Tune's own files go too.
    for state in {*sweep.glob("*.pkl"), *sweep.glob("experiment_state*")}:
        state.unlink()
    assert (sweep / SWEEP_CONFIG).exists()
    again = subprocess.run(_tune_cmd(tmp_path), cwd=tmp_path, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert f"pass --resume {sweep} to finish it" in _one_line(again, "tasft-ray tune: error: ")
    resumed = subprocess.run(
        [sys.executable, "-m", "tasft_ray.tune", "--resume", str(sweep)],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 1
    assert children[0].info.status == "FINISHED"


# ----------------------------------------------------------------------------- one writer


def _hold(lock: Path) -> subprocess.Popen:
    """Another process holding an output's lock (what a second run of a command would meet)."""
    code = (
        "import sys, time; from tasft_ray.files import output_lock\n"
        f"with output_lock({str(lock)!r}, 'k', 'w'):\n"
        "    print('held', flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_one_writer_per_output(tmp_path):
    out = tmp_path / "train"
    holder = _hold(out / LOCK_FILE)
    try:
        line = _one_line(_cli(tmp_path, *_train_args(out)))
        assert line.startswith(
            f"train.output_dir {out} is in use by pid {holder.pid} on {socket.gethostname()}"
        )
        gen_out = tmp_path / "gen.jsonl"
        with output_lock(tmp_path / f".{gen_out.name}.lock", "k", "w"):
            line = _one_line(_cli(tmp_path, "generate", "--config", "tiny",
                                  "--set", f"generate.output={gen_out}"))  # fmt: skip
            assert line.startswith(f"generate.output {gen_out} is in use by pid {os.getpid()}")
    finally:
        holder.kill()
        holder.wait()
    assert not list(out.glob("checkpoints/*")) and not (out / "metrics.jsonl").exists()
    # the holder is gone: its lock is stale and the next run takes it over
    ok = _cli(tmp_path, *_train_args(out, "train.max_steps=4"))
    assert ok.returncode == 0, ok.stderr[-3000:]
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and not (out / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- checks up front


def test_unreachable_tracking_and_unwritable_outputs_fail_before_work(tmp_path):
    dead = "tracking.uri=http://127.0.0.1:9"
    for args in (
        ["generate", "--config", "tiny", "--set", dead],
        ["evaluate", "--config", "tiny", "--set", dead],
    ):
        start = time.perf_counter()
        assert "MLflow server unreachable" in _one_line(_cli(tmp_path, *args))
        assert time.perf_counter() - start < 60
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    line = _one_line(
        _cli(
            tmp_path,
            "generate",
            "--config",
            "tiny",
            "--set",
            f"generate.output={a_file}/o.jsonl",
            "--set",
            f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
        )  # fmt: skip
    )
    assert line == f"generate.output {a_file}/o.jsonl: {a_file} is a file, so nothing can be " \
        "created below it"  # fmt: skip
    line = _one_line(_cli(tmp_path, *_train_args(a_file / "out")))
    assert line.startswith(f"train.output_dir {a_file}/out: {a_file} is a file")
    line = _one_line(
        _cli(
            tmp_path,
            "report",
            "--experiment",
            "x",
            "--set",
            f"tracking.uri=sqlite:///{a_file}/m.db",
        )
    )
    assert line.startswith(f"tracking.uri {a_file}/m.db: {a_file} is a file")
    line = _one_line(
        _cli(tmp_path, "report", "--experiment", "x", "--set", "tracking.uri=foo://bar")
    )
    assert line.startswith("tracking.uri foo://bar: cannot open this MLflow store")


def test_overwrite_keeps_the_old_dataset_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "gen.jsonl"
    out.write_text('{"old": true}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "tasft_ray", "generate", "--config", "tiny", "--overwrite",
         "--set", "generate.prompts=[{name: harmfulq}]", "--set", "generate.max_prompts=6",
         "--set", "generate.sampling.max_new_tokens=4", "--set", "generate.fail_after_rows=3",
         "--set", "generate.flush_every=1", "--set", f"generate.output={out}",
         "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "generate.fail_after_rows: stopped after 3 rows" in _one_line(proc)
    assert out.read_text() == '{"old": true}\n'  # untouched: the new one never completed


# ----------------------------------------------------------------------------- smaller items


def test_zero_means_zero_and_a_penalty_needs_harmful_rows(tmp_path):
    line = _one_line(_cli(tmp_path, "evaluate", "--config", "tiny", "--limit", "0"))
    assert line.startswith("override 'eval.max_prompts=0': eval.max_prompts: Input should be")
    line = _one_line(_cli(tmp_path, "generate", "--config", "tiny", "--target", "0"))
    assert line.startswith("override 'generate.target=0': generate.target: Input should be")
    line = _one_line(_cli(tmp_path, *_train_args(tmp_path / "t", "data.toxic_count=0")))
    assert line.endswith(
        "loss.method=emd needs safety-related pairs but data.toxic_count is 0; set "
        "data.toxic_count >= 1, or loss.method=sft"
    )
    line = _one_line(_cli(tmp_path, "config", "--config", "tiny", "--set", "foo.bar=1"))
    assert line == "override 'foo.bar=1': foo: unknown key"


def test_resume_errors_finished_runs_and_checkpoint_modes(tmp_path):
    out = tmp_path / "run"
    first = _cli(tmp_path, *_train_args(out, "train.max_steps=4", "train.checkpoint_every=2"))
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = out / "checkpoints" / "step_000004"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o777 & ~umask  # shared like any other folder

    line = _one_line(_cli(tmp_path, *_train_args(out), "--resume", str(tmp_path / "nope")))
    assert line.startswith(f"--resume {tmp_path / 'nope'}: not a checkpoint folder")
    line = _one_line(_cli(tmp_path, *_train_args(out, "train.max_steps=6", "lora.r=4"),
                          "--resume", str(ckpt)))  # fmt: skip
    assert line.startswith(f"{ckpt}: its adapter does not fit this model and lora settings")

    done = _cli(tmp_path, *_train_args(out, "train.max_steps=4"), "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    loss = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["loss/total"]
    assert done.stdout.strip() == (
        f"already finished at step 4; final loss {loss:.4f}; checkpoint {ckpt}"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_stops_tune_like_ctrl_c(sig):
    """The driver's SIGTERM becomes Tune's SIGINT: the sweep stops and returns, not dies."""
    code = (
        "import os, signal, time\n"
        "from tasft_ray.sweep.driver import _sigterm_stops_tune\n"
        "got = []\n"
        "signal.signal(signal.SIGINT, lambda *a: got.append('int'))\n"
        "with _sigterm_stops_tune():\n"
        f"    os.kill(os.getpid(), {int(sig)}); time.sleep(0.5)\n"
        "print(got)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "['int']", proc.stderr[-2000:]


def test_the_config_names_exactly_the_registered_judges():
    from typing import get_args

    from tasft_ray.config import JudgeName
    from tasft_ray.judges import JUDGES

    assert set(get_args(JudgeName)) == set(JUDGES)
