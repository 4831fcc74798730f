"""Every failure one clear line, nothing lost, nothing left RUNNING (issue 19).

Checks that fail before any work call the CLI in this process (conftest ``cli_main``); one
subprocess per entry point keeps the promise that a user's terminal shows no traceback; the
ones that need Ray run the real CLI in a subprocess on the session's Ray head, on the tiny model.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    TUNE_ERROR,
    cli_env,
    one_line,
    run_cli,
    sets,
    sqlite_uri,
    sweep_runs,
    tune_args,
)

from tasft_ray import tracking
from tasft_ray.errors import UserError, find_user_error
from tasft_ray.files import LOCK_FILE, output_lock


def _train_args(out: Path, *overrides: str) -> list[str]:
    return ["train", "--config", "tiny", "--set", f"train.output_dir={out}", *sets(*overrides)]


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
    # an ExceptionGroup keeps no __dict__ (vars() raises): a trial whose actor never started
    # once ended a sweep in a TypeError traceback instead of its error line
    exception_group = builtins.ExceptionGroup  # Python 3.11+, where Ray's wrappers meet it
    assert find_user_error(exception_group("trial", [RuntimeError("no"), group])) is inner
    assert find_user_error(exception_group("trial", [RuntimeError("runtime env")])) is None


def test_user_error_raised_inside_a_ray_actor_is_one_line(tmp_path, head_env):
    """The judge fails inside the Ray Data actor that holds it (an unreachable endpoint). The
    subprocess of the `python -m tasft_ray` entry point: what a user's terminal shows."""
    proc = run_cli(
        ["tasft_ray", "generate", "--config", "tiny", *sets(
            "generate.prompts=[{name: harmfulq}]", "generate.max_prompts=2",
            "generate.sampling.max_new_tokens=4", "generate.judge=openai-moderation",
            "generate.judge_options={base_url: 'http://127.0.0.1:9/v1', max_retries: 0}",
            f"generate.output={tmp_path / 'gen.jsonl'}", f"tracking.uri={sqlite_uri(tmp_path)}")],
        tmp_path, dict(head_env, OPENAI_API_KEY="sk-test-not-a-real-key"), timeout=600,
    )  # fmt: skip
    line = one_line(proc)
    assert line.startswith("openai-moderation: cannot reach http://127.0.0.1:9/v1")
    assert "sk-test" not in proc.stderr + proc.stdout


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


def test_ray_workers_find_their_own_cluster_beside_another_ray_instance(tmp_path, ray_head):
    """With a second Ray instance on the machine (the session's head here; another sweep, a CI
    worker elsewhere), Ray's state API inside a worker cannot guess which one it belongs to;
    Ray Train's placement-group cleaner then dies, and a trial that Tune stops early keeps its
    workers' CPUs for good. A local cluster of its own: the case is one `init_ray` starts."""
    env = cli_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", WORKER_LOOKUP], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "state ALIVE" in proc.stdout


def test_bad_judges_and_adapters_are_one_line_before_any_work(tmp_path, cli_main):
    line = cli_main("generate", "--config", "tiny", "--set", "generate.judge=x")
    assert line.startswith("override 'generate.judge=x': generate.judge: Input should be")
    line = cli_main("evaluate", "--config", "tiny", "--set", "eval.judge=openai-moderation")
    assert line == (
        "eval.judge: openai-moderation judge needs the OPENAI_API_KEY environment variable"
    )
    not_adapter = tmp_path / "not_adapter"
    not_adapter.mkdir()
    line = cli_main("evaluate", "--config", "tiny", "--adapter", str(not_adapter))
    assert line.startswith(f"eval.adapter: {not_adapter} is not a LoRA adapter")
    line = cli_main("evaluate", "--config", "tiny", "--adapter", str(tmp_path / "none"))
    assert line == f"eval.adapter: no such folder {tmp_path / 'none'}"
    line = cli_main("generate", "--config", "tiny", "--set", "generate.adapter=/no/such/adapter")
    assert line == "generate.adapter: no such folder /no/such/adapter"
    uri = sqlite_uri(tmp_path)
    line = cli_main("evaluate", "--config", "tiny", "--adapter", "mlflow:0123abcd",
                    "--set", f"tracking.uri={uri}")  # fmt: skip
    assert line == f"eval.adapter: mlflow:0123abcd: no such MLflow run at {uri}"
    import ray

    assert not ray.is_initialized()  # no Ray was started, no model loaded
    assert not (tmp_path / "runs").exists()


