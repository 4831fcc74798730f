"""What the tests share: the offline data and a scratch cache, the expensive services started
once per session (per xdist worker) and the helpers every test file uses.

Services, each started on first use and stopped at the end of the session (the multi-node
ones at the end of the module that uses them: idle, four raylets would take CPU from the rest):
- ``ray_head``: a real ``ray start --head`` (dashboard on) that sweep, generate and evaluate
  subprocesses join through ``RAY_ADDRESS`` instead of each starting a local Ray;
- ``cluster``: four raylets (a head and three worker nodes, one CPU each) for the multi-node
  tests and ``s3``: a real S3-compatible server over HTTP (``moto_server``); ``mlflow_url``: a real
  ``mlflow server`` over HTTP.

Helpers run the product as users do: ``cli_main`` calls ``tasft_ray.cli.main(argv)`` in this
process (for checks that fail before any work), ``run_cli`` a real subprocess.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

os.environ.setdefault("TASFT_DATA_DIR", str((_REPO_ROOT / ".." / "shared" / "data").resolve()))
if "TASFT_CACHE_DIR" not in os.environ:  # one per session (xdist workers inherit it), then gone
    os.environ["TASFT_CACHE_DIR"] = tempfile.mkdtemp(prefix="tasft_test_cache_")
    atexit.register(shutil.rmtree, os.environ["TASFT_CACHE_DIR"], ignore_errors=True)
# The model and data hubs are unreachable from the machines the tests run on: offline mode makes
# a hub lookup fail at once (the same one-line error) instead of after a minute of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60's token auth off, locally
# A Ray head waits 60 s for its dashboard to come up, then fails: on two cores under the other
# xdist worker's load a cluster's head has missed that (CI, stop 38). Read when Ray is imported,
# so set here for every process the tests start, and on the imported module for the in-process
# multi-node cluster.
os.environ.setdefault("RAY_DASHBOARD_STARTUP_TIMEOUT_S", "300")

SWEEP_TIMEOUT = 900
ERROR = "tasft-ray: error: "
TUNE_ERROR = "tasft-ray tune: error: "
# A line a Ray worker printed, forwarded to the driver's stderr: "(pid=N) ..." or
# "(MapWorker(...) pid=N) ...", possibly coloured
RAY_WORKER_LINE = re.compile(r"^(\x1b\[\d+m)?\(\S*?\s?pid=\d+\)")


# ----------------------------------------------------------------------------- scheduling

# xdist hands whole files (--dist loadfile) to its two workers in collection order as they free
# up; the longest files first keep both busy to the end. Seconds in a fresh-clone CI run
# (2026-12-06): cluster 411, search 310, tune 180, reliability 138, contrastive 108, mlflow_ui
# 102, generate 65, zero3_fused 60, of ~1,650; test_cluster.py last had left one worker idle
# for 45 s. (xdist's own order, by number of tests, is off: --no-loadscope-reorder.)
LONGEST_FIRST = ("test_cluster.py", "test_search.py", "test_tune.py", "test_reliability.py",
                 "test_contrastive.py", "test_mlflow_ui.py", "test_generate.py",
                 "test_zero3_fused.py")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


# ----------------------------------------------------------------------------- running the CLI


def cli_env(tmp_path: Path, ray_address: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: one thread per process, token auth off, temporary
    files under ``tmp_path/tmp`` where the test can see them, and the Ray cluster to join."""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["RAY_TMPDIR"] = "/tmp"  # short socket paths
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    env["TMPDIR"] = str(short_path(scratch))
    env.pop("RAY_ADDRESS", None)
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    env.update(extra)
    return env


def short_path(folder: Path) -> Path:
    """A short link to ``folder`` in the system's temp folder. A UNIX socket's path is at most
    107 bytes, and processes make theirs in TMPDIR (the forkserver of a local Ray's dashboard:
    ``pymp-XXXXXXXX/listener-XXXXXXXX``): under pytest's numbered folders and a long test name
    that limit is met — at pytest-100 the dashboard of a test's own local Ray died with "AF_UNIX
    path too long" and ``ray.init`` waited for it until the test timed out."""
    link = Path(tempfile.gettempdir()) / f"tasft-{hashlib.sha1(bytes(folder)).hexdigest()[:12]}"
    if not (link.is_symlink() and Path(os.readlink(link)) == folder):
        link.unlink(missing_ok=True)
        link.symlink_to(folder)
        atexit.register(link.unlink, missing_ok=True)  # gone with the pytest process
    return link


