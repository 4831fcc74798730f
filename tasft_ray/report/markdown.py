"""The report's markdown (Table 2 and the paper's layout, XSTest, Table 1, likelihood, seeds,
the chosen λ) and the plain-text tables printed in the terminal.

Numbers are printed exactly as MLflow holds them (counts as integers, the rest to 4 decimals), so
a reader can check any cell against the run it came from.
"""

from __future__ import annotations

from tasft_ray.data.benchmarks import BENCHMARKS, HARM, PAPER_SAFETY
from tasft_ray.report.against_sft import method_rows, separation_lines
from tasft_ray.report.best_per_method import MethodBest
from tasft_ray.report.best_per_method import table as best_table
from tasft_ray.report.figures import FIG2, FIG3
from tasft_ray.report.rule import DEGENERATE, RULE, Choice
from tasft_ray.report.trials import SeedGroup, Trial, seed_groups
from tasft_ray.setting import method_rank

NLL_NOTE = (
    "Higher = less likely under the model. A working penalty raises the held-out harmful "
    "responses' NLL over SFT's by more than it raises the refusals'."
)


def _cell(value: float | None, integer: bool = False) -> str:
    """Counts as integers (a mean over seeds that is not whole: one decimal), the rest to 4."""
    if value is None:
        return "–"
    if integer:
        return str(int(round(value))) if abs(value - round(value)) < 1e-9 else f"{value:.1f}"
    return f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def harm_benchmarks(trials: list[Trial]) -> list[str]:
    """Harm benchmarks present in any trial: the registry's (the paper's four first), then the
    users' own prompt sets, in the order the trials name them."""
    known = {b: kind for b, (_, kind) in BENCHMARKS.items()}
    for t in trials:
        for b, kind in t.kinds.items():
            known.setdefault(b, kind)
    present = {b for t in trials for b in known if f"{b}/n_harmful" in t.final}
    return [b for b, kind in known.items() if b in present and kind == HARM]


def _val(t: Trial | SeedGroup) -> str:
    """Harmful answers on the validation prompts as "k/n" ("–" without a validation split);
    for a setting, the mean over its seeds."""
    s = t if isinstance(t, SeedGroup) else SeedGroup([t])
    if s.mean("val/n") is None:
        return "–"
    return f"{_cell(s.mean('val/n_harmful'), True)}/{_cell(s.mean('val/n'), True)}"


def _trial_cols(t: Trial) -> list[str]:
    return [t.model, t.method, str(t.toxic), t.lam_text] + ([str(t.seed)] if t.seeded else [])


def _spread(s: SeedGroup, key: str, integer: bool) -> str:
    """Mean over seeds, with the range when they differ: "13.5 [13–14]"."""
    vals = s.values(key)
    if vals is None:
        return "–"
    mean = _cell(sum(vals) / len(vals), integer)
    lo, hi = _cell(min(vals), integer), _cell(max(vals), integer)
    return mean if lo == hi else f"{mean} [{lo}–{hi}]"


def _seeds_table(trials: list[Trial]) -> list[str]:
    """Per setting over its seeds: what the λ rule compares, with each spread."""
    rows = [
        [s.first.model, s.first.method, str(s.first.toxic), s.first.lam_text, s.seeds]
        + [_spread(s, "safety/n_harmful", True), _spread(s, "val/n_harmful", True)]
        + [_spread(s, "xstest/safe_refusal_rate", False)]
        + [_spread(s, "quality/mean_acc", False), _cell(s.worst(DEGENERATE))]
        for s in seed_groups(trials)
    ]
    header = ["model", "method", "toxic", "λ", "seeds", "harmful", "validation harmful"]
    header += ["safe-prompt refusal", "quality", "degenerate (worst seed)"]
    md = ["## Over seeds — mean [range] per setting", ""]
    md += [
        "The settings the λ rule compares when a sweep trains one λ at several seeds "
        "(e.g. `sweep.space={train.seed: {grid: [0, 1, 2]}}`).",
        "",
    ]
    return md + _table(header, rows)


