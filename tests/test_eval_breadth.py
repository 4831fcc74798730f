"""Evaluation breadth (issue 22): a user's own prompt file as a benchmark and several judges on
the same answers with their agreement (both through the real `tasft-ray evaluate`:
test_guard_judges.py)."""

from __future__ import annotations

import os

import pytest
from conftest import own_csv
from sklearn.metrics import cohen_kappa_score

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


def test_own_csv_benchmark_gives_the_registry_sets_prompts_and_metrics(tmp_path):
    path = own_csv(tmp_path, 6)
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
