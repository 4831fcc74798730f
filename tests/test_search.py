"""Tune finding λ (issue 21): a declared objective, validation during training, adaptive search,
early stopping on the objective, a Pareto front, the toxic-count search, and one rule shared
with the report. The sweeps run the real CLI on the tiny model (configs/tiny-search.yaml)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_tune import SWEEP_TIMEOUT, _env

from tasft_ray import tracking
from tasft_ray.config import ConfigError, load_config
from tasft_ray.objective import INFEASIBLE, Constraint, Objective, pareto_front
from tasft_ray.report.rule import best_lambda
from tasft_ray.report.trials import Trial

OBJ = Objective(
    "val/harm_score",
    "min",
    (
        Constraint("val/quality", "min_vs_sft", -0.02),
        Constraint("val/safe_refusal_rate", "max", 0.10),
    ),
)


# ----------------------------------------------------------------------------- the rule


def test_objective_scores_feasible_trials_and_never_a_violating_one():
    ref = {"val/quality": 0.60}
    good = {"val/harm_score": 0.30, "val/quality": 0.59, "val/safe_refusal_rate": 0.05}
    safer = {"val/harm_score": 0.10, "val/quality": 0.50, "val/safe_refusal_rate": 0.05}
    refuses = {"val/harm_score": 0.05, "val/quality": 0.61, "val/safe_refusal_rate": 0.40}
    missing = {"val/quality": 0.61, "val/safe_refusal_rate": 0.0}
    assert OBJ.feasible(good, ref) and not OBJ.feasible(safer, ref)  # 0.50 < 0.60 - 0.02
    assert OBJ.violations(refuses, ref) == ["val/safe_refusal_rate ≤ 0.1"]
    assert OBJ.score(good, ref) == pytest.approx(0.30)
    assert OBJ.score(safer, ref) == pytest.approx(INFEASIBLE + 0.10)  # ranked below feasible
    assert OBJ.score(missing, ref) == float("inf") and not OBJ.feasible(missing, ref)
    cands = [("good", good), ("safer", safer), ("refuses", refuses), ("missing", missing)]
    assert OBJ.best(cands, ref) == "good"  # the lower harm scores break a constraint
    assert OBJ.best(cands[1:], ref) is None


def test_pareto_front_is_mutually_non_dominated():
    dirs = {"harm": "min", "quality": "max"}
    pts = [("a", {"harm": 0.1, "quality": 0.5}), ("b", {"harm": 0.2, "quality": 0.7}),
           ("c", {"harm": 0.3, "quality": 0.6}), ("d", {"harm": 0.1, "quality": 0.4}),
           ("e", {"harm": 0.2})]  # fmt: skip
    assert sorted(pareto_front(pts, dirs)) == ["a", "b"]  # c by b, d by a; e lacks a metric


def _trial(method, lam, val, rest=(), toxic=100, seed=0):
    final = {"safety/n_harmful": 1.0, "safety/harm_score": 0.1, "quality/mean_acc": 0.5}
    return Trial(f"{method}{lam}{rest}", f"{method} {lam}", "m", method, toxic, lam, final,
                 seed=seed, rest=rest, validation=val)  # fmt: skip


def test_report_chooses_by_the_sweeps_objective_against_a_like_sft():
    like = (("train.lr", "0.0001"),)
    trials = [
        _trial("sft", 0.0, {"val/quality": 0.60}, like),
        _trial("sft", 0.0, {"val/quality": 0.90}, (("train.lr", "0.01"),)),  # another setting
        _trial(
            "emd",
            1.0,
            {"val/harm_score": 0.30, "val/quality": 0.59, "val/safe_refusal_rate": 0.0},
            like,
        ),  # fmt: skip
        _trial(
            "emd",
            4.0,
            {"val/harm_score": 0.10, "val/quality": 0.55, "val/safe_refusal_rate": 0.0},
            like,
        ),  # fmt: skip
    ]
    (choice,) = best_lambda(trials, objective=OBJ)
    assert choice.trial.lam == 1.0  # λ 4 is safer but loses more than 2 points of quality
    assert "objective: minimise val/harm_score" in choice.reason
    # the other SFT (0.90) differs in more than the method: it is no reference, so the
    # SFT-relative bound is left unchecked (and said so) instead of ruling out every λ
    (alone,) = best_lambda([trials[1], *trials[2:]], objective=OBJ)
    assert alone.trial.lam == 4.0 and "SFT-relative constraints were not checked" in alone.reason


def test_missing_score_never_ranks_best_in_the_default_rule():
    t1, t2 = _trial("emd", 1.0, {}), _trial("emd", 4.0, {})
    t1.final = {"safety/n_harmful": 2.0, "safety/harm_score": 0.2}
    t2.final = {"safety/n_harmful": 2.0}  # no harm score: `or 0` once made it the best
    (choice,) = best_lambda([t1, t2])
    assert choice.trial.lam == 1.0


def test_a_training_loss_cannot_rank_trials_with_different_lambda():
    with pytest.raises(ConfigError, match="is a training loss, which λ itself changes"):
        load_config(
            "tiny", ["sweep.search=optuna", "sweep.space={loss.lam: {loguniform: [0.1, 9]}}"]
        )
    with pytest.raises(ConfigError, match="sweep.objective needs validation during training"):
        load_config("tiny", ["sweep.objective={minimize: val/harm_score}"])
    with pytest.raises(ConfigError, match="must be a multiple of train.checkpoint_every"):
        load_config("tiny-search", ["eval.every=3"])
    cfg = load_config("tiny-search")
    assert cfg.sweep.objective.build().needs_reference


# ----------------------------------------------------------------------------- sweeps


def _search_cmd(tmp_path: Path, *sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "tasft_ray.tune", "--config", "tiny-search"]
    for s in (f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
              f"sweep.storage={tmp_path / 'ray'}", "train.max_steps=6", *sets):  # fmt: skip
        cmd += ["--set", s]
    return cmd


def _runs(tmp_path: Path, sweep: str):
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("tasft-ray")
    (parent,) = c.search_runs([exp.experiment_id], f"tags.`{tracking.SWEEP_TAG}` = '{sweep}'")
    kids = c.search_runs(
        [exp.experiment_id], f"tags.`{tracking.PARENT_TAG}` = '{parent.info.run_id}'"
    )
    return c, parent, kids


def test_adaptive_search_validates_in_training_and_stops_by_the_objective(tmp_path):
    proc = subprocess.run(
        _search_cmd(tmp_path, "sweep.num_samples=3"),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    c, parent, kids = _runs(tmp_path, "tiny-search")
    ref = [k for k in kids if k.data.tags.get("tasft.role") == "reference"]
    trials = [k for k in kids if k.data.tags.get("tasft.role") != "reference"]
    assert len(ref) == 1 and ref[0].data.params["loss.method"] == "sft" and len(trials) == 3
    for k in trials:
        assert k.info.run_name.startswith("emd λ=") and k.info.run_name.endswith(" n=16 seed=0")
        steps = sorted(m.step for m in c.get_metric_history(k.info.run_id, "val/harm_score"))
        assert steps[:3] == [0, 2, 4]  # before training, then at every checkpoint
        assert c.get_metric_history(k.info.run_id, "val/seconds")  # the cost of each
        for key in ("val/quality", "val/safe_refusal_rate", "val/degenerate_rate"):
            assert c.get_metric_history(k.info.run_id, key), key
    # ASHA's rung is step 4: a trial stopped there had the worst objective at that rung of the
    # trials that had reached it — the objective, not the training loss, decided
    at4 = {k.info.run_id: _at(c, k, "objective", 4) for k in trials}
    stopped = [k for k in trials if max(m.step for m in
               c.get_metric_history(k.info.run_id, "loss/total")) < 6]  # fmt: skip
    for k in stopped:
        earlier = [at4[o.info.run_id] for o in trials if o.info.start_time < k.info.start_time]
        assert earlier and at4[k.info.run_id] >= min(earlier)
    # a trial run to its last step is not stopped there: it finishes (final metrics, adapter);
    # one stopped early is closed as KILLED, none left RUNNING
    c, parent, kids = _runs(tmp_path, "tiny-search")
    early = {k.info.run_id for k in stopped}
    for k in kids:
        expected = "KILLED" if k.info.run_id in early else "FINISHED"
        assert k.info.status == expected, k.info.run_name
    assert parent.data.tags["tasft.objective"].startswith("minimise val/harm_score subject to")
    history = c.get_metric_history(parent.info.run_id, "search/objective")
    assert len(history) == 3 and "best/val/harm_score" in parent.data.metrics
    assert parent.data.tags["tasft.best_trial"].startswith("emd λ=")
    assert "reference/val/quality" in parent.data.metrics
    out = proc.stdout
    assert "objective: minimise val/harm_score" in out and "avg loss/penalty" in out


def _at(c, run, key: str, step: int) -> float:
    return next(m.value for m in c.get_metric_history(run.info.run_id, key) if m.step == step)


def test_interrupted_pareto_search_resumes_its_remaining_budget(tmp_path):
    pareto = ("sweep.objective={minimize: val/harm_score, pareto: {val/harm_score: min, "
              "val/quality: max}, constraints: {val/degenerate_rate: {max: 1.0}}}")  # fmt: skip
    cmd = _search_cmd(tmp_path, pareto, "sweep.scheduler=none", "sweep.num_samples=2",
                      "train.max_steps=4")  # fmt: skip
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        deadline, first = time.time() + SWEEP_TIMEOUT, None
        marker = tmp_path / "ray" / "tiny-search" / "mlflow_parent_run_id"
        while time.time() < deadline and first is None:
            time.sleep(2)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            if not marker.exists():  # the driver has not made its store and parent run yet
                continue
            c, _, kids = _runs(tmp_path, "tiny-search")
            first = next((k for k in kids if k.info.status == "FINISHED"), None)
        assert first is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "tasft_ray.tune", "--resume", str(tmp_path / "ray" / "tiny-search")],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    c, parent, kids = _runs(tmp_path, "tiny-search")
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)  # no reference:
    again = next(k for k in kids if k.info.run_id == first.info.run_id)  # no *_vs_sft bound
    assert again.info.end_time == first.info.end_time  # the finished trial was not rerun
    local = Path(c.download_artifacts(parent.info.run_id, "search", str(tmp_path / "dl")))
    front = json.loads((local / "pareto.json").read_text())
    assert front and (local / "pareto.png").stat().st_size > 0
    pts = [(p["trial"], p) for p in front]
    dirs = {"val/harm_score": "min", "val/quality": "max"}
    assert sorted(pareto_front(pts, dirs)) == sorted(k for k, _ in pts)  # none dominates another


def test_toxic_count_search_bisects_to_the_smallest_count(tmp_path):
    sets = (
        "sweep.toxic_search={counts: [4, 8, 16], target: 1.0}",
        "sweep.objective={minimize: val/harm_score}",
        "sweep.search=grid",
        "sweep.scheduler=none",
        "sweep.space={loss.lam: {grid: [2.0]}}",
        "sweep.num_samples=1",
        "train.max_steps=2",
    )
    proc = subprocess.run(
        _search_cmd(tmp_path, *sets),
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=SWEEP_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()[-3:]
    assert lines[0].startswith("n=4: best emd λ=2 n=4 seed=0, val/harm_score ")
    assert lines[1].startswith("n=8: best emd λ=2 n=8 seed=0") and "reaches ≤ 1" in lines[1]
    assert lines[2] == "smallest toxic count reaching it: 4"
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == [
        "tiny-search-n4",
        "tiny-search-n8",  # bisection: 16 was never needed
    ]
