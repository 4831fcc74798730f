"""Rank 0's metrics through a tracking outage: held while a real `mlflow server` is stopped,
delivered in order when it is back, each step once — also when a checkpoint's unsent rows
are sent again after a restore."""

from __future__ import annotations

import logging
import time

from conftest import BIN, SERVER_ENV, free_ports, start_group, stop_group, wait_http

from tasft_ray import tracking
from tasft_ray.outbox import OUTBOX_FILE, MetricOutbox


def _server(folder, port):
    """This test's own server: the shared one (conftest ``mlflow_url``) cannot be stopped."""
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri",
           f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination",
           str(folder / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]  # fmt: skip
    proc = start_group(cmd, folder / f"server_{time.time_ns()}.log", env=SERVER_ENV)
    wait_http(f"http://127.0.0.1:{port}/health", proc, folder / "server.log")
    return proc


def _rows(steps):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric("loss/total", float(s), now, s) for s in steps]


def test_an_outage_holds_the_rows_and_delivers_each_step_once(tmp_path, caplog):
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    server = _server(tmp_path, port)
    try:
        exp = tracking.ensure_experiment(url, "x")
        run = tracking.client(url).create_run(exp).info.run_id
        box = MetricOutbox(url, run)
        box.put(_rows([1, 2, 3]))
        assert box.drain(30)
        stop_group(server)  # the server goes away mid-run
        caplog.set_level(logging.WARNING, logger="tasft_ray.outbox")
        start = time.monotonic()
        box.put(_rows([4, 5, 6]))  # training goes on: put returns at once
        assert time.monotonic() - start < 1
        assert not box.drain(3)  # held, in order
        assert [m.step for m in box.unsent()] == [4, 5, 6]
        down = [r for r in caplog.records if "not answering" in r.getMessage()]
        assert len(down) == 1  # one line for the outage, not one per attempt
        box.save(tmp_path)  # a checkpoint taken meanwhile keeps them
        assert len((tmp_path / OUTBOX_FILE).read_text().splitlines()) == 3
        server = _server(tmp_path, port)  # back, same store
        assert box.drain(60)
        assert any("answers again" in r.getMessage() for r in caplog.records)
        # a trial restored from that checkpoint sends its rows again: nothing doubles
        again = MetricOutbox(url, run)
        assert again.restore(tmp_path) == 3
        assert again.drain(30)
        history = tracking.client(url).get_metric_history(run, "loss/total")
        assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    finally:
        stop_group(server)
