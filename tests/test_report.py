"""`tasft-ray report`: MLflow runs -> markdown tables, PNG figures, the best-λ rule.

The end-to-end case (a real 2-trial sweep with in-sweep evaluation) is in test_tune.py; here the
runs are logged by hand to a real sqlite MLflow so every number in the report is known.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
from conftest import check_png, md_table

from tasft_ray import tracking
from tasft_ray.cli import main as cli_main
from tasft_ray.config import load_config
from tasft_ray.report import (
    FIG2,
    FIG3,
    REPORT_JSON,
    REPORT_MD,
    Trial,
    best_lambda,
    load_trials,
    seed_groups,
    write_report,
)
from tasft_ray.sweep.space import trial_overrides


def _trial(
    method: str, lam: float, harmful: int, score: float, quality: float | None, seed: int = 0
) -> Trial:
    final = {"safety/n_harmful": harmful, "safety/harm_score": score}
    if quality is not None:
        final["quality/mean_acc"] = quality
    return Trial(f"run-{method}-{lam}-{seed}", "t", "m", method, 100, lam, final, seed=seed)


def _seeds(method: str, lam: float, val: list[int], degenerate: list[float]) -> list[Trial]:
    """One λ trained at seeds 0, 1, ...: validation harmful /40 and degenerate share per seed."""
    trials = []
    for seed, (v, d) in enumerate(zip(val, degenerate, strict=True)):
        t = _trial(method, lam, v, 0.2, 0.53, seed)
        t.final |= {"val/n": 40, "val/n_harmful": v, "answers/degenerate_rate": d}
        trials.append(t)
    return trials


def test_best_lambda_rule_on_a_constructed_case():
    sft = _trial("sft", 0.0, 40, 0.5, 0.500)
    emd = [
        _trial("emd", 1.0, 3, 0.20, 0.490),  # within 2 points, 3 harmful
        _trial("emd", 2.0, 1, 0.10, 0.470),  # safest but 3 points below SFT: excluded
        _trial("emd", 3.0, 3, 0.15, 0.495),  # ties λ=1 on harmful, lower harm score: chosen
        _trial("emd", 4.0, 3, 0.15, 0.499),  # ties λ=3 on both: the smaller λ wins
    ]
    nlcl = [_trial("nlcl", 1.0, 9, 0.3, 0.40), _trial("nlcl", 2.0, 5, 0.3, 0.41)]
    choices = {c.method: c for c in best_lambda([sft, *emd, *nlcl])}
    assert set(choices) == {"emd", "nlcl"}  # SFT has no λ to choose
    assert choices["emd"].trial.lam == 3.0 and "quality" in choices["emd"].reason
    # no nlcl λ keeps quality: fall back to the fewest harmful, and say so
    assert choices["nlcl"].trial.lam == 2.0 and "no λ" in choices["nlcl"].reason
    # without an SFT trial the rule is fewest harmful: λ=2
    assert best_lambda(emd)[0].trial.lam == 2.0


def test_best_lambda_ranks_on_the_validation_split_when_there_is_one():
    sft = _trial("sft", 0.0, 40, 0.5, 0.500)
    lo = _trial("emd", 1.0, 1, 0.10, 0.495)  # best on the reported prompts ...
    hi = _trial("emd", 4.0, 5, 0.30, 0.495)  # ... but worse on validation than λ=4 is
    lo.final |= {"val/n": 20, "val/n_harmful": 6, "val/harm_score": 0.4}
    hi.final |= {"val/n": 20, "val/n_harmful": 2, "val/harm_score": 0.2}
    (choice,) = best_lambda([sft, lo, hi])
    assert choice.trial.lam == 4.0 and "validation" not in choice.reason
    del lo.final["val/n_harmful"]  # one trial without validation: fall back, and say so
    (choice,) = best_lambda([sft, lo, hi])
    assert choice.trial.lam == 1.0 and "no validation split" in choice.reason


def test_best_lambda_drops_a_collapsed_model_that_answers_nothing_harmful():
    # token NLCL at λ 16 on 288 pairs: 0 harmful, every answer one token repeated
    sft = _trial("sft", 0.0, 13, 0.26, 0.74)
    sane = _trial("nlcl", 4.0, 3, 0.19, 0.74)
    dead = _trial("nlcl", 16.0, 0, 0.03, 0.74)
    sft.final["answers/degenerate_rate"], sane.final["answers/degenerate_rate"] = 0.01, 0.03
    dead.final["answers/degenerate_rate"] = 1.0
    (choice,) = best_lambda([sft, sane, dead])
    assert choice.trial.lam == 4.0 and "degenerate answers ≤ 0.01" in choice.reason
    (choice,) = best_lambda([sane, dead])  # no SFT: against the group's lowest rate
    assert choice.trial.lam == 4.0 and "no SFT trial" not in choice.reason
    (choice,) = best_lambda([dead])  # one λ, no SFT: nothing to compare against, so flagged
    assert "100% degenerate answers and no SFT trial to compare" in choice.reason
    sane.final["answers/degenerate_rate"] = 0.5  # every λ beyond SFT's: fewest harmful, marked
    (choice,) = best_lambda([sft, sane, dead])
    assert choice.trial.lam == 16.0 and "every λ degenerates" in choice.reason
    del sane.final["answers/degenerate_rate"]  # runs from before the metric: rule unchanged
    assert best_lambda([sft, sane, dead])[0].trial.lam == 16.0


def test_best_lambda_compares_lambda_values_over_their_seeds():
    # the three-seed runs at 288 pairs: λ 16 safest at two seeds, collapsed ("Because because",
    # nothing harmful) at the third; a per-trial rule drops the collapsed trial and picks λ 16
    sft = _seeds("sft", 0.0, [20, 20, 20], [0.0, 0.0, 0.0])
    lam4 = _seeds("emd", 4.0, [9, 6, 15], [0.0, 0.0, 0.0])
    lam16 = _seeds("emd", 16.0, [7, 0, 8], [0.0, 0.707, 0.0])
    (choice,) = best_lambda([*sft, *lam4, *lam16])
    assert choice.trial.lam == 4.0 and [t.seed for t in choice.setting.trials] == [0, 1, 2]
    assert "means over seeds" in choice.reason and "degenerate answers ≤ 0.00" in choice.reason
    lam16[1].final |= {"val/n_harmful": 5, "answers/degenerate_rate": 0.0}  # fluent at seed 1
    assert best_lambda([*sft, *lam4, *lam16])[0].trial.lam == 16.0  # mean 6.7 < 10
    # the mean decides, not the luckiest seed: λ 1 has the best trial (2) but mean 7 > 6
    lucky, steady = _seeds("emd", 1.0, [2, 12], [0, 0]), _seeds("emd", 2.0, [6, 6], [0, 0])
    assert best_lambda([*lucky, *steady])[0].trial.lam == 2.0
    # without an SFT trial the reference is the group's lowest rate over all seeds
    assert best_lambda([*lam4, *_seeds("emd", 16.0, [7, 0, 8], [0, 0.7, 0])])[0].trial.lam == 4


def test_lambda_is_shown_only_for_the_penalty_methods():
    # STL, KTO and STAR-DSS carry the config's loss.lam but their losses never read it
    shown = {m: (_trial(m, 4.0, 1, 0.1, None).lam_text, _trial(m, 4.0, 1, 0.1, None).label)
             for m in ("sft", "emd", "nlcl", "stl", "kto", "star")}  # fmt: skip
    assert shown == {
        "sft": ("–", "sft n=100"),
        "emd": ("4", "emd λ=4 n=100"),
        "nlcl": ("4", "nlcl λ=4 n=100"),
        "stl": ("–", "stl n=100"),
        "kto": ("–", "kto n=100"),
        "star": ("–", "star n=100"),
    }


def _log_sweep(uri: str) -> tuple[str, dict[str, dict[str, float]]]:
    """A parent run with an SFT and an EMD trial, eval metrics at steps 2 and 4."""
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(uri, "report-test")
    parent = c.create_run(exp, run_name="sweep").info.run_id
    finals = {
        "sft": {"i_malicious/n_harmful": 7, "i_malicious/n": 10, "harmfulq/n_harmful": 4,
                "harmfulq/n": 10, "safety/n_harmful": 11, "safety/n": 20,
                "safety/harm_score": 0.61234, "safety/harmful_rate": 0.55,
                "xstest/safe_refusal_rate": 0.04, "xstest/unsafe_compliance_rate": 0.9,
                "quality/piqa/acc": 0.6012, "quality/boolq/acc": 0.5533,
                "quality/mean_acc": 0.57725, "val/n": 30, "val/n_harmful": 9,
                "nll/harmful": 1.23456, "nll/harmful/n": 50, "nll/refusal": 2.5,
                "judge/offline/harmful_rate": 0.55, "judge/llama-guard/harmful_rate": 0.45,
                "agreement/llama-guard_vs_offline/kappa": 0.61},
        "emd": {"i_malicious/n_harmful": 1, "i_malicious/n": 10, "harmfulq/n_harmful": 0,
                "harmfulq/n": 10, "safety/n_harmful": 1, "safety/n": 20,
                "safety/harm_score": 0.10101, "safety/harmful_rate": 0.05,
                "xstest/safe_refusal_rate": 0.12, "xstest/unsafe_compliance_rate": 0.3,
                "quality/piqa/acc": 0.5988, "quality/boolq/acc": 0.5501,
                "quality/mean_acc": 0.57445, "val/n": 30, "val/n_harmful": 2,
                "nll/harmful": 3.0, "nll/harmful/n": 50, "nll/refusal": 2.75,
                "judge/offline/harmful_rate": 0.05, "judge/llama-guard/harmful_rate": 0.15,
                "agreement/llama-guard_vs_offline/kappa": -0.0526},
    }  # fmt: skip
    for method, metrics in finals.items():
        run = c.create_run(
            exp,
            run_name=f"trial_{method}",
            tags={tracking.PARENT_TAG: parent, tracking.TRIAL_TAG: method},
        ).info.run_id
        for k, v in {"loss.method": method, "loss.lam": "2.0", "data.toxic_count": "100",
                     "model.name": "gemma3-270m"}.items():  # fmt: skip
            c.log_param(run, k, v)
        for step, scale in ((2, 1.5), (4, 1.0)):  # the earlier checkpoint is less safe
            for k in ("safety/harm_score", "safety/harmful_rate", "xstest/safe_refusal_rate"):
                c.log_metric(run, f"eval/{k}", min(1.0, metrics[k] * scale), step=step)
        for k, v in metrics.items():
            c.log_metric(run, f"final/eval/{k}", v)
        c.log_metric(run, "final/step", 4)
        tracking.finish_run(uri, run)
    # a trial without evaluation is listed as skipped, not reported
    bare = c.create_run(
        exp, run_name="trial_bare", tags={tracking.PARENT_TAG: parent, tracking.TRIAL_TAG: "x"}
    )
    tracking.finish_run(uri, bare.info.run_id)
    return parent, finals


def test_report_of_a_two_trial_sweep_matches_mlflow(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent, finals = _log_sweep(uri)
    out = tmp_path / "report"
    rc = cli_main(
        ["report", "--parent-run", parent, "--output", str(out), "--set", f"tracking.uri={uri}"]
    )
    assert rc == 0
    assert f"report: {out / REPORT_MD}" in capsys.readouterr().out
    md = (out / REPORT_MD).read_text()
    check_png(out / FIG2)
    check_png(out / FIG3)

    by_method = {r["method"]: r for r in md_table(md, "## Table 2")}
    assert set(by_method) == {"sft", "emd"}
    for method, m in finals.items():
        row = by_method[method]
        assert int(row["i_malicious (n=10)"]) == m["i_malicious/n_harmful"]
        assert int(row["harmfulq (n=10)"]) == m["harmfulq/n_harmful"]
        assert int(row["paper total"]) == m["safety/n_harmful"]
        assert float(row["harm score"]) == pytest.approx(m["safety/harm_score"], abs=5e-5)
        assert row["validation (λ choice)"] == f"{m['val/n_harmful']}/30"
    nll = {r["method"]: r for r in md_table(md, "## Held-out response likelihood")}
    for method, m in finals.items():
        assert float(nll[method]["harmful (n=50)"]) == pytest.approx(m["nll/harmful"], abs=5e-5)
        assert float(nll[method]["refusal (n=–)"]) == pytest.approx(m["nll/refusal"], abs=5e-5)
    grid = {r["benchmark"]: r for r in md_table(md, ": at the chosen λ")}  # paper layout
    assert grid["i_malicious"]["sft n=100"] == "7" and grid["i_malicious"]["emd λ=2 n=100"] == "1"
    assert grid["paper total"]["emd λ=2 n=100"] == "1"
    refusal = {r["method"]: r for r in md_table(md, "## Over-refusal")}
    quality = {r["method"]: r for r in md_table(md, "## Table 1")}
    for method, m in finals.items():
        assert float(refusal[method]["safe-prompt refusal"]) == pytest.approx(
            m["xstest/safe_refusal_rate"], abs=5e-5
        )
        assert float(quality[method]["piqa"]) == pytest.approx(m["quality/piqa/acc"], abs=5e-5)
        assert float(quality[method]["mean"]) == pytest.approx(m["quality/mean_acc"], abs=5e-5)
    judges = {r["method"]: r for r in md_table(md, "## Judges")}  # eval.judges, side by side
    for method, m in finals.items():
        for name in ("offline", "llama-guard"):
            assert float(judges[method][name]) == pytest.approx(m[f"judge/{name}/harmful_rate"])
        kappa = float(judges[method]["κ llama-guard vs offline"])
        assert kappa == pytest.approx(m["agreement/llama-guard_vs_offline/kappa"], abs=5e-5)
    (chosen,) = md_table(md, "## Chosen λ")
    assert chosen["method"] == "emd" and chosen["λ"] == "2" and chosen["harmful"] == "1"
    assert chosen["validation"] == "2/30" and "no validation split" not in chosen["why"]
    assert "trial_bare" in md  # named as not evaluated
    best = {r["method"]: r for r in md_table(md, "## Best feasible setting per method")}
    assert best["emd"]["best feasible setting"] == "emd λ=2 n=100"
    assert best["sft"]["chosen by"].startswith("fewest harmful (validation)")

    data = json.loads((out / REPORT_JSON).read_text())
    assert {b["method"]: b["trial_steps"] for b in data["best_per_method"]} == {"sft": 4, "emd": 4}
    curve = next(t for t in data["trials"] if t["method"] == "emd")["curves"]["safety/harm_score"]
    assert [s for s, _ in curve] == [2, 4] and math.isclose(curve[1][1], 0.10101)

    # logged to the parent run
    c = tracking.client(uri)
    logged = {a.path for a in c.list_artifacts(parent, "report")}
    assert {f"report/{n}" for n in (REPORT_MD, FIG2, FIG3, REPORT_JSON)} <= logged


def test_report_of_a_seed_sweep_averages_each_lambda_over_its_seeds(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(uri, "seed-test")
    parent = c.create_run(exp, run_name="sweep").info.run_id
    # (method, λ, seed): harmful /20, validation harmful /30, quality, degenerate share
    cases = {("sft", 1.0, 0): (11, 9, 0.57, 0.0), ("sft", 1.0, 1): (12, 10, 0.55, 0.0),
             ("emd", 4.0, 0): (3, 4, 0.56, 0.0), ("emd", 4.0, 1): (4, 5, 0.56, 0.02),
             ("emd", 16.0, 0): (1, 2, 0.56, 0.0), ("emd", 16.0, 1): (0, 0, 0.55, 0.9),
             ("emd", 4.0, 2): (6, 20, 0.56, 0.0)}  # fmt: skip
    for (method, lam, seed), (harmful, val, quality, degenerate) in cases.items():
        run = c.create_run(
            exp, run_name=f"trial_{method}_{lam:g}_{seed}",
            tags={tracking.PARENT_TAG: parent, tracking.TRIAL_TAG: f"{method}{lam}{seed}"},
        ).info.run_id  # fmt: skip
        for k, v in {"loss.method": method, "loss.lam": str(lam), "data.toxic_count": "100",
                     "model.name": "m", "train.seed": str(seed), "sweep.name": f"s{seed}",
                     "train.output_dir": f"/runs/{run}",  # per sweep and trial: not a setting
                     "train.lr": "0.001" if seed == 2 else "0.0005"}.items():  # fmt: skip
            c.log_param(run, k, v)
        for k, v in {"harmfulq/n_harmful": harmful, "harmfulq/n": 20, "safety/n": 20,
                     "safety/n_harmful": harmful, "safety/harm_score": harmful / 40,
                     "val/n": 30, "val/n_harmful": val, "quality/mean_acc": quality,
                     "answers/degenerate_rate": degenerate}.items():  # fmt: skip
            c.log_metric(run, f"final/eval/{k}", v)
        tracking.finish_run(uri, run)
    out, trials = write_report(uri, tmp_path / "report", parent_run_id=parent)
    md = (out / REPORT_MD).read_text()

    table2 = md_table(md, "## Table 2")
    assert [(r["method"], r["λ"], r["seed"]) for r in table2] == [
        ("sft", "–", "0"), ("sft", "–", "1"), ("emd", "4", "0"), ("emd", "4", "1"),
        ("emd", "4", "2"), ("emd", "16", "0"), ("emd", "16", "1"),
    ]  # fmt: skip
    # seed 2 trained with another learning rate: its own setting, never averaged in as a seed
    over = md_table(md, "## Over seeds")
    assert [(r["λ"], r["seeds"]) for r in over if r["method"] == "emd"] == [
        ("4", "0, 1"), ("4", "2"), ("16", "0, 1")
    ]  # fmt: skip
    over = {(r["method"], r["λ"]): r for r in over if r["seeds"] != "2"}
    assert over[("emd", "16")]["seeds"] == "0, 1"
    assert over[("emd", "16")]["harmful"] == "0.5 [0–1]"  # mean [range] over the seeds
    assert over[("emd", "16")]["degenerate (worst seed)"] == "0.9000"
    assert over[("emd", "4")]["validation harmful"] == "4.5 [4–5]"
    assert over[("sft", "–")]["quality"] == "0.5600 [0.5500–0.5700]"
    # λ 16 is safest at both seeds but collapsed at seed 1: the rule takes λ 4 over both seeds
    (chosen,) = md_table(md, "## Chosen λ")
    assert (chosen["λ"], chosen["seeds"], chosen["harmful"]) == ("4", "0, 1", "3.5")
    assert chosen["validation"] == "4.5/30" and "means over seeds" in chosen["why"]
    grid = {r["benchmark"]: r for r in md_table(md, ": at the chosen λ")}
    assert grid["harmfulq"] == {
        "benchmark": "harmfulq", "sft n=100 (2 seeds)": "11.5", "emd λ=4 n=100 (2 seeds)": "3.5"
    }  # fmt: skip
    report = json.loads((out / REPORT_JSON).read_text())
    assert sorted(t["seed"] for t in report["trials"]) == [0, 0, 0, 1, 1, 1, 2]
    assert not any("rest" in t for t in report["trials"])  # not every config param per trial
    (data,) = report["chosen"]
    by_name = {t.name: t.run_id for t in trials}
    assert data["seeds"] == [0, 1]
    assert data["run_ids"] == [by_name["trial_emd_4_0"], by_name["trial_emd_4_1"]]


def test_trials_of_a_seed_sweep_differ_only_in_their_seed(tmp_path):
    """Each trial logs its whole config (tune.run_trial's path): everything but the seed and
    where it wrote must match for the report to take two trials as seeds of one setting."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = load_config(
        "tiny",
        [
            "sweep.space={train.seed: {grid: [0, 1]}}",
            "sweep.cases=[{loss.method: emd, loss.lam: 4.0}, {loss.method: emd, loss.lam: 16.0}]",
        ],
    )
    c = tracking.client(uri)
    parent = c.create_run(tracking.ensure_experiment(uri, base.tracking.experiment)).info.run_id
    for i, (case, seed) in enumerate(itertools.product(base.sweep.cases, (0, 1))):
        cfg = base.with_overrides(trial_overrides({"train.seed": seed, "case": case}))
        cfg = cfg.with_overrides({"train.output_dir": str(tmp_path / f"trial_{i}")})
        run = tracking.child_run(uri, cfg, parent, f"t{i}", f"trial_{i}")
        c.log_metric(run, "final/eval/safety/n_harmful", i)
    trials, _ = load_trials(uri, parent)
    assert [(s.first.lam, s.seeds) for s in seed_groups(trials)] == [(4.0, "0, 1"), (16.0, "0, 1")]
    assert all(t.seeded for t in trials)


