"""engine.cpu_malloc reaches Ray workers: a large block allocated in a worker's non-main thread
(where Ray Train runs the training loop) comes from the heap, not from a fresh mmap."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tasft_ray.cluster import init_ray
from tasft_ray.config import load_config
from tasft_ray.worker_env import MALLOC_REUSE, worker_env

BLOCK = 256 << 20
# glibc's mmap'd bytes (mallinfo2's hblkhd) while a non-main thread holds a 256 MiB tensor; run
# as source in a fresh process, since glibc reads its settings at process start
PROBE = """
import ctypes, threading
import torch

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
seen = []

def work():
    block = torch.ones(BLOCK, dtype=torch.uint8)
    seen.append(libc.mallinfo2().hblkhd)

thread = threading.Thread(target=work)
thread.start()
thread.join()
"""


def test_worker_env_selects_the_allocator():
    reuse, system = load_config("tiny"), load_config("tiny", ["engine.cpu_malloc=system"])
    assert worker_env(reuse.engine).items() >= MALLOC_REUSE.items()
    assert not set(worker_env(system.engine)) & set(MALLOC_REUSE)
    assert worker_env(system.engine)["OMP_NUM_THREADS"] == "1"


def test_the_drivers_api_keys_reach_every_worker(monkeypatch):
    """A worker on another node never saw the driver's environment (the generate actor-error
    test in test_reliability.py shows it end to end on the session's Ray head)."""
    e = load_config("tiny").engine
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert "OPENAI_API_KEY" not in worker_env(e)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert worker_env(e)["OPENAI_API_KEY"] == "sk-x"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_ray_worker_threads_allocate_large_blocks_from_the_heap(ray_head, monkeypatch):
    import ray

    # the probe can fail: without the setting the same block is mmap'd
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_REUSE}
    code = f"BLOCK = {BLOCK}\n{PROBE}\nprint(seen[0])"
    plain = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert int(plain.stdout) >= BLOCK

    def mmapped_bytes(probe: str) -> int:  # nested: Ray ships it by value, not by module
        scope = {"BLOCK": BLOCK}
        exec(probe, scope)
        return scope["seen"][0]

    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)  # a job of its own on the head
    init_ray(load_config("tiny"))
    try:
        in_worker = ray.get(ray.remote(num_cpus=1)(mmapped_bytes).remote(PROBE))
    finally:
        ray.shutdown()
    assert in_worker < BLOCK


def test_ray_train_polls_often_unless_the_user_chose(monkeypatch):
    """Each state change of a trial's worker group waits for the controller's next poll; the
    driver sets a short one before Ray Train starts and ships it to every worker."""
    from tasft_ray.worker_env import TRAIN_POLL, default_train_poll

    key, ours = TRAIN_POLL
    e = load_config("tiny").engine
    monkeypatch.delenv(key, raising=False)
    default_train_poll()
    assert os.environ[key] == ours and worker_env(e)[key] == ours
    assert float(ours) < 2.0  # Ray's default is 2 s
    monkeypatch.setenv(key, "3")
    default_train_poll()
    assert worker_env(e)[key] == "3"


def test_ray_trains_per_report_log_line_is_quieted():
    """The logger Ray Train writes each report's metrics dict to (named by its module's file)
    is the one quiet_train_reports raises to WARNING: fails if Ray moves that line."""
    import logging

    from ray.train.v2._internal.execution import context

    from tasft_ray.worker_env import quiet_train_reports

    before = context.logger.level
    try:
        quiet_train_reports()
        assert not context.logger.isEnabledFor(logging.INFO)
        assert context.logger.isEnabledFor(logging.WARNING)
    finally:
        context.logger.setLevel(before)


def test_rays_preemption_watcher_error_line_is_dropped_from_the_console():
    """Ray's C++ line about its own actor's constructor arguments is dropped by the driver's log
    filter, other lines pass: fails if Ray rewords the line or moves its filter."""
    import ray
    from ray._private import ray_logging

    from tasft_ray.worker_env import RAY_NOISE, quiet_ray_noise

    assert RAY_NOISE.encode() in Path(ray._raylet.__file__).read_bytes()
    dedup = ray_logging.stderr_deduplicator
    before = dedup.skip_re
    line = ("[2026-12-06 15:31:54,838 E 28810 28876] core_worker.cc:2465: Actor with class name: "
            "'PreemptionWatcher' and ID: 'e3d4' has constructor arguments in the object store and "
            "max_restarts > 0. If the arguments ...")  # fmt: skip
    try:
        dedup.skip_re = None
        quiet_ray_noise()
        out = dedup.deduplicate({"ip": "1", "pid": 2, "lines": [line, "training step 3"]})
        assert [x for b in out for x in b["lines"]] == ["training step 3"]
    finally:
        dedup.skip_re = before