def sets(*overrides: str) -> list[str]:
    """``--set`` flags for each override."""
    return [x for o in overrides for x in ("--set", o)]


def run_cli(
    args: list[str], tmp_path: Path, env: dict, timeout: int = SWEEP_TIMEOUT, ok: bool = False
) -> subprocess.CompletedProcess:
    """``python -m <args>`` in ``tmp_path`` (args[0] is the module: tasft_ray, tasft_ray.tune);
    ``ok``: assert it exits 0."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    if ok:
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    return proc


def tune_args(tmp_path: Path, *overrides: str, config: str = "tiny") -> list[str]:
    """``tasft_ray.tune`` args of a small sweep storing into ``tmp_path`` (sqlite MLflow)."""
    return ["tasft_ray.tune", "--config", config, *sets(
        f"tracking.uri={sqlite_uri(tmp_path)}", f"sweep.storage={tmp_path / 'ray'}",
        "train.max_steps=4", "train.checkpoint_every=2", "lora.dropout=0", *overrides,
    )]  # fmt: skip


def one_line(proc: subprocess.CompletedProcess, prefix: str = ERROR) -> str:
    """The command failed for bad input: exit code 2 and a single error line; no traceback
    through our code anywhere, the driver's or a Ray worker's (Ray's own internals may log
    theirs, and a Ray worker still starting when the driver exits may report its own abort)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    return _the_line(proc.stderr, prefix)


def _the_line(err: str, prefix: str) -> str:
    assert not re.search(r'File ".*/tasft_ray/', err), err[-3000:]
    assert not re.search(r"tasft_ray\.[\w.]+Error: ", err), err[-3000:]
    ours = [line for line in err.splitlines() if not RAY_WORKER_LINE.match(line)]
    errors = [line for line in ours if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(prefix), err[-3000:]
    return errors[0].removeprefix(prefix)


@pytest.fixture
def cli_main(capsys, monkeypatch, tmp_path):
    """``cli_main(*argv)`` runs ``tasft_ray.cli.main`` here, in ``tmp_path``, and returns the one
    error line of a user error (exit code 2). For checks that fail before any work: no
    interpreter or Ray to start. ``cli_main.ok(*argv)`` expects exit code 0, returns stdout."""
    from tasft_ray import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "")

    class Main:
        def __call__(self, *argv: str, prefix: str = ERROR) -> str:
            capsys.readouterr()
            code = cli.main(list(argv))
            err = capsys.readouterr().err
            assert code == 2, (code, err[-3000:])
            return _the_line(err, prefix)

        def ok(self, *argv: str) -> str:
            capsys.readouterr()
            code = cli.main(list(argv))
            out, err = capsys.readouterr()
            assert code == 0, (code, err[-3000:])
            return out

    return Main()


# ----------------------------------------------------------------------------- MLflow


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def sweep_runs(uri: str, sweep: str | None = None):
    """(client, parent runs, child runs) of the tasft-ray experiment; only the sweep named
    ``sweep`` (its one parent and that parent's children) when given."""
    from tasft_ray import tracking

    c = tracking.client(uri)
    exp = c.get_experiment_by_name("tasft-ray")
    if sweep is None:
        runs = c.search_runs([exp.experiment_id])
        parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
        return c, parents, [r for r in runs if tracking.PARENT_TAG in r.data.tags]
    parents = c.search_runs([exp.experiment_id], f"tags.`{tracking.SWEEP_TAG}` = '{sweep}'")
    assert len(parents) == 1, [p.info.run_id for p in parents]
    kids = c.search_runs(
        [exp.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{parents[0].info.run_id}'"
    )
    return c, parents, kids


def metric_steps(c, run, key: str = "loss/total") -> list[int]:
    return sorted(m.step for m in c.get_metric_history(run.info.run_id, key))


def adapter_loss(adapter_dir: Path, rows: range | list[int] = range(8)) -> float:
    """A trained tiny-model adapter's EMD loss on fixed rows of the tiny mixture: equal for
    runs that trained the same (a restored one, another engine), different otherwise."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from tasft_ray.config import load_config
    from tasft_ray.data.mixture import build_mixture, collate
    from tasft_ray.losses import tasft_loss
    from tasft_ray.models import attach_lora, load_model

    cfg = load_config("tiny", ["lora.dropout=0"])
    tok, base = load_model(cfg.model, seed=cfg.train.seed)
    model = attach_lora(base, cfg.lora)
    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    model.eval()
    batch = collate(build_mixture(cfg.data, "emd", tok, seed=0), list(rows), tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        emb = model.get_input_embeddings().weight
        parts = tasft_loss(logits, batch["labels"], batch["kinds"], method="emd", embeddings=emb)
    return float(parts.total)


# ----------------------------------------------------------------------------- files


def md_table(md: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table after ``heading``, as dicts keyed by its header cells."""
    lines = md[md.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, r, strict=True)) for r in body]