def test_report_errors_are_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.ensure_experiment(uri, "empty")
    base = ["--set", f"tracking.uri={uri}", "--output", str(tmp_path / "r")]
    assert cli_main(["report", "--parent-run", "nope", *base]) == 2
    assert cli_main(["report", "--experiment", "empty", *base]) == 2
    assert cli_main(["report", "--experiment", "missing", *base]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("tasft-ray")]
    assert len(err) == 3  # one line each (MLflow's own INFO lines aside)
    assert "--parent-run nope: no such MLflow run" in err[0]
    assert "experiment empty: 0 trial run(s)" in err[1] and "eval.in_sweep=true" in err[1]
    assert "--experiment missing: no such MLflow experiment" in err[2]
    assert not (tmp_path / "r").exists()  # nothing half written


def test_each_method_against_sft_with_intervals():
    """Separated means the 95 % intervals do not overlap, on the safer side: fewer harmful
    answers (Wilson), a higher held-out harmful NLL (mean ± 1.96 s/√n)."""
    from tasft_ray.report import format_trials

    def trial(method, lam, harmful, nll):
        t = _trial(method, lam, harmful, 0.2, 0.55)
        t.final |= {"safety/n": 518, "xstest_safe/n": 250, "xstest/safe_refusal_rate": 0.012,
                    "nll/harmful/response_mean": nll[0], "nll/harmful/ci_low": nll[1],
                    "nll/harmful/ci_high": nll[2], "nll/harmful/n": 60}  # fmt: skip
        return t

    sft = trial("sft", 0.0, 86, (1.93, 1.85, 2.01))
    emd = trial("emd", 16.0, 34, (2.42, 2.30, 2.54))  # Wilson [4.7, 9.0] % vs SFT [13.6, 20.1] %
    nlcl = trial("nlcl", 4.0, 80, (1.98, 1.90, 2.06))  # both intervals overlap SFT's
    stl = trial("stl", 0.0, 140, (1.90, 1.82, 1.98))  # more harmful: separated, the wrong way
    text = format_trials([sft, emd, nlcl, stl])
    lines = {line.split(":")[0]: line for line in text.splitlines() if "vs SFT" in line}
    assert set(lines) == {"emd λ=16 n=100", "nlcl λ=4 n=100", "stl n=100"}  # not SFT itself
    assert ("harmful answers 34/518 (6.6% [4.7%, 9.0%]) vs SFT 86/518 (16.6% [13.6%, 20.1%]): "
            "separated from SFT: yes") in lines["emd λ=16 n=100"]  # fmt: skip
    assert ("held-out harmful NLL 2.420 [2.300, 2.540] vs SFT 1.930 [1.850, 2.010]: separated "
            "from SFT: yes") in lines["emd λ=16 n=100"]  # fmt: skip
    assert lines["nlcl λ=4 n=100"].count("separated from SFT: no") == 2
    assert "harmful answers 140/518" in lines["stl n=100"] and "SFT: worse" in lines["stl n=100"]
    table = text.splitlines()[:5]
    assert table[0].split() == ["trial", "harmful", "answers", "held-out", "harmful", "NLL",
                                "xstest", "safe", "refused", "quality"]  # fmt: skip
    assert "3/250" in table[2] and "0.550" in table[2]  # 0.012 × 250 refused, quality
    # a trial without the likelihood set shows its counts; no NLL verdict is made up
    bare = _trial("emd", 4.0, 30, 0.2, 0.55)
    bare.final |= {"safety/n": 518}
    (line,) = [x for x in format_trials([sft, bare]).splitlines() if "vs SFT" in x]
    assert "harmful answers" in line and "NLL" not in line


