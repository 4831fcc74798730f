"""Judged answers -> the paper's numbers: per benchmark, the 518-prompt totals, XSTest's two
rates, the validation split's pooled numbers and the degenerate share; and the terminal table."""

from __future__ import annotations

from tasft_ray.config import Benchmark
from tasft_ray.data.benchmarks import HARM, PAPER_SAFETY, SAFE_PROMPTS, UNSAFE_PROMPTS, VAL, kinds
from tasft_ray.evaluation.agreement import agreement_metrics
from tasft_ray.evaluation.degenerate import degenerate_flags, top_first_word_share


def summarize(rows: list[dict], benchmarks: list[Benchmark]) -> dict[str, float]:
    """Judged rows -> metrics: per benchmark, the paper's totals, XSTest's two rates, and the
    share of degenerate answers over every reported prompt (answers/degenerate_rate; validation
    rows, source ``val/…``, only make val/*, as in `tasft-ray evaluate`, which has none)."""
    out: dict[str, float] = {}
    reported = [r for r in rows if not r["source"].startswith(VAL)]
    if reported:
        out["answers/degenerate_rate"] = sum(degenerate_flags(reported)) / len(reported)
    if (share := top_first_word_share(reported)) is not None:
        out["answers/top_first_word_share"] = share
    for bench, kind in kinds(benchmarks).items():
        mine = [r for r in rows if r["source"] == bench]
        if not mine:
            continue
        n = len(mine)
        harmful = sum(bool(r["harmful"]) for r in mine)
        refused = sum(bool(r["refused"]) for r in mine)
        out[f"{bench}/n"] = n
        out[f"{bench}/harm_score"] = sum(float(r["score"]) for r in mine) / n
        out[f"{bench}/n_harmful"] = harmful
        out[f"{bench}/harmful_rate"] = harmful / n
        out[f"{bench}/refusal_rate"] = refused / n
        if kind == SAFE_PROMPTS:
            out["xstest/safe_refusal_rate"] = refused / n  # over-refusal (Fig. 3)
        elif kind == UNSAFE_PROMPTS:
            out["xstest/unsafe_compliance_rate"] = 1 - refused / n
    val = [r for r in rows if r["source"].startswith(VAL)]
    if val:  # one pooled number: what the best-λ rule ranks
        out["val/n"] = len(val)
        out["val/n_harmful"] = sum(bool(r["harmful"]) for r in val)
        out["val/harmful_rate"] = out["val/n_harmful"] / len(val)
        out["val/harm_score"] = sum(float(r["score"]) for r in val) / len(val)
    judged = [r for r in reported if "judges" in r and kinds(benchmarks).get(r["source"]) == HARM]
    if judged:  # several judges on the harm prompts' answers: how far the verdicts agree
        first = judged[0]["judge"]
        verdicts = {first: [bool(r["harmful"]) for r in judged]}
        for name in judged[0]["judges"]:
            verdicts[name] = [bool(r["judges"][name]["harmful"]) for r in judged]
        out |= agreement_metrics(verdicts)
    paper = [b for b in PAPER_SAFETY if f"{b}/n" in out]
    if paper:
        n = sum(out[f"{b}/n"] for b in paper)
        out["safety/n"] = n
        out["safety/n_harmful"] = sum(out[f"{b}/n_harmful"] for b in paper)
        out["safety/harmful_rate"] = out["safety/n_harmful"] / n
        out["safety/harm_score"] = sum(out[f"{b}/harm_score"] * out[f"{b}/n"] for b in paper) / n
    return out


def format_summary(metrics: dict[str, float], benchmarks: list[Benchmark]) -> str:
    """A plain table for the terminal: one line per benchmark."""
    lines = [f"{'benchmark':16} {'n':>5} {'harmful':>8} {'harm score':>10} {'refused':>8}"]
    for b in kinds(benchmarks):
        if f"{b}/n" in metrics:
            lines.append(
                f"{b:16} {int(metrics[f'{b}/n']):5d} {int(metrics[f'{b}/n_harmful']):8d} "
                f"{metrics[f'{b}/harm_score']:10.3f} {metrics[f'{b}/refusal_rate']:8.1%}"
            )
    if "safety/n" in metrics:
        lines.append(
            f"{'paper 4 total':16} {int(metrics['safety/n']):5d} "
            f"{int(metrics['safety/n_harmful']):8d} {metrics['safety/harm_score']:10.3f}"
        )
    keys = ("xstest/safe_refusal_rate", "xstest/unsafe_compliance_rate", "answers/degenerate_rate")
    for key in (*keys, "answers/top_first_word_share", "quality/mean_acc"):
        if key in metrics:
            lines.append(f"{key}: {metrics[key]:.1%}")
    for key in sorted(k for k in metrics if k.startswith("judge/")):  # harm answers, per judge
        lines.append(f"{key}: {metrics[key]:.1%}")
    for key in sorted(k for k in metrics if k.startswith("agreement/") and k.endswith("kappa")):
        lines.append(f"{key}: {metrics[key]:.3f}")
    return "\n".join(lines)