def to_markdown(
    trials: list[Trial],
    choices: list[Choice],
    where: str,
    skipped: list[str],
    rule: str = RULE,
    best: list[MethodBest] | None = None,
) -> str:
    benches = harm_benchmarks(trials)
    key = ["model", "method", "toxic", "λ"] + (["seed"] if any(t.seeded for t in trials) else [])
    md = [f"# TA-SFT report — {where}", ""]
    md += [f"{len(trials)} evaluated trial(s); numbers are each trial's final checkpoint.", ""]
    if skipped:
        md += [f"Not evaluated (no final/eval/* metrics): {', '.join(sorted(skipped))}.", ""]

    md += ["## Table 2 — harmful answers per benchmark", ""]
    paper = [b for b in PAPER_SAFETY if b in benches]
    header = key + [f"{b} (n={_cell(_n(trials, b), True)})" for b in benches]
    header += ["paper total", "harm score", "validation (λ choice)"]
    rows = [
        _trial_cols(t)
        + [_cell(t.get(f"{b}/n_harmful"), True) for b in benches]
        + [_cell(t.get("safety/n_harmful"), True), _cell(t.get("safety/harm_score"))]
        + [_val(t)]
        for t in trials
    ]
    md += _table(header, rows)
    if paper:
        md += [f"paper total: {' + '.join(paper)} (the paper's 518 prompts when all are run).", ""]
    md += _paper_grid(trials, choices, benches)
    md += _against_sft(trials)
    md += _best_per_method(best or [])

    md += ["## Over-refusal (Figure 3) — XSTest", ""]
    header = key + ["safe-prompt refusal", "unsafe-prompt compliance", "harmful rate"]
    header += ["degenerate answers", "commonest first word"]
    rows = [
        _trial_cols(t)
        + [
            _cell(t.get("xstest/safe_refusal_rate")),
            _cell(t.get("xstest/unsafe_compliance_rate")),
            _cell(t.get("safety/harmful_rate")),
            _cell(t.get(DEGENERATE)),
            _cell(t.get("answers/top_first_word_share")),
        ]
        for t in trials
    ]
    md += _table(header, rows)

    md += _judges_table(trials, key)

    tasks = sorted({k.split("/")[1] for t in trials for k in t.final if k.endswith("/acc")})
    md += ["## Table 1 — quality (lm-eval accuracy)", ""]
    if tasks:
        header = key + tasks + ["mean"]
        rows = [
            _trial_cols(t)
            + [_cell(t.get(f"quality/{task}/acc")) for task in tasks]
            + [_cell(t.get("quality/mean_acc"))]
            for t in trials
        ]
        md += _table(header, rows)
    else:
        md += ["No quality metrics (eval.quality_tasks was empty).", ""]

    sets = sorted({k.split("/")[1] for t in trials for k in t.final if k.startswith("nll/")})
    if sets:
        md += ["## Held-out response likelihood — mean NLL per token (eval.likelihood)", ""]
        header = key + [f"{s} (n={_cell(_n(trials, f'nll/{s}'), True)})" for s in sets]
        rows = [_trial_cols(t) + [_cell(t.get(f"nll/{s}")) for s in sets] for t in trials]
        md += _table(header, rows)
        md += [NLL_NOTE, ""]

    if any(len(s.trials) > 1 for s in seed_groups(trials)):
        md += _seeds_table(trials)

    md += ["## Chosen λ", "", f"Rule: {rule}", ""]
    if choices:
        rows = [
            [c.model, c.method, str(c.toxic), c.trial.lam_text, c.setting.seeds]
            + [_cell(c.setting.mean("safety/n_harmful"), True), _val(c.setting)]
            + [_cell(c.setting.mean("quality/mean_acc")), c.reason]
            for c in choices
        ]
        header = ["model", "method", "toxic", "λ", "seeds", "harmful", "validation", "quality"]
        md += _table(header + ["why"], rows)
    else:
        md += ["No penalty-method trials with safety metrics: nothing to choose.", ""]

    md += ["## Figures", "", f"![harm score vs step]({FIG2})", "", f"![over-refusal]({FIG3})", ""]
    md += ["## Runs", ""]
    md += _table(["trial", "MLflow run"], [[t.label, t.run_id] for t in trials])
    return "\n".join(md)