def test_bad_sweep_value_is_one_line_and_writes_nothing(tmp_path):
    """The subprocess of the `python -m tasft_ray.tune` entry point; fails before Ray starts."""
    proc = run_cli(tune_args(tmp_path, "sweep.space={loss.lam: {grid: [1.0, -1.0]}}"), tmp_path,
                   cli_env(tmp_path), timeout=300)  # fmt: skip
    line = one_line(proc, TUNE_ERROR)
    assert line == (
        "sweep trial with loss.lam=-1.0: loss.lam: Input should be greater than or equal to 0 "
        "(got -1.0)"
    )
    assert "--resume" not in proc.stderr
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_bad_data_of_a_trial_fails_before_ray_starts(tmp_path, cli_main):
    """The driver prepares every trial's data before it starts Ray or writes anything."""
    line = cli_main("tune", *tune_args(tmp_path, "sweep.cases=[{data.toxic_count: 100000}]")[1:],
                    prefix=TUNE_ERROR)  # fmt: skip
    assert line == (
        "data.toxic_count=100000 but data.harmful (name 'jbb_jailbroken') has only 750 usable pairs"
    )
    import ray

    assert not ray.is_initialized()
    assert not (tmp_path / "ray" / "sweep").exists()  # no sweep folder, no MLflow run
    c = tracking.client(sqlite_uri(tmp_path))
    assert not c.search_runs([e.experiment_id for e in c.search_experiments()])


def test_trial_failing_in_its_train_worker_is_one_line_per_trial(tmp_path, head_env):
    """A user error only the Train worker can see (the model lacks the LoRA target modules):
    unwrapped from Tune and Train, exit 2, and no advice to resume what cannot succeed."""
    proc = run_cli(
        tune_args(tmp_path, "sweep.cases=[{lora.target_modules: [nosuch_proj]}]",
                  "engine.max_failures=0"),
        tmp_path, head_env,
    )  # fmt: skip
    line = one_line(proc, TUNE_ERROR)
    assert line.startswith("trial run_trial_") and "--resume" not in proc.stderr
    assert "lora.target_modules: ['nosuch_proj'] not in the model" in line
    _, parents, children = sweep_runs(sqlite_uri(tmp_path))
    assert [p.info.status for p in parents] == ["FAILED"]
    assert [c.info.status for c in children] == ["FAILED"]


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


