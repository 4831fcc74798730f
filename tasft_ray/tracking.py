"""MLflow: where runs go, one parent run per sweep, one child run per trial, rank-0 step logging,
the data sets each run used (dataset inputs), and runs opened when long work starts.

Default store: ``sqlite:///<cwd>/mlflow.db`` with artifacts in ``<cwd>/mlartifacts`` (the file
store is in maintenance mode in MLflow 3). Any URI from ``tracking.uri`` or
``MLFLOW_TRACKING_URI`` works, including an ``mlflow server``; an unreachable server fails fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tasft_ray.config import Config, ConfigError, TrackingConfig, flatten
from tasft_ray.data.lineage import DataInput
from tasft_ray.errors import one_line
from tasft_ray.files import check_writable
from tasft_ray.storage import Location

log = logging.getLogger(__name__)

TRIAL_TAG = "tasft.trial_id"
ROLE_TAG, REFERENCE_ROLE = "tasft.role", "reference"  # the SFT reference of an objective
SWEEP_TAG = "tasft.sweep"
PARENT_TAG = "mlflow.parentRunId"
PARENT_RUN_FILE = "mlflow_parent_run_id"
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
RUN_KIND_TAG = "tasft.kind"  # generate | generate-contrastive | evaluate | report
CONTEXT_TAG, ROWS_TAG = "mlflow.data.context", "tasft.rows"  # a dataset input's role and rows
PROGRESS_EVERY_S = 5.0  # a long run's progress metrics: at most this often (and at flushes)


SQLITE = "sqlite:///"


def sqlite_file(uri: str) -> str | None:
    """The database file of a ``sqlite:///`` store; None for any other store."""
    return uri.removeprefix(SQLITE) if uri.startswith(SQLITE) else None


def tracking_uri(cfg: Config) -> str:
    """The store, with a relative sqlite path made absolute against this process's folder: a
    Ray worker runs in another folder, and ``sqlite:///m.db`` would be a second, empty store
    there (the driver's runs "not found" in it)."""
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE}mlflow.db"
    db = sqlite_file(uri)
    if db and not db.startswith("/"):
        return f"{SQLITE}{Path(db).expanduser().absolute()}"
    return uri


def check_reachable(uri: str, timeout: float = 5.0, existing: bool = False) -> None:
    """One line, before any work starts, if the tracking store cannot be used: a server that
    does not answer, a sqlite file that cannot be written, a scheme MLflow does not know.
    Creates nothing: a sqlite store that does not exist yet is only checked to be creatable
    (``existing``: a command that reads runs needs it to exist)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
                resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(
                f"tracking.uri {uri}: MLflow server unreachable ({reason}); start one with "
                "`mlflow server --backend-store-uri sqlite:///mlflow.db` or use a sqlite:/// URI"
            ) from None
        return
    if HOST_PORT.match(uri):
        raise ConfigError(
            f"tracking.uri {uri}: no scheme; an MLflow server is http://{uri}, a local store "
            "sqlite:///ABS/PATH/mlflow.db"
        )
    db = sqlite_file(uri)
    if db is not None:
        check_writable(db, "tracking.uri", folder=False)
        if not has_store(uri):
            if existing:
                raise ConfigError(
                    f"tracking.uri {uri}: no MLflow store there (nothing was tracked there); "
                    "set tracking.uri or MLFLOW_TRACKING_URI to the store the runs went to"
                )
            return  # created by the first run logged there
        with open(db, "rb") as f:
            header = f.read(16)
        if header and header != SQLITE_HEADER:
            raise ConfigError(
                f"tracking.uri {uri}: {db} is not an SQLite "
                "database; point it at an MLflow store (or a path for a new one)"
            )
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for a store it cannot open
        raise ConfigError(
            f"tracking.uri {uri}: cannot open this MLflow store ({type(exc).__name__}: "
            f"{one_line(exc, 200)}); use sqlite:///ABS/PATH/mlflow.db or http://HOST:PORT"
        ) from None


SQLITE_HEADER = b"SQLite format 3\x00"
HOST_PORT = re.compile(r"^[\w.-]+:\d+(/.*)?$")  # localhost:5000, a server without its http://


def has_store(uri: str) -> bool:
    """False for a sqlite store whose file does not exist yet (no run can be in it)."""
    db = sqlite_file(uri)
    return db is None or Path(db).is_file()


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a sqlite store; without it Ray workers would put artifacts under /tmp/ray."""
    db = sqlite_file(uri)
    if db is None:
        return None
    return (Path(db).parent / "mlartifacts" / experiment).resolve().as_uri()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    db = sqlite_file(uri)
    if db is not None:  # MLflow creates the database, not its folder
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(uri: str, name: str) -> str:
    """The experiment, created as a model-training one: without the kind tag MLflow's UI opens
    it in its GenAI view (traces) instead of the runs table."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return c.create_experiment(
            name, artifact_location=_artifact_location(uri, name), tags={KIND_TAG: TRAINING_KIND}
        )
    if KIND_TAG not in exp.tags:
        c.set_experiment_tag(exp.experiment_id, KIND_TAG, TRAINING_KIND)
    return exp.experiment_id


def log_params(uri: str, run_id: str, cfg: Config) -> None:
    """Every config value as a param (dotted keys), in batches of MLflow's 100 limit."""
    from mlflow.entities import Param

    params = [Param(k, str(v)[:6000]) for k, v in sorted(flatten(cfg).items())]
    c = client(uri)
    for i in range(0, len(params), 100):
        c.log_batch(run_id, params=params[i : i + 100])


