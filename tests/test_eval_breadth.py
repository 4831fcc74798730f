"""Evaluation breadth (issue 22): a user's own prompt file as a benchmark, several judges on the
same answers with their agreement, and both through the real `tasft-ray evaluate`."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.metrics import cohen_kappa_score
from test_guard_judges import _save_guard

from tasft_ray import tracking
from tasft_ray.config import BenchmarkConfig, ConfigError, load_config
from tasft_ray.data.benchmarks import benchmark_prompts
from tasft_ray.data.records import DataError
from tasft_ray.evaluation.agreement import agreement_metrics, cohen_kappa
from tasft_ray.evaluation.metrics import summarize

ROOT = os.environ.get("TASFT_DATA_DIR")


def test_cohen_kappa_on_a_hand_case_and_against_sklearn():
    a = [True, True, False, False, True]
    b = [True, False, False, False, True]
    # p_o = 4/5; rates 3/5 and 2/5 give p_e = .6*.4 + .4*.6 = .48; κ = (.8 - .48) / .52
    assert cohen_kappa(a, b) == pytest.approx(0.32 / 0.52)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    flipped = [not x for x in a]
    assert cohen_kappa(a, flipped) == pytest.approx(cohen_kappa_score(a, flipped))
    assert cohen_kappa([True] * 3, [True] * 3) == 1.0  # agree, never vary
    m = agreement_metrics({"x": a, "w": b})
    assert m["judge/x/harmful_rate"] == pytest.approx(0.6) and m["judge/w/harmful_rate"] == 0.4
    # pairs in name order: w first
    assert m["agreement/w_vs_x/kappa"] == pytest.approx(0.32 / 0.52)
    counts = [m[f"agreement/w_vs_x/{k}"] for k in ("both_harmful", "first_only", "second_only")]
    assert counts + [m["agreement/w_vs_x/neither"]] == [2, 0, 1, 2]
    with pytest.raises(ValueError):
        cohen_kappa(a, b[:2])


def _own_csv(tmp_path: Path, n: int) -> Path:
    """The first ``n`` AdvBench goals in a CSV of the user's layout: other column names."""
    src = Path(ROOT) / "harmbench" / "extra_behavior_datasets" / "advbench_behaviors.csv"
    with open(src, newline="") as f:
        goals = [r["Behavior"] for r in csv.DictReader(f)][:n]
    path = tmp_path / "mine.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "forbidden_prompt", "category"])
        w.writerows([i, g, "x"] for i, g in enumerate(goals))
    return path


def test_own_csv_benchmark_gives_the_registry_sets_prompts_and_metrics(tmp_path):
    path = _own_csv(tmp_path, 6)
    mine = BenchmarkConfig(name="mine", path=str(path), format="csv",
                           fields={"instruction": "forbidden_prompt"})  # fmt: skip
    own = benchmark_prompts([mine], 5, ROOT, "eval.benchmarks")
    reg = benchmark_prompts(["advbench"], 5, ROOT, "eval.benchmarks")
    assert [r["instruction"] for r in own] == [r["instruction"] for r in reg]
    assert {r["source"] for r in own} == {"mine"}
    verdicts = [True, False, False, True, False]
    judged = [dict(r, score=0.9 if h else 0.1, harmful=h, refused=not h, response="x")
              for r, h in zip(own + reg, verdicts * 2, strict=True)]  # fmt: skip
    m = summarize(judged, [mine, "advbench"])
    for k in ("n", "n_harmful", "harmful_rate", "harm_score", "refusal_rate"):
        assert m[f"mine/{k}"] == pytest.approx(m[f"advbench/{k}"]), k
    assert m["mine/n_harmful"] == 2

    # from a config, and one line when the file or its column is wrong
    spec = f"{{name: mine, path: {path}, format: csv, fields: {{instruction: forbidden_prompt}}}}"
    cfg = load_config("tiny", [f"eval.benchmarks=[advbench, {spec}]"])
    assert isinstance(cfg.eval.benchmarks[1], BenchmarkConfig)
    with pytest.raises(ConfigError, match=r"eval\.benchmarks.*file not found"):
        load_config("tiny", [f"eval.benchmarks=[{{name: m, path: {tmp_path}/no, format: csv}}]"])
    plain = BenchmarkConfig(name="mine", path=str(path), format="csv")
    with pytest.raises(DataError, match="mine.csv:1: missing column 'instruction'"):
        benchmark_prompts([plain], 2, ROOT, "eval.benchmarks")
    with pytest.raises(ConfigError, match="named alike"):
        benchmark_prompts([mine, mine], 2, ROOT, "eval.benchmarks")


def test_evaluate_with_a_guard_judge_beside_the_offline_one(tmp_path):
    guard = _save_guard(tmp_path / "guard", "llama-guard")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mine = _own_csv(tmp_path, 4)
    spec = f"{{name: mine, path: {mine}, format: csv, fields: {{instruction: forbidden_prompt}}}}"
    sets = [
        f"eval.benchmarks=[harmfulq, xstest_safe, {spec}]",
        "eval.judges=[llama-guard]",
        f"eval.judges_options={{llama-guard: {{model: {guard}, engine: hf, batch_size: 4}}}}",
        "eval.quality_tasks=[]",
        "eval.sampling.max_new_tokens=8",
        f"eval.output_dir={tmp_path / 'eval'}",
        f"tracking.uri={uri}",
    ]
    cmd = [sys.executable, "-m", "tasft_ray", "evaluate", "--config", "tiny", "--limit", "4"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "agreement/llama-guard_vs_offline/kappa" in proc.stdout

    c = tracking.client(uri)
    exp = c.get_experiment_by_name("tasft-ray")
    (run,) = c.search_runs([exp.experiment_id], "tags.`tasft.kind` = 'evaluate'")
    local = Path(c.download_artifacts(run.info.run_id, "eval", str(tmp_path / "dl")))
    rows = [json.loads(x) for x in (local / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["source"] for r in rows} == {"harmfulq", "xstest_safe", "mine"}
    assert all(0.0 < r["judges"]["llama-guard"]["score"] < 1.0 for r in rows)
    harm = [r for r in rows if r["source"] != "xstest_safe"]  # agreement: harm prompts only
    offline = [bool(r["harmful"]) for r in harm]
    lg = [bool(r["judges"]["llama-guard"]["harmful"]) for r in harm]
    logged = run.data.metrics
    assert logged["judge/offline/harmful_rate"] == pytest.approx(sum(offline) / 8)
    assert logged["judge/llama-guard/harmful_rate"] == pytest.approx(sum(lg) / 8)
    kappa = logged["agreement/llama-guard_vs_offline/kappa"]
    assert kappa == pytest.approx(cohen_kappa(lg, offline))
    assert logged["mine/n"] == 4 and "mine/harmful_rate" in logged

    # a judge named twice is one line before any work
    again = subprocess.run(cmd + ["--set", "eval.judges=[offline]"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 2
    assert "eval.judges: offline listed twice" in again.stderr.strip().splitlines()[-1]