def check_png(path) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()  # raises on a truncated or non-PNG file
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200


# ----------------------------------------------------------------------------- processes


def start_group(cmd: list[str], log: Path, env: dict | None = None, cwd=None) -> subprocess.Popen:
    """A background process in its own process group (so stopping it stops its children too,
    and nothing else), its output in ``log``."""
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            cwd=cwd, start_new_session=True)  # fmt: skip


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 30) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # children that outlived the group leader
        os.killpg(proc.pid, signal.SIGKILL)


def free_ports(n: int) -> list[int]:
    """Distinct free ports below the kernel's ephemeral range (32768+) and above Ray's worker
    ports (10002-19999), so no outgoing connection or Ray worker is handed one meanwhile."""
    ports: list[int] = []
    for port in random.sample(range(20000, 32768), 400):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError("no free ports in 20000-32767")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while not answers(url):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, f"{url} did not answer: {log.read_text()[-3000:]}"
        time.sleep(0.5)


def wait_for(what, seconds: float, proc: subprocess.Popen | None = None, log: Path | None = None,
             every: float = 1.0):  # fmt: skip
    """Poll ``what()`` until it returns something true (returned), while ``proc`` runs."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None:
            assert proc.poll() is None, log.read_text()[-4000:] if log else proc.returncode
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out: {log.read_text()[-4000:] if log else what}")


# ----------------------------------------------------------------------------- services


@dataclass
class RayHead:
    address: str  # GCS address sweeps join with RAY_ADDRESS
    dashboard: str  # http://127.0.0.1:PORT (ray job submit)
    scratch: Path  # the TMPDIR of every Ray worker on this head


HEAD_CPUS = 6  # two concurrent trials of two workers each, plus their two trial drivers


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory) -> Iterator[RayHead]:
    """One real ``ray start --head --block`` per session, with the dashboard (Ray Train needs
    it to free a finished trial's CPUs, ``ray job submit`` its agent). Free ports for every
    server of the head (two sessions side by side under xdist would clash on Ray's defaults);
    a port found free can still be taken before the head binds it, hence up to three tries."""
    folder = tmp_path_factory.mktemp("ray_head")
    scratch = folder / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), RAY_TMPDIR="/tmp", OMP_NUM_THREADS="1")
    env["PATH"] = f"{BIN}:{env['PATH']}"  # the nodes' `python` is this environment's
    env.pop("RAY_ADDRESS", None)
    for attempt in range(3):
        log = folder / f"head_{attempt}.log"
        gcs, dash, agent, grpc, metrics, client, rt_env = free_ports(7)
        proc = start_group(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}",
             f"--num-cpus={HEAD_CPUS}", "--include-dashboard=true", f"--dashboard-port={dash}",
             "--dashboard-host=127.0.0.1", f"--dashboard-agent-listen-port={agent}",
             f"--dashboard-agent-grpc-port={grpc}", f"--metrics-export-port={metrics}",
             f"--ray-client-server-port={client}", f"--runtime-env-agent-port={rt_env}",
             "--object-store-memory=1000000000", "--disable-usage-stats"],
            log, env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{dash}"
        deadline = time.time() + 180
        while proc.poll() is None and not answers(f"{url}/api/version") and time.time() < deadline:
            time.sleep(1)
        if proc.poll() is None and answers(f"{url}/api/version"):
            break
        stop_group(proc)
    else:
        pytest.fail("ray start --head failed three times:\n" + log.read_text()[-3000:])
    try:
        yield RayHead(f"127.0.0.1:{gcs}", url, scratch)
    finally:  # killed, not drained: nothing of the session's is left to save
        stop_group(proc, signal.SIGKILL)
        # `ray start` records its address for later ray.init() calls; ours is gone now
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip().endswith(f":{gcs}"):
            current.unlink(missing_ok=True)


@pytest.fixture
def head_env(tmp_path, ray_head) -> dict[str, str]:
    """The environment of a CLI subprocess that runs on the session's Ray head."""
    return cli_env(tmp_path, ray_head.address)


# A tracking server without MLflow's job runner (its worker pools take ~2 GiB and are unused)
SERVER_ENV = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory) -> Iterator[str]:
    """A real ``mlflow server`` (sqlite backend, --serve-artifacts) on a free port."""
    folder = tmp_path_factory.mktemp("mlflow")
    (port,) = free_ports(1)
    cmd = [str(BIN / "mlflow"), "server",
           "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    proc = start_group(cmd, folder / "server.log", env=SERVER_ENV)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, folder / "server.log")
        yield url
    finally:
        stop_group(proc)


BUCKET = "tasft"
AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
       "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[str]:
    """A real S3-compatible server over HTTP, with the bucket the sweeps write to."""
    import pyarrow.fs as pafs

    folder = tmp_path_factory.mktemp("moto")
    (port,) = free_ports(1)
    proc = start_group([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                       folder / "moto.log")  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint, proc, folder / "moto.log", seconds=120)
        fs = pafs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test",
                               region="us-east-1", allow_bucket_creation=True)  # fmt: skip
        fs.create_dir(BUCKET)
        yield endpoint
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head and three worker nodes, each its own raylet with one CPU. Every node starts with
    no TASFT_DATA_DIR and an empty data cache: a worker that read data would fail."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    timeout = int(os.environ["RAY_DASHBOARD_STARTUP_TIMEOUT_S"])
    ray_constants.RAY_DASHBOARD_STARTUP_TIMEOUT_S = timeout
    empty = tmp_path_factory.mktemp("node_cache")
    saved = dict(os.environ)
    os.environ.pop("TASFT_DATA_DIR", None)
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.update(TASFT_CACHE_DIR=str(empty), RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    # the nodes' `python` is this environment's, as on a cluster image with the package in it
    os.environ["PATH"] = f"{BIN}:{os.environ['PATH']}"
    try:
        # every node's dashboard agent on a port of its own: on one machine they would all try
        # Ray's default (52365), and the head's agent, which `ray job submit` needs, may lose
        ports = iter(free_ports(5))
        c = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={"num_cpus": 1, "include_dashboard": True,
                            "dashboard_port": next(ports), "dashboard_host": "127.0.0.1",
                            "dashboard_agent_listen_port": next(ports),
                            # a removed node is declared dead after 5 missed health checks:
                            # 5 s instead of Ray's 15 (a busy raylet still gets 10 s per check)
                            "_system_config": {"health_check_period_ms": 1000}},
        )  # fmt: skip
        # each node its own runtime-env folder, as each machine of a cluster has its own disk:
        # shared, one node's cleanup would delete a package (a job's working dir) another uses
        workers = [c.add_node(num_cpus=1, runtime_env_dir_name=f"runtime_resources_{i}",
                              dashboard_agent_listen_port=next(ports))
                   for i in range(3)]  # fmt: skip
        c.wait_for_nodes()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        yield c, workers
    finally:  # killed, not drained: a graceful stop of four raylets takes over half a minute
        for node in [*c.worker_nodes, c.head_node]:
            c.remove_node(node, allow_graceful=False)


class FaultyS3:
    """An HTTP proxy in front of the S3 server, for its faults: every request passes through to
    the real server, except those to the ``nth`` checkpoint folder written through it once
    ``after`` of its requests have passed (the rest of that upload), which get S3's own
    ``503 ServiceUnavailable`` — what a throttling or failing endpoint answers and clients retry
    — until ``failures`` such answers have been given. Runs in the test process (threads)."""

    def __init__(self, upstream: str):
        import http.client
        import urllib.parse

        self.upstream = urllib.parse.urlparse(upstream)
        self.rule: tuple[int, int, int] | None = None  # (nth folder, after, failures)
        self.folders: list[str] = []  # checkpoint folders written through it, in order
        self.passed: dict[str, int] = {}
        self.failed = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                """The request body as sent: a chunked one (the AWS SDK streams uploads as
                aws-chunked with trailers) with its framing, to be passed on unchanged."""
                if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                raw = b""
                while True:
                    line = self.rfile.readline()
                    raw += line
                    if int(line.split(b";")[0].strip() or b"0", 16) == 0:
                        while line not in (b"\r\n", b"\n", b""):  # the trailers, then a blank
                            line = self.rfile.readline()
                            raw += line
                        return raw
                    raw += self.rfile.read(int(line.split(b";")[0].strip(), 16) + 2)

            def _forward(self) -> None:
                body = self._body()
                if proxy.refuse(self.command, self.path):
                    payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                               b"ServiceUnavailable</Code><Message>injected</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port,
                                                  timeout=60)  # fmt: skip
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():  # as signed; the body is here already
                    if k.lower() not in ("connection", "expect"):
                        conn.putheader(k, v)
                conn.endheaders()
                conn.send(body)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():  # a HEAD's Content-Length is the object's size
                    if k.lower() not in ("transfer-encoding", "connection") and not (
                        k.lower() == "content-length" and self.command != "HEAD"
                    ):
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)  # fmt: skip
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_checkpoint(self, nth: int, after: int, failures: int) -> None:
        with self.lock:
            self.rule, self.folders, self.passed, self.failed = (nth, after, failures), [], {}, 0

    def refuse(self, method: str, path: str) -> bool:
        match = re.search(r"/(checkpoint_\d{4}-\d\d-\d\d_[^/?]+)/", path)  # Ray Train's folders
        if self.rule is None or method not in ("PUT", "POST") or not match:
            return False
        with self.lock:
            folder = match.group(1)
            if folder not in self.folders:
                self.folders.append(folder)
            nth, after, failures = self.rule
            if self.folders.index(folder) + 1 != nth or self.failed >= failures:
                return False
            self.passed[folder] = self.passed.get(folder, 0) + 1
            if self.passed[folder] <= after:
                return False
            self.failed += 1
            return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------- an HTTP API