def start_parent_run(uri: str, cfg: Config, sweep: Location) -> str:
    """The sweep's parent run; its id is kept in the sweep's folder (local or in an object
    store) so --resume reuses it, and it is RUNNING again while resumed."""
    found = sweep.read_text(PARENT_RUN_FILE)
    if found:
        reopen(uri, found.strip())
        return found.strip()
    exp = ensure_experiment(uri, cfg.tracking.experiment)
    run = client(uri).create_run(exp, run_name=cfg.sweep.name, tags={SWEEP_TAG: cfg.sweep.name})
    log_params(uri, run.info.run_id, cfg)
    client(uri).log_text(run.info.run_id, cfg.to_yaml(), "config.yaml")
    sweep.write_text(PARENT_RUN_FILE, run.info.run_id)
    return run.info.run_id


def child_run(uri: str, cfg: Config, parent_id: str, trial_id: str, trial_name: str) -> str:
    """The trial's child run; a restored trial finds and reuses its earlier one."""
    c = client(uri)
    exp = ensure_experiment(uri, cfg.tracking.experiment)
    found = c.search_runs(
        [exp],
        filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_id}'",
    )
    if found:
        if found[0].info.status != "FINISHED":  # killed with the sweep: running again now
            reopen(uri, found[0].info.run_id)
        return found[0].info.run_id
    run = c.create_run(exp, run_name=trial_name, tags={PARENT_TAG: parent_id, TRIAL_TAG: trial_id})
    log_params(uri, run.info.run_id, cfg)
    c.log_text(run.info.run_id, cfg.to_yaml(), "config.yaml")
    return run.info.run_id