def test_best_feasible_setting_per_method_under_the_objective():
    """SFT's optimiser settings compete like λ does; the SFT reference (role tag) bounds the
    relative constraint; an infeasible method says so; seeds pool; steps of all trials count."""
    from tasft_ray.objective import Constraint, Objective
    from tasft_ray.report.best_per_method import best_per_method, table
    from tasft_ray.stats import wilson

    def trial(method, lam, lr, seed, steps, harm, quality, refusal, n_harmful):
        t = _trial(method, lam, n_harmful, 0.1, 0.5, seed)
        t.rest, t.steps = (("train.lr", lr),), steps
        t.validation = {"val/harm_score": harm, "val/quality": quality,
                        "val/safe_refusal_rate": refusal}  # fmt: skip
        t.final |= {"safety/n": 100, "xstest_safe/n": 10, "xstest/safe_refusal_rate": 0.1}
        return t

    ref = trial("sft", 0.0, "0.0005", 0, 32, 0.30, 0.60, 0.0, 20)
    ref.role = tracking.REFERENCE_ROLE
    trials = [
        ref,
        trial("sft", 0.0, "0.001", 0, 48, 0.20, 0.58, 0.0, 12),
        trial("sft", 0.0, "0.001", 1, 48, 0.22, 0.57, 0.0, 9),
        trial("sft", 0.0, "0.002", 0, 16, 0.05, 0.40, 0.0, 2),  # quality < 0.60 - 0.05
        trial("emd", 4.0, "0.0005", 0, 32, 0.15, 0.60, 0.20, 4),  # refuses too much
        trial("emd", 16.0, "0.0005", 0, 32, 0.10, 0.58, 0.05, 6),
        trial("nlcl", 4.0, "0.0005", 0, 32, 0.01, 0.30, 0.0, 0),  # quality collapsed
    ]
    objective = Objective("val/harm_score", "min", (
        Constraint("val/quality", "min_vs_sft", -0.05),
        Constraint("val/safe_refusal_rate", "max", 0.1),
    ))  # fmt: skip
    rows = {r.method: r for r in best_per_method(trials, objective)}
    assert [s.seed for s in rows["sft"].best.trials] == [0, 1]  # lr 0.001, both seeds
    assert (len(rows["sft"].settings), rows["sft"].steps) == (3, 32 + 48 + 48 + 16)
    assert rows["emd"].best.first.lam == 16.0 and rows["nlcl"].best is None
    header, cells = table(list(rows.values()))
    by = {c[1]: dict(zip(header, c, strict=True)) for c in cells}
    pooled = wilson(21, 200)  # 12 + 9 harmful of 2 × 100 prompts
    assert by["sft"]["best feasible setting"] == "sft n=100 (train.lr=0.001)"
    assert by["sft"]["harmful answers (95 % Wilson, seeds pooled)"] == (
        f"21/200 (10.5% [{pooled.low:.1%}, {pooled.high:.1%}])")  # fmt: skip
    assert by["sft"]["xstest safe refused"] == "2/20"
    assert by["emd"]["best feasible setting"] == "emd λ=16 n=100"
    assert by["nlcl"]["best feasible setting"] == "none feasible"
    # without an objective: the fewest harmful answers on the reported prompts, per method
    plain = {r.method: r for r in best_per_method(trials, None)}
    assert plain["sft"].best.first.rest == (("train.lr", "0.002"),)
    assert plain["nlcl"].best.first.lam == 4.0 and "reported prompts" in plain["nlcl"].how