@contextlib.contextmanager
def serve_json(answer):
    """A local HTTP JSON endpoint for clients of OpenAI-style APIs (the real client library
    talks to it over a socket). ``answer(path, headers, body)`` -> (status, headers, payload).
    Yields the base URL (``http://127.0.0.1:PORT/v1``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            status, headers, payload = answer(self.path, self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _pairwise_outputs(text: str) -> tuple[str, str]:
    a = text.split("### Output (a):\n", 1)[1].split("\n\n### Output (b):\n", 1)[0]
    b = text.split("### Output (b):\n", 1)[1].split("\n\n### Answer", 1)[0]
    return a, b


def prefer_longer(seen: list[dict]):
    """Chat endpoint: 'a' when output (a) is longer, else 'b'; '?' for instructions with UNSURE."""

    def answer(path, headers, body):
        seen.append(body)
        text = body["messages"][-1]["content"]
        a, b = _pairwise_outputs(text)
        letter = "?" if "UNSURE" in text else ("a" if len(a) > len(b) else "b")
        message = {"role": "assistant", "content": letter}
        choice = {"index": 0, "finish_reason": "stop", "message": message}
        payload = {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [choice]}  # fmt: skip
        return 200, {}, payload

    return answer


def own_csv(tmp_path: Path, n: int) -> Path:
    """The first ``n`` AdvBench goals in a CSV of the user's layout: other column names."""
    src = (
        Path(os.environ["TASFT_DATA_DIR"])
        / "harmbench"
        / "extra_behavior_datasets"
        / "advbench_behaviors.csv"
    )
    with open(src, newline="") as f:
        goals = [r["Behavior"] for r in csv.DictReader(f)][:n]
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "forbidden_prompt", "category"])
        w.writerows([i, g, "x"] for i, g in enumerate(goals))
    return path
