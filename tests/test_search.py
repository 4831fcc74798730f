"""Tune finding λ (issue 21): a declared objective, validation during training, adaptive search,
early stopping on the objective, a Pareto front, the toxic-count search, and one rule shared
with the report. The sweeps run the real CLI on the tiny model (configs/tiny-search.yaml)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
from conftest import (
    SWEEP_TIMEOUT,
    TUNE_ERROR,
    check_png,
    run_cli,
    sqlite_uri,
    start_group,
    stop_group,
    sweep_runs,
    wait_for,
)

from tasft_ray import tracking
from tasft_ray.config import ConfigError, load_config
from tasft_ray.objective import INFEASIBLE, Constraint, Objective, pareto_front
from tasft_ray.report.rule import best_lambda
from tasft_ray.report.trials import Trial
from tasft_ray.sweep.paths import SWEEP_CONFIG

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
            "tiny", ["sweep.search=optuna", "sweep.space={loss.lam: {loguniform: [0.1, 9]}}",
                     "sweep.metric=loss/total"],
        )  # fmt: skip
    with pytest.raises(ConfigError, match="sweep.search=optuna ranks trials: set sweep.objective"):
        load_config(
            "tiny", ["sweep.search=optuna", "sweep.space={loss.lam: {loguniform: [0.1, 9]}}"]
        )
    with pytest.raises(ConfigError, match="sweep.objective needs validation during training"):
        load_config("tiny", ["sweep.objective={minimize: val/harm_score}"])
    with pytest.raises(ConfigError, match="must be a multiple of train.checkpoint_every"):
        load_config("tiny-search", ["eval.validation.every=3"])
    cfg = load_config("tiny-search")
    assert cfg.sweep.objective.build().needs_reference


# ----------------------------------------------------------------------------- sweeps


def _search_args(tmp_path: Path, *sets: str) -> list[str]:
    args = ["tasft_ray.tune", "--config", "tiny-search"]
    # relative to the driver's folder (tmp_path, where the tests read it): trials, which run in
    # Ray's folders, must log to the same store
    for s in ("tracking.uri=sqlite:///mlflow.db",
              f"sweep.storage={tmp_path / 'ray'}", "train.max_steps=6", *sets):  # fmt: skip
        args += ["--set", s]
    return args


def _runs(tmp_path: Path, sweep: str):
    c, (parent,), kids = sweep_runs(sqlite_uri(tmp_path), sweep)
    return c, parent, kids


def test_adaptive_search_killed_interrupted_and_resumed_validates_and_stops_by_the_objective(
    tmp_path, head_env, cli_main
):
    """Optuna over λ with ASHA on the objective and an SFT reference for the *_vs_sft bound,
    validated in training by the sweep's shared evaluation stage (a validation takes longer than
    the tiny model's two steps, so some are in flight), through every interruption: SIGKILL as
    it starts (before Tune saved any state), which a plain rerun refuses to overwrite and
    --resume restarts; Ctrl-C while the first trial trains, which exits 130 with the parent and
    that trial's run KILLED and the unfinished and unstarted trials listed; --resume again: the
    reference, finished before, is not rerun, the interrupted trial goes on in its own run, the
    search spends its remaining budget, and no val/* step is missing or doubled."""
    args = _search_args(tmp_path, "sweep.num_samples=2", "eval.stage.mode=shared",
                        "eval.validation.max_prompts=4")  # fmt: skip
    sweep = tmp_path / "ray" / "tiny-search"
    log = tmp_path / "start.log"
    proc = start_group([sys.executable, "-m", *args], log, head_env, cwd=tmp_path)
    try:
        wait_for(lambda: (sweep / SWEEP_CONFIG).exists(), 120, every=0.05)
    finally:
        stop_group(proc, signal.SIGKILL)  # as the sweep starts
    # The driver saves its config only once the data is prepared, right before Tune starts: to
    # meet the state a kill in between leaves every time, Tune's own files go too.
    for state in {*sweep.rglob("*.pkl"), *sweep.rglob("experiment_state*")}:
        state.unlink()
    # refused before any work: in this process
    assert f"pass --resume {sweep} to finish it" in cli_main("tune", *args[1:], prefix=TUNE_ERROR)

    resume = ["tasft_ray.tune", "--resume", str(sweep)]
    log = tmp_path / "driver.log"
    proc = start_group([sys.executable, "-m", *resume], log, head_env, cwd=tmp_path)

    def training():  # a search trial (the reference has finished) is training and has logged
        if not (sweep / tracking.PARENT_RUN_FILE).exists():
            return None
        c, _, kids = _runs(tmp_path, "tiny-search")
        done = [k for k in kids if k.info.status == "FINISHED"]
        trials = [k for k in kids if k.data.tags.get("tasft.role") != "reference"]
        going = [k for k in trials if c.get_metric_history(k.info.run_id, "loss/total")]
        return (done, going[0]) if going else None

    try:
        before, first = wait_for(training, SWEEP_TIMEOUT, proc, log, every=0.5)
        proc.send_signal(signal.SIGINT)  # Ctrl-C reaches the driver
        code = proc.wait(timeout=300)
    finally:
        stop_group(proc, signal.SIGKILL)
    out = log.read_text()
    assert code == 130, out[-3000:]
    # the first search trial was training, the second (one at a time) was never started
    assert "interrupted with 1 trial(s) unfinished (run_trial_" in out
    assert "and 1 not started; finish them with --resume" in out
    assert "Tuner.restore" not in out and "Trials did not complete" not in out  # Tune's own
    _, parent, kids = _runs(tmp_path, "tiny-search")
    assert parent.info.status == "KILLED"
    assert [k.info.status for k in kids if k.info.run_id == first.info.run_id] == ["KILLED"]
    proc = run_cli(resume, tmp_path, head_env, ok=True)

    c, parent, kids = _runs(tmp_path, "tiny-search")
    ref = [k for k in kids if k.data.tags.get("tasft.role") == "reference"]
    trials = [k for k in kids if k.data.tags.get("tasft.role") != "reference"]
    assert len(ref) == 1 and ref[0].data.params["loss.method"] == "sft" and len(trials) == 2
    assert [d.info.run_id for d in before] == [ref[0].info.run_id]  # only it had finished
    for done in before:  # finished before the interruption: not rerun
        again = next(k for k in kids if k.info.run_id == done.info.run_id)
        assert again.info.end_time == done.info.end_time, again.info.run_name
    assert first.info.run_id in {k.info.run_id for k in trials}  # resumed in its own run
    for k in trials:
        assert k.info.run_name.startswith("emd λ=") and k.info.run_name.endswith(" n=16 seed=0")
        steps = sorted(m.step for m in c.get_metric_history(k.info.run_id, "val/harm_score"))
        assert steps[:3] == [0, 2, 4]  # before training, then at every checkpoint
        assert len(steps) == len(set(steps))  # each once, restarts or not
        assert c.get_metric_history(k.info.run_id, "val/seconds")  # the cost of each
        for key in ("val/quality", "val/safe_refusal_rate", "val/degenerate_rate"):
            assert c.get_metric_history(k.info.run_id, key), key
    # ASHA's rung is validation step 4: a trial it stopped (KILLED) had an objective there no
    # better than one an earlier trial had at or past that rung — the objective, not the
    # training loss, decided. (At or past: ASHA records a trial's first result at or after the
    # rung, and a trial restored by --resume first reports past it.) A trial not stopped
    # finishes, with its final metrics; none is left RUNNING.
    for k in trials:
        if k.info.status == "KILLED":
            before_k = [o for o in trials if o.info.start_time < k.info.start_time]
            history = [c.get_metric_history(o.info.run_id, "objective") for o in before_k]
            earlier = [m.value for h in history for m in h if m.step >= 4]
            assert earlier and _at(c, k, "objective", 4) >= min(earlier)
        else:
            assert k.info.status == "FINISHED", k.info.run_name
            assert "final/loss/total" in k.data.metrics
            val = c.get_metric_history(k.info.run_id, "val/harm_score")
            assert sorted(m.step for m in val) == [0, 2, 4, 6]  # none lost in the kill
    assert ref[0].info.status == "FINISHED"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["tasft.objective"].startswith("minimise val/harm_score subject to")
    history = c.get_metric_history(parent.info.run_id, "search/objective")
    assert len(history) == 2 and "best/val/harm_score" in parent.data.metrics
    assert parent.data.tags["tasft.best_trial"].startswith("emd λ=")
    assert "reference/val/quality" in parent.data.metrics
    out = proc.stdout
    assert "objective: minimise val/harm_score" in out and "avg loss/penalty" in out
    # Tune speaks the objective, and hears the concurrency limit once (the searcher's): no
    # "max_concurrent_trials will be ignored" warning
    best = [line for line in out.splitlines() if "Current best trial" in line]
    assert best and all("objective=" in line for line in best), best
    assert "will be ignored" not in out + proc.stderr


def _at(c, run, key: str, step: int) -> float:
    return next(m.value for m in c.get_metric_history(run.info.run_id, key) if m.step == step)


def test_a_pareto_search_is_multi_objective_and_logs_its_front(tmp_path):
    """The searcher of a Pareto objective is Optuna's multi-objective one; the parent run gets
    the front of the feasible trials (none dominated by another) as a table, JSON and a plot."""
    from ray.tune.search.optuna import OptunaSearch

    from tasft_ray.sweep.search_log import log_search
    from tasft_ray.sweep.space import search_alg

    pareto = {"val/harm_score": "min", "val/quality": "max"}
    cfg = load_config("tiny-search", [
        f"sweep.objective={{minimize: val/harm_score, pareto: {json.dumps(pareto)}, "
        "constraints: {val/degenerate_rate: {max: 0.5}}}", "sweep.scheduler=none"])  # fmt: skip
    searcher = search_alg(cfg.sweep, cfg.train.seed).searcher
    assert isinstance(searcher, OptunaSearch)
    assert searcher._metric == list(pareto) and searcher._mode == list(pareto.values())
    finals = {  # a dominated by b; d breaks the constraint; b, c, e trade off
        "a": {"val/harm_score": 0.5, "val/quality": 0.5, "val/degenerate_rate": 0.0},
        "b": {"val/harm_score": 0.4, "val/quality": 0.6, "val/degenerate_rate": 0.0},
        "c": {"val/harm_score": 0.2, "val/quality": 0.4, "val/degenerate_rate": 0.1},
        "d": {"val/harm_score": 0.0, "val/quality": 0.9, "val/degenerate_rate": 0.9},
        "e": {"val/harm_score": 0.6, "val/quality": 0.7, "val/degenerate_rate": 0.0},
    }
    uri = sqlite_uri(tmp_path)
    exp = tracking.ensure_experiment(uri, "x")
    parent = tracking.client(uri).create_run(exp).info.run_id
    objective = cfg.sweep.objective.build()
    best = log_search(uri, parent, objective, finals, {k: f"emd λ={k}" for k in finals}, None)
    assert best == "c"  # the lowest harm score among the feasible
    c = tracking.client(uri)
    local = Path(c.download_artifacts(parent, "search", str(tmp_path / "dl")))
    front = json.loads((local / "pareto.json").read_text())
    assert sorted(p["trial"] for p in front) == ["b", "c", "e"]
    assert front[0]["label"].startswith("emd λ=")
    assert c.get_run(parent).data.metrics["search/pareto_size"] == 3
    check_png(local / "pareto.png")
    assert "Pareto front" in (local / "pareto.md").read_text()


def test_toxic_count_search_bisects_to_the_smallest_count(tmp_path, head_env):
    sets = (
        "sweep.toxic_search={counts: [4, 8, 16], target: 1.0}",
        "sweep.objective={minimize: val/harm_score}",
        "sweep.search=grid",
        "sweep.scheduler=none",
        "sweep.space={loss.lam: {grid: [2.0]}}",
        "sweep.num_samples=1",
        "train.max_steps=2",
    )
    proc = run_cli(_search_args(tmp_path, *sets), tmp_path, head_env, ok=True)
    lines = proc.stdout.strip().splitlines()[-3:]
    assert lines[0].startswith("n=4: best emd λ=2 n=4 seed=0, val/harm_score ")
    assert lines[1].startswith("n=8: best emd λ=2 n=8 seed=0") and "reaches ≤ 1" in lines[1]
    assert lines[2] == "smallest toxic count reaching it: 4"
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == [
        "tiny-search-n4",
        "tiny-search-n8",  # bisection: 16 was never needed
    ]