def test_one_writer_per_output(tmp_path, cli_main):
    out = tmp_path / "train"
    holder = _hold(out / LOCK_FILE)
    try:
        line = cli_main(*_train_args(out))
        assert line.startswith(
            f"train.output_dir {out} is in use by pid {holder.pid} on {socket.gethostname()}"
        )
        gen_out = tmp_path / "gen.jsonl"
        with output_lock(tmp_path / f".{gen_out.name}.lock", "k", "w"):
            line = cli_main("generate", "--config", "tiny", "--set", f"generate.output={gen_out}")
            assert line.startswith(f"generate.output {gen_out} is in use by pid {os.getpid()}")
    finally:
        holder.kill()
        holder.wait()
    assert not list(out.glob("checkpoints/*")) and not (out / "metrics.jsonl").exists()
    # the holder is gone: its lock is stale and the next run takes it over
    cli_main.ok(*_train_args(out, "train.max_steps=4"))
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and not (out / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- checks up front


def test_unreachable_tracking_and_unwritable_outputs_fail_before_work(tmp_path, cli_main):
    dead = "tracking.uri=http://127.0.0.1:9"
    for args in (
        ["generate", "--config", "tiny", "--set", dead],
        ["evaluate", "--config", "tiny", "--set", dead],
    ):
        start = time.perf_counter()
        assert "MLflow server unreachable" in cli_main(*args)
        assert time.perf_counter() - start < 60
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    line = cli_main("generate", "--config", "tiny", "--set", f"generate.output={a_file}/o.jsonl",
                    "--set", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}")  # fmt: skip
    assert line == f"generate.output {a_file}/o.jsonl: {a_file} is a file, so nothing can be " \
        "created below it"  # fmt: skip
    line = cli_main(*_train_args(a_file / "out"))
    assert line.startswith(f"train.output_dir {a_file}/out: {a_file} is a file")
    line = cli_main("report", "--experiment", "x", "--set", f"tracking.uri=sqlite:///{a_file}/m.db")
    assert line.startswith(f"tracking.uri {a_file}/m.db: {a_file} is a file")
    line = cli_main("report", "--experiment", "x", "--set", "tracking.uri=foo://bar")
    assert line.startswith("tracking.uri foo://bar: cannot open this MLflow store")


def test_overwrite_keeps_the_old_dataset_until_the_new_one_is_complete(tmp_path, head_env):
    out = tmp_path / "gen.jsonl"
    out.write_text('{"old": true}\n')
    proc = run_cli(
        ["tasft_ray", "generate", "--config", "tiny", "--overwrite", *sets(
            "generate.prompts=[{name: harmfulq}]", "generate.max_prompts=6",
            "generate.sampling.max_new_tokens=4", "testing.fail_after_rows=3",
            "generate.flush_every=1", f"generate.output={out}",
            f"tracking.uri={sqlite_uri(tmp_path)}")],
        tmp_path, head_env, timeout=600,
    )  # fmt: skip
    assert "testing.fail_after_rows: stopped after 3 rows" in one_line(proc)
    assert out.read_text() == '{"old": true}\n'  # untouched: the new one never completed


# ----------------------------------------------------------------------------- smaller items


def test_zero_means_zero_and_a_penalty_needs_harmful_rows(tmp_path, cli_main):
    line = cli_main("evaluate", "--config", "tiny", "--limit", "0")
    assert line.startswith("override 'eval.max_prompts=0': eval.max_prompts: Input should be")
    line = cli_main("generate", "--config", "tiny", "--target", "0")
    assert line.startswith("override 'generate.target=0': generate.target: Input should be")
    line = cli_main(*_train_args(tmp_path / "t", "data.toxic_count=0"))
    assert line.endswith(
        "loss.method=emd needs safety-related pairs but data.toxic_count is 0; set "
        "data.toxic_count >= 1, or loss.method=sft"
    )
    line = cli_main("config", "--config", "tiny", "--set", "foo.bar=1")
    assert line == "override 'foo.bar=1': foo: unknown key"


def test_console_script_prints_one_line_without_a_traceback(tmp_path):
    """The installed `tasft-ray` entry point, as a user's shell runs it."""
    proc = subprocess.run([str(Path(sys.executable).parent / "tasft-ray"), "config", "--set",
                           "loss.lam=-1"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert one_line(proc).startswith("override 'loss.lam=-1': loss.lam: Input should be")


def test_resume_errors_finished_runs_and_checkpoint_modes(tmp_path, cli_main):
    out = tmp_path / "run"
    cli_main.ok(*_train_args(out, "train.max_steps=4", "train.checkpoint_every=2"))
    ckpt = out / "checkpoints" / "step_000004"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o777 & ~umask  # shared like any other folder

    line = cli_main(*_train_args(out), "--resume", str(tmp_path / "nope"))
    assert line.startswith(f"--resume {tmp_path / 'nope'}: not a checkpoint folder")
    line = cli_main(*_train_args(out, "train.max_steps=6", "lora.r=4"), "--resume", str(ckpt))
    assert line.startswith(f"{ckpt}: its adapter does not fit this model and lora settings")

    done = cli_main.ok(*_train_args(out, "train.max_steps=4"), "--resume")
    loss = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["loss/total"]
    assert done.strip().splitlines()[-1] == (
        f"already finished at step 4; final loss {loss:.4f}; checkpoint {ckpt}"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_stops_tune_like_ctrl_c(sig):
    """The driver's SIGTERM becomes Tune's SIGINT: the sweep stops and returns, not dies. Its
    own interpreter: the test sends the signal to the process it runs in."""
    code = (
        "import os, signal, time\n"
        "from tasft_ray.sweep.interrupt import sigterm_stops_tune\n"
        "got = []\n"
        "signal.signal(signal.SIGINT, lambda *a: got.append('int'))\n"
        "with sigterm_stops_tune():\n"
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
