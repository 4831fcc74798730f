"""Ray Tune over Ray Train with MLflow, on the tiny model and the session's Ray head.

Each sweep runs as the real CLI (`python -m tasft_ray.tune`) in a subprocess that joins the
session's Ray head (conftest ``ray_head``), so the tests exercise exactly what users run;
results are read back from the sqlite MLflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import (
    adapter_loss,
    check_png,
    md_table,
    metric_steps,
    run_cli,
    sqlite_uri,
    sweep_runs,
    tune_args,
)

from tasft_ray import tracking
from tasft_ray.cluster import logical_cpus
from tasft_ray.config import ConfigError, load_config
from tasft_ray.sweep.space import param_space, trial_overrides


def _inputs(c, run) -> list:
    return c.get_run(run.info.run_id).inputs.dataset_inputs


def _tags(dataset_input) -> dict[str, str]:
    return {t.key: t.value for t in dataset_input.tags}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- unit level


def test_param_space_and_cases():
    cfg = load_config(
        "tiny",
        [
            "sweep.space={loss.lam: {grid: [0, 1]}, train.lr: {loguniform: [1.0e-5, 1.0e-3]}}",
            "sweep.cases=[{loss.method: emd, data.toxic_count: 8}, {loss.method: nlcl}]",
        ],
    )
    space = param_space(cfg.sweep)
    assert space["loss.lam"] == {"grid_search": [0, 1]}
    assert space["case"]["grid_search"][0] == {"loss.method": "emd", "data.toxic_count": 8}
    params = {"loss.lam": 1, "case": {"loss.method": "nlcl"}}
    assert trial_overrides(params) == {"loss.lam": 1, "loss.method": "nlcl"}
    assert cfg.with_overrides(trial_overrides(params)).loss.method == "nlcl"


def test_run_names_show_what_else_a_sweep_varies(tmp_path):
    """Two trials of one sweep never share a run name: the setting, then every other swept
    key (test hooks aside) and a contrastive augmentation however it was set."""
    from tasft_ray.sweep.trial import run_extras

    (tmp_path / "c.jsonl").write_text("")
    cases = (f"sweep.cases=[{{loss.method: emd, data.contrastive: {{path: {tmp_path}/c.jsonl, "
             "format: generated}}, {loss.method: emd}]")  # fmt: skip
    cfg = load_config("tiny", [cases, "sweep.space={train.lr: {grid: [0.001]}}"])
    with_c = {"case": cfg.sweep.cases[0], "train.lr": 0.001, "testing.fail_at_step": 3}
    without = {"case": cfg.sweep.cases[1], "train.lr": 0.001}
    names = []
    for params in (with_c, without):
        trial = cfg.with_overrides(trial_overrides(params))
        names.append(dataclasses.replace(trial.setting, extras=run_extras(trial, params)).label)
    assert names == ["emd λ=1 n=16 seed=0 train.lr=0.001 contrastive=c.jsonl",
                     "emd λ=1 n=16 seed=0 train.lr=0.001"]  # fmt: skip


def test_bad_sweep_keys_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.cases\[0\] key 'loss.lamda' is not a config key"):
        load_config("tiny", ["sweep.cases=[{loss.lamda: 1}]"])
    # a case may set a whole section, and the trial's config (with that section set) is valid
    (tmp_path / "c.jsonl").write_text("")
    whole = f"{{data.contrastive: {{path: {tmp_path}/c.jsonl, format: generated}}, "
    cfg = load_config("tiny", [f"sweep.cases=[{whole}data.harmful: {{name: harmfulq}}}}]"])
    trial = cfg.with_overrides(cfg.sweep.cases[0])
    assert trial.data.contrastive.path.endswith("c.jsonl") and trial.data.harmful.name == "harmfulq"
    with pytest.raises(ConfigError, match=r"sweep.cases\[0\] key 'data.contrast' is not a"):
        load_config("tiny", ["sweep.cases=[{data.contrast: {path: c.jsonl}}]"])


def test_logical_cpus_never_deadlock():
    # every concurrent trial needs its own driver CPU plus its workers' CPUs
    cfg = load_config("tiny", ["sweep.max_concurrent_trials=2", "train.num_workers=2"])
    assert logical_cpus(cfg) == 6
    # a shared evaluation stage holds its evaluators' CPUs for the whole sweep
    shared = cfg.with_overrides({"eval.stage.mode": "shared", "eval.stage.evaluators": 2,
                                 "eval.stage.cpus_per_evaluator": 1.5})  # fmt: skip
    assert logical_cpus(shared) == 9


def test_a_trial_the_scheduler_stopped_before_a_ctrl_c_is_not_unfinished():
    """Tune saves a trial it was running at the Ctrl-C as RUNNING (--resume runs it again) and
    one ASHA stopped earlier as TERMINATED (never run again): only the first is unfinished.
    (test_search's Ctrl-C checks that Tune saves the running one so.)"""
    from tasft_ray.sweep.outcome import trial_ending

    assert trial_ending("RUNNING", "KILLED", stopped=True) == "unfinished"
    assert trial_ending("PENDING", None, stopped=True) == "unfinished"
    assert trial_ending("TERMINATED", "KILLED", stopped=True) == "stopped early"
    assert trial_ending("TERMINATED", "RUNNING", stopped=False) == "stopped early"
    assert trial_ending("TERMINATED", "FINISHED", stopped=True) == "ok"
    assert trial_ending("ERROR", "FAILED", stopped=True) == "error"


def test_unreachable_tracking_server_fails_fast(cli_main):
    start = time.perf_counter()
    line = cli_main("tune", "--config", "tiny", "--set", "tracking.uri=http://127.0.0.1:9",
                    prefix="tasft-ray tune: error: ")  # fmt: skip
    assert line.startswith("tracking.uri http://127.0.0.1:9: MLflow server unreachable")
    assert time.perf_counter() - start < 60


def test_step_logger_skips_steps_already_logged(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.ensure_experiment(uri, "x")
    run_id = tracking.client(uri).create_run(exp).info.run_id
    first = tracking.StepLogger(uri, run_id)
    for step in (1, 2, 3):
        first.add({"step": step, "loss/total": float(step)})
    first.flush()
    assert first.outbox.drain(30)  # (sent by the outbox's thread)
    # a restarted worker resumes from the step-2 checkpoint and replays step 3
    again = tracking.StepLogger(uri, run_id)
    for step in (3, 4):
        again.add({"step": step, "loss/total": float(step)})
    again.flush()
    assert again.outbox.drain(30)
    history = tracking.client(uri).get_metric_history(run_id, "loss/total")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- sweeps


def test_grid_of_engines_and_methods_with_crashes_evaluation_and_report(tmp_path, head_env,
                                                                       ray_head):  # fmt: skip
    """Three trials of a 2-worker TorchTrainer, two at a time: SFT on DDP, SFT on DeepSpeed
    ZeRO-3 (the fused loss, its default) and EMD λ=1 on DDP, the ZeRO-3 one crashing once at
    step 3 and restoring from its checkpoint: its restored run ends with DDP's adapter (ZeRO-2 vs
    ZeRO-3 method by method is checked in-process, test_zero3_fused.py; a DDP trial restored
    from its checkpoint ends as an undisturbed one in test_cluster.py). Each trial evaluates
    both its checkpoints; the sweep writes its report."""
    proc = run_cli(
        tune_args(
            tmp_path,
            "train.num_workers=2",
            "engine.kind=ddp",
            "sweep.max_concurrent_trials=2",
            "sweep.cases=[{loss.method: sft, loss.lam: 0}, {loss.method: sft, loss.lam: 0, "
            "engine.kind: deepspeed, engine.zero_stage: 3, testing.fail_at_step: 3}, "
            "{loss.lam: 1}]",
            "eval.in_sweep=true",
            "eval.checkpoints=all",
            "eval.max_prompts=2",
            "eval.benchmarks=[i_malicious, xstest_safe]",
            "eval.validation.benchmarks=[advbench]",
            "eval.validation.max_prompts=2",
            "eval.sampling.max_new_tokens=6",
            "eval.quality_tasks=[boolq]",
            "eval.quality_limit=3",
        ),
        tmp_path,
        head_env,
        ok=True,
    )
    c, parents, children = sweep_runs(sqlite_uri(tmp_path))
    assert len(parents) == 1 and len(children) == 3
    assert all(ch.data.tags[tracking.PARENT_TAG] == parents[0].info.run_id for ch in children)
    engine = {ch.info.run_id: ch.data.params["engine.kind"] for ch in children}
    assert sorted((ch.data.params["loss.method"], engine[ch.info.run_id]) for ch in children) == [
        ("emd", "ddp"), ("sft", "ddp"), ("sft", "deepspeed")
    ]  # fmt: skip
    for ch in children:
        assert ch.info.status == "FINISHED"
        assert ch.data.params["train.num_workers"] == "2"
        # continuous, none repeated: the crashed trial re-ran step 3 but logged it once
        assert metric_steps(c, ch) == [1, 2, 3, 4]
        adapter = [a.path for a in c.list_artifacts(ch.info.run_id, "adapter")]
        assert "adapter/adapter_model.safetensors" in adapter
        # in-sweep evaluation of the final adapter: metrics and the responses table
        m = ch.data.metrics
        assert m["final/eval/safety/n"] == 2 and m["final/eval/xstest_safe/n"] == 2
        assert 0 <= m["final/eval/xstest/safe_refusal_rate"] <= 1
        assert 0 <= m["final/eval/quality/boolq/acc"] <= 1
        got = Path(c.download_artifacts(ch.info.run_id, "eval", str(tmp_path / ch.info.run_id)))
        rows = [json.loads(x) for x in (got / "responses.jsonl").read_text().splitlines()]
        assert len(rows) == 6  # 2 i_malicious + 2 xstest_safe + 2 validation (AdvBench)
        assert m["final/eval/safety/n_harmful"] == sum(
            r["harmful"] for r in rows if r["source"] == "i_malicious"
        )
        assert m["final/eval/val/n"] == 2 and m["final/eval/val/n_harmful"] == sum(
            r["harmful"] for r in rows if r["source"] == "val/advbench"
        )
        # eval.checkpoints=all: both kept checkpoints (steps 2 and 4) evaluated, by step
        assert metric_steps(c, ch, "eval/safety/harm_score") == [2, 4]
        # progress while each of the two answered: from 0, the last one forced
        done = [m.value for m in c.get_metric_history(ch.info.run_id, "progress/prompts_done")]
        assert done.count(0) == done.count(6) == 2 and set(done) <= set(range(7))
        assert "eval/step_2/responses.jsonl" in {
            a.path for a in c.list_artifacts(ch.info.run_id, "eval/step_2")
        }
        # the answers as MLflow tables, per checkpoint, equal to the JSONL rows
        for where, n in (("eval", 6), ("eval/step_2", 6)):
            table = json.loads(
                Path(c.download_artifacts(ch.info.run_id, f"{where}/answers.json")).read_text()
            )
            cols = table["columns"]
            assert cols[:8] == ["benchmark", "prompt_id", "prompt", "response", "harm_score",
                                "harmful", "refused", "judge"]  # fmt: skip
            answers = [dict(zip(cols, r, strict=True)) for r in table["data"]]
            assert len(answers) == n
            if where == "eval":
                assert [(a["prompt_id"], a["response"], a["harmful"]) for a in answers] == [
                    (r["id"], r["response"], r["harmful"]) for r in rows
                ]
        # dataset lineage: the mixture's sources with the digests of their files
        used = {i.tags[0].value: i for i in _inputs(c, ch)}
        safe = used["safe"].dataset
        alpaca = Path(os.environ["TASFT_DATA_DIR"], "alpaca_data_1k_sample", "alpaca_data_1k.json")
        assert safe.name == "alpaca_1k" and safe.digest == _digest(alpaca)
        assert _tags(used["safe"])[tracking.ROWS_TAG] == "64"
        if ch.data.params["loss.method"] == "sft":  # SFT trains on no harmful rows
            assert set(used) == {"safe"}
        else:
            assert used["harmful"].dataset.name == "jbb_jailbroken"
            assert _tags(used["harmful"])[tracking.ROWS_TAG] == "16"
    # the sweep's report: written, logged to the parent run, its numbers are the runs' numbers
    parent = parents[0].info.run_id
    report = tmp_path / "ray" / "sweep" / "report"
    assert f"report: {report / 'report.md'}" in proc.stdout
    assert "report/report.md" in {a.path for a in c.list_artifacts(parent, "report")}
    for png in ("fig2_harm_vs_step.png", "fig3_refusal_vs_safety.png"):
        check_png(report / png)
    table = defaultdict(list)
    for r in md_table((report / "report.md").read_text(), "## Table 2"):
        table[r["method"]].append(r)
    for ch in children:
        m = ch.data.metrics
        row = {
            "i_malicious (n=2)": str(int(m["final/eval/i_malicious/n_harmful"])),
            "validation (λ choice)": f"{int(m['final/eval/val/n_harmful'])}/2",
        }
        rows = table[ch.data.params["loss.method"]]
        assert any(r.items() >= row.items() and float(r["harm score"]) == pytest.approx(
            m["final/eval/safety/harm_score"], abs=5e-5) for r in rows), (row, rows)  # fmt: skip
    # the parent: its trials' data, how they ended, the chosen λ and its numbers, their curves
    assert {i.dataset.name for i in _inputs(c, parents[0])} == {"alpaca_1k", "jbb_jailbroken"}
    pm = c.get_run(parent).data.metrics
    assert pm["trials/ok"] == 3 and pm["trials/error"] == 0
    emd = next(ch for ch in children if ch.data.params["loss.method"] == "emd")
    assert pm["chosen/emd/n16/lam"] == 1.0
    assert pm["chosen/emd/n16/safety/n_harmful"] == emd.data.metrics["final/eval/safety/n_harmful"]
    check_png(Path(c.download_artifacts(parent, "trial_curves.png", str(tmp_path / "p"))))
    # the crash really happened
    markers = sorted((tmp_path / "ray" / "sweep" / "trials").glob("*/.fault_injected"))
    assert [p.read_text() for p in markers] == ["3"]
    assert all(m.value < 0 for m in c.get_metric_history(emd.info.run_id, "loss/penalty"))
    # ZeRO-3, crashed and restored, ends where DDP does; its shards really are DeepSpeed's
    sft = {engine[ch.info.run_id]: ch for ch in children if ch.data.params["loss.method"] == "sft"}
    losses = {
        kind: adapter_loss(Path(c.download_artifacts(ch.info.run_id, "adapter",
                                                     str(tmp_path / f"adapter_{kind}"))))
        for kind, ch in sft.items()
    }  # fmt: skip
    assert losses["deepspeed"] == pytest.approx(losses["ddp"], abs=1e-4)
    ds3 = tmp_path / "ray" / "sweep" / f"train_{sft['deepspeed'].data.tags[tracking.TRIAL_TAG]}"
    assert list(ds3.glob("checkpoint_*/deepspeed/*optim_states.pt"))
    # each rank staged its checkpoints in a temp dir; none is left once Ray has them
    assert not list(ray_head.scratch.glob("tasft_ckpt_*"))
    # the chosen adapter in the model registry: the one penalty method's trial, as a version
    # of the model named after the sweep, alias champion; said on the console
    version = c.get_model_version_by_alias("sweep", "champion")
    assert version.tags["tasft.run_id"] == emd.info.run_id
    assert f"registered: models:/sweep@champion (version {version.version}, emd λ=1" in proc.stdout
    # the console: each method against its SFT trial with intervals; Tune ranks nothing across
    # methods by a training loss (no objective here)
    assert re.search(r"^emd λ=1 n=16: harmful answers \d/2 .* vs SFT \d/2 .*: separated from "
                     r"SFT: (no|yes|worse)$", proc.stdout, re.M)  # fmt: skip
    assert "Current best trial" not in proc.stdout


def test_optuna_search_and_asha_on_the_validated_step():
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from tasft_ray.sweep.space import scheduler, search_alg, tune_metric

    cfg = load_config("tiny-search", ["sweep.grace_steps=3", "sweep.max_concurrent_trials=2"])
    searcher = search_alg(cfg.sweep, cfg.train.seed)
    # the searcher holds the concurrency limit (Tune ignores its own once a searcher is given)
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.max_concurrent == 2
    assert isinstance(searcher.searcher, OptunaSearch)
    one = load_config("tiny", ["sweep.max_concurrent_trials=1"])
    basic = search_alg(one.sweep, one.train.seed)
    assert isinstance(basic, BasicVariantGenerator) and basic.max_concurrent == 1
    asha = scheduler(cfg)
    assert isinstance(asha, ASHAScheduler) and asha._time_attr == "val_step"  # a validation's step
    assert asha._max_t == cfg.train.max_steps + 1  # never stops a trial at its last step
    # train.max_steps searched: the longest trial's last step, not the base config's, is safe
    space = {**cfg.sweep.model_dump()["space"], "train.max_steps": {"choice": [4, 12]}}
    longer = cfg.with_overrides({"sweep.space": space})
    assert cfg.train.max_steps < 12 and scheduler(longer)._max_t == 13
    assert tune_metric(cfg.sweep) == ("objective", "min")  # the objective, not a loss
    with pytest.raises(ConfigError, match="sweep.search=optuna samples its values: use choice"):
        cfg.with_overrides({"sweep.space": {"loss.lam": {"grid": [0, 1]}}})  # checked up front