def _against_sft(trials: list[Trial]) -> list[str]:
    """The safety measures with their 95 % intervals, and each method against its SFT trial."""
    header, rows = method_rows(trials)
    md = ["## Against SFT — 95 % intervals", ""]
    md += _table(header, rows)
    md += [
        "Harmful answers: count on the paper's prompts run, Wilson interval. Held-out harmful "
        "NLL: mean over the held-out harmful responses (eval.likelihood `harmful`) of each "
        "one's NLL per token, mean ± 1.96 s/√n; higher = the model finds harmful answers less "
        "likely. Separated: the two intervals do not overlap, on the safer side.",
        "",
    ]
    lines = separation_lines(trials)
    return md + ([f"- {line}" for line in lines] + [""] if lines else [])


def _best_per_method(rows: list[MethodBest]) -> list[str]:
    """Each method's best feasible setting, beside the settings and steps it was given."""
    if not rows:
        return []
    header, cells = best_table(rows)
    md = ["## Best feasible setting per method", ""] + _table(header, cells)
    return md + [
        "Every setting of a method competes (λ, toxic count, optimiser settings); trial-steps: "
        "training steps of all its trials. Harmful answers on the reported prompts, summed "
        "over seeds.",
        "",
    ]


def _judges_table(trials: list[Trial], key: list[str]) -> list[str]:
    """With eval.judges: each judge's harmful rate on the same harm-prompt answers and each
    pair's Cohen's κ, per trial — how much the safety numbers depend on the judge."""
    rates = sorted({k for t in trials for k in t.final if k.startswith("judge/")})
    kappas = sorted({k for t in trials for k in t.final
                     if k.startswith("agreement/") and k.endswith("/kappa")})  # fmt: skip
    if not rates:
        return []
    header = key + [k.split("/")[1] for k in rates]
    header += [f"κ {k.split('/')[1].replace('_vs_', ' vs ')}" for k in kappas]
    rows = [_trial_cols(t) + [_cell(t.get(k)) for k in rates + kappas] for t in trials]
    md = ["## Judges — harmful rate on the harm prompts, and agreement (eval.judges)", ""]
    md += _table(header, rows)
    md += [
        "Every answer scored by each judge; κ is Cohen's, 1 = the same verdicts, 0 = no "
        "better than their rates' chance agreement. The tables above use eval.judge.",
        "",
    ]
    return md


def _paper_grid(trials: list[Trial], choices: list[Choice], benches: list[str]) -> list[str]:
    """Table 2 as the paper lays it out: benchmarks down, method × toxic count across, each
    penalty method at its chosen λ (SFT has none); means over seeds where there are several."""
    md: list[str] = []
    for model in sorted({t.model for t in trials}):
        groups = seed_groups(trials)
        cols = [s for s in groups if s.first.model == model and s.first.method == "sft"]
        cols += [c.setting for c in choices if c.model == model]
        cols.sort(key=lambda s: (s.first.toxic, method_rank(s.first.method)))
        if not cols:
            continue
        md += [f"### {model}: at the chosen λ", ""]
        rows = [[b] + [_cell(s.mean(f"{b}/n_harmful"), True) for s in cols] for b in benches]
        rows.append(["paper total"] + [_cell(s.mean("safety/n_harmful"), True) for s in cols])
        rows.append(["harm score"] + [_cell(s.mean("safety/harm_score")) for s in cols])
        md += _table(["benchmark"] + [s.label for s in cols], rows)
    return md


def _n(trials: list[Trial], bench: str) -> float | None:
    return next((t.final[f"{bench}/n"] for t in trials if f"{bench}/n" in t.final), None)


def format_trials(trials: list[Trial]) -> str:
    """The terminal table: per trial, both safety measures with their 95 % intervals,
    safe-prompt refusals and quality; then each method against its SFT trial."""
    header, rows = method_rows(trials)
    lines = separation_lines(trials)
    return plain_table(header, rows) + ("\n\n" + "\n".join(lines) if lines else "")


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart: for the terminal."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
