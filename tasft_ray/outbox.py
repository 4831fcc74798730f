"""Rank 0's metrics on their way to the tracking server, so that an outage never stops training
and never loses or doubles a step.

Training hands each batch of rows (``mlflow.entities.Metric``, timestamp fixed when the row is
made) to the outbox and goes on; one background thread sends them in order, oldest first, and
while the server does not answer it keeps them and tries again with a growing pause, saying so
once per outage. Sending a row twice is harmless: MLflow's store keeps one copy of identical
(key, step, timestamp, value) rows, so a retry after a lost reply, or the rows of a checkpoint
restored after a crash, deliver each step exactly once.

What is still unsent when a checkpoint is taken goes into it (``save``), so it survives the
worker, its node or the driver: a trial restored from that checkpoint sends those rows first
(``restore``). Steps after the checkpoint are re-run and made anew — the step logger never
queues a step MLflow or the restored outbox already holds.

Memory is bounded: past ``limit`` rows held, ``put`` waits for the sender (training slows down
rather than growing without end); at the end of a run ``drain`` waits for delivery.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

OUTBOX_FILE = "tracking_outbox.jsonl"  # a checkpoint's unsent rows
BATCH = 1000  # MLflow's log_batch limit on metrics
LIMIT = 200_000  # rows held at most (a few tens of MB)
PAUSES = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0)  # between attempts while the server is down


class MetricOutbox:
    """The rows of one MLflow run, sent in order by a daemon thread (module doc)."""

    def __init__(self, uri: str, run_id: str, limit: int = LIMIT):
        self.uri, self.run_id, self.limit = uri, run_id, limit
        self.rows: deque = deque()
        self.cond = threading.Condition()
        self.sending = 0  # rows taken by the sender and not yet acknowledged
        self._in_flight: list = []  # the sender's batch, until acknowledged
        self.down_since: float | None = None
        self.delivered = 0
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="tasft-outbox", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------ the training side

    def put(self, rows: list) -> None:
        """Queue rows (``Metric``) behind those already queued; waits while ``limit`` are held."""
        with self.cond:
            while len(self.rows) + self.sending + len(rows) > self.limit and self.rows:
                self.cond.wait(timeout=1.0)
            self.rows.extend(rows)
            self.cond.notify_all()

    def unsent(self) -> list:
        """Every row not acknowledged yet, oldest first (the sender's batch included)."""
        with self.cond:
            return list(self._in_flight) + list(self.rows)

    def save(self, folder: Path) -> None:
        """The unsent rows into a checkpoint folder (nothing when all are delivered)."""
        rows = self.unsent()
        if rows:
            lines = [json.dumps([m.key, m.value, m.timestamp, m.step]) for m in rows]
            (Path(folder) / OUTBOX_FILE).write_text("\n".join(lines) + "\n")

    def restore(self, folder: Path) -> int:
        """Queue a checkpoint's unsent rows again, first; returns how many."""
        from mlflow.entities import Metric

        path = Path(folder) / OUTBOX_FILE
        if not path.is_file():
            return 0
        rows = [Metric(*json.loads(line)) for line in path.read_text().splitlines() if line]
        with self.cond:
            self.rows.extendleft(reversed(rows))
            self.cond.notify_all()
        return len(rows)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every row is delivered (True), or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while self.rows or self.sending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.cond.wait(timeout=1.0 if left is None else min(left, 1.0))
        return True

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # ------------------------------------------------------------ the sender

    def _answers(self) -> bool:
        """A server's health endpoint answers at once (sqlite: always). Asked before each send
        while the server is down, so an outage is seen at once and no send waits out MLflow's
        own retries (minutes) against a server known to be gone."""
        if not self.uri.startswith(("http://", "https://")):
            return True
        try:
            with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=2) as r:
                r.read()
            return True
        except OSError:
            return False

    def _run(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        attempt = 0
        while True:
            with self.cond:
                while not self.rows and not self.closed:
                    self.cond.wait()
                if not self.rows:
                    return
                batch = [self.rows.popleft() for _ in range(min(BATCH, len(self.rows)))]
                self.sending, self._in_flight = len(batch), batch
            try:
                if not self._answers():
                    raise ConnectionError("its /health does not answer")
                client.log_batch(self.run_id, metrics=batch)
            except Exception as exc:  # the server is down, restarting or overloaded
                with self.cond:
                    self.rows.extendleft(reversed(batch))  # first again, in order
                    self.sending, self._in_flight = 0, []
                    held = len(self.rows)
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.warning("tracking server %s not answering (%s): holding %d metric "
                                "row(s) of run %s, training goes on; they are sent when it "
                                "answers", self.uri, type(exc).__name__, held,
                                self.run_id)  # fmt: skip
                time.sleep(PAUSES[min(attempt, len(PAUSES) - 1)])
                attempt += 1
                continue
            if self.down_since is not None:  # said before drain() can return: in order
                log.warning("tracking server %s answers again after %.0f s: held metric rows "
                            "delivered", self.uri, time.monotonic() - self.down_since)  # fmt: skip
                self.down_since, attempt = None, 0
            with self.cond:
                self.sending, self._in_flight = 0, []
                self.delivered += len(batch)
                self.cond.notify_all()