def log_inputs(uri: str, run_id: str, inputs: Iterable[DataInput]) -> None:
    """The data sets a run used or wrote, as MLflow dataset inputs (the UI's Dataset column):
    name and digest identify the content, the context its role, a tag the rows it took."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    logged = [
        DatasetInput(
            Dataset(d.name, d.digest, d.source_type, json.dumps({"uri": d.source})),
            tags=[InputTag(CONTEXT_TAG, d.role), InputTag(ROWS_TAG, str(d.rows))],
        )
        for d in inputs
    ]
    if logged:
        client(uri).log_inputs(run_id, datasets=logged)


class LiveRun:
    """A run opened when its work starts, so the UI shows it RUNNING with its progress and its
    true duration; progress is logged at most every ``every_s`` seconds unless forced."""

    def __init__(self, uri: str, run_id: str, every_s: float = PROGRESS_EVERY_S):
        self.uri, self.run_id, self.every_s = uri, run_id, every_s
        self.last = -math.inf

    def progress(self, step: int, metrics: dict[str, float], force: bool = False) -> None:
        from mlflow.entities import Metric

        if not force and time.monotonic() - self.last < self.every_s:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        client(self.uri).log_batch(self.run_id, metrics=batch)
        self.last = time.monotonic()

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.progress(0, metrics, force=True)


@contextlib.contextmanager
def live_run(uri: str, cfg: Config, kind: str, tags: dict[str, str] | None = None):
    """A run of ``kind`` (params: the whole config) around the block, with this machine's
    system metrics: FINISHED when it returns, KILLED on Ctrl-C, FAILED on any other
    exception."""
    c = client(uri)
    exp = ensure_experiment(uri, cfg.tracking.experiment)
    run = c.create_run(exp, run_name=kind, tags={RUN_KIND_TAG: kind, **(tags or {})})
    log_params(uri, run.info.run_id, cfg)
    try:
        with system_metrics(uri, run.info.run_id, cfg.tracking):
            yield LiveRun(uri, run.info.run_id)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        finish_run(uri, run.info.run_id, status)
        raise
    finish_run(uri, run.info.run_id)


class StepLogger:
    """Rank 0's per-step metrics, handed to MLflow when a checkpoint is taken.

    Steps after the last checkpoint are re-run after a worker failure, so they are held back
    until the next checkpoint, and steps MLflow (or the restored checkpoint's unsent rows)
    already has are skipped: each step appears exactly once in the run's history, however
    often the worker group restarts. Rows go out through an outbox (``tasft_ray.outbox``), so
    a tracking outage never holds up training; ``save`` puts the unsent ones into a checkpoint.
    """

    def __init__(self, uri: str, run_id: str, keys: tuple[str, ...] = ("loss/total", "val/n")):
        from tasft_ray.outbox import MetricOutbox

        self.uri, self.run_id, self.keys = uri, run_id, keys
        self.pending: list[dict] = []
        c = client(uri)
        steps = [m.step for key in keys for m in c.get_metric_history(run_id, key)]
        self.logged_up_to = max(steps, default=-1)  # step 0: validation before training
        self.outbox = MetricOutbox(uri, run_id)

    def restore(self, folder: Path) -> None:
        """Queue a checkpoint's unsent rows; their steps count as logged."""
        self.outbox.restore(folder)
        queued = [m.step for m in self.outbox.unsent() if m.key in self.keys]
        self.logged_up_to = max([self.logged_up_to, *queued])

    def add(self, metrics: dict) -> None:
        self.pending.append(metrics)

    def flush(self) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [
            Metric(k, float(v), now, int(m["step"]))
            for m in self.pending
            if m["step"] > self.logged_up_to
            for k, v in m.items()
            if k != "step" and isinstance(v, (int, float))
        ]
        self.outbox.put(rows)
        if self.pending:
            self.logged_up_to = max(self.logged_up_to, max(m["step"] for m in self.pending))
        self.pending = []

    def save(self, folder: Path) -> None:
        self.outbox.save(folder)

    def drain(self, timeout: float) -> None:
        """Wait for every row to be delivered, at most ``timeout`` seconds (then say so)."""
        from tasft_ray.outbox import OUTBOX_FILE

        if not self.outbox.drain(timeout):
            log.warning("tracking server %s did not take run %s's last %d metric row(s) in "
                        "%.0f s; they stay in its last checkpoint (%s)", self.uri, self.run_id,
                        len(self.outbox.unsent()), timeout, OUTBOX_FILE)  # fmt: skip


def setting_tags(cfg: Config) -> dict[str, str]:
    """The tags the MLflow UI groups and filters training runs by (a trial's or a
    `tasft-ray train` run's): method, toxic count, λ, seed."""
    return {"tasft.method": cfg.loss.method, "tasft.toxic_count": str(cfg.data.toxic_count),
            "tasft.lam": f"{cfg.loss.lam:g}", "tasft.seed": str(cfg.train.seed)}  # fmt: skip


@contextlib.contextmanager
def system_metrics(uri: str, run_id: str, cfg: TrackingConfig):
    """MLflow's system metrics (``system/*``: CPU, memory, disk, network, and GPU where
    nvidia-ml-py finds one) of the machine this runs on, logged to ``run_id`` every
    ``tracking.system_metrics_every`` seconds while the block runs; nothing when switched off."""
    if not cfg.system_metrics:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # MLflow's own GPU probe logs a line per process when no GPU library is installed, which
    # a CPU user cannot act on
    logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)
    monitor = SystemMetricsMonitor(run_id, sampling_interval=cfg.system_metrics_every,
                                   resume_logging=True, tracking_uri=uri)  # fmt: skip
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def finish_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status=status)


def reopen(uri: str, run_id: str) -> None:
    """A run that ended KILLED or FAILED and is being continued is RUNNING again."""
    client(uri).update_run(run_id, status="RUNNING")


def finish_children(
    uri: str, parent_id: str, status: str, trial_ids: set[str] | None = None
) -> None:
    """End the parent's child runs that are still RUNNING, and those of ``trial_ids`` that did
    not finish (trials stopped with the sweep, whatever their own last word was)."""
    c = client(uri)
    for run in child_runs(uri, parent_id):
        stopped = run.data.tags.get(TRIAL_TAG) in (trial_ids or set())
        if run.info.status == "RUNNING" or (stopped and run.info.status != "FINISHED"):
            c.set_terminated(run.info.run_id, status=status)


def child_statuses(uri: str, parent_id: str) -> dict[str, str]:
    """Trial id -> status of each of the parent's child runs."""
    return {r.data.tags.get(TRIAL_TAG, ""): r.info.status for r in child_runs(uri, parent_id)}


def child_runs(uri: str, parent_id: str) -> list:
    """The parent's child runs (MLflow ``Run`` objects)."""
    c = client(uri)
    exp = c.get_run(parent_id).info.experiment_id
    return c.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'")
