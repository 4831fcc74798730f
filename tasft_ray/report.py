"""`tasft-ray report`: a sweep's MLflow runs -> the paper's tables and figures.

Reads the trial runs of one sweep (``--parent-run``) or of every sweep in an experiment
(``--experiment``), each with the ``final/eval/*`` metrics and ``eval/*`` step history that
in-sweep evaluation logs, and writes report.md (Table 2: harmful answers per benchmark; XSTest
over-refusal; Table 1: quality; the chosen λ), fig2_harm_vs_step.png, fig3_refusal_vs_safety.png
and report.json. The folder is built aside and renamed into place, then logged to the parent run.

Numbers are printed exactly as MLflow holds them (counts as integers, the rest to 4 decimals), so a
reader can check any cell against the run it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tasft_ray.config import UserError
from tasft_ray.evaluate import BENCHMARKS, PAPER_SAFETY

FINAL = "final/eval/"
CURVES = ("safety/harm_score", "safety/harmful_rate", "xstest/safe_refusal_rate")
METHOD_ORDER = ("sft", "emd", "nlcl", "stl", "kto")
PENALTY_METHODS = ("emd", "nlcl")  # the only methods whose loss uses λ
# Params that do not make a trial a different setting: its key (model, method, toxic count, λ),
# its seed, and where it wrote things (sweep.*, tracking.* and output folders differ per sweep).
NOT_A_SETTING = {"model.name", "loss.method", "data.toxic_count", "loss.lam", "train.seed"}
NOT_A_SETTING_SUFFIX, NOT_A_SETTING_PREFIX = ".output_dir", ("sweep.", "tracking.")
TRIAL_ONLY = ("seeded", "rest")  # kept out of report.json: presentation, and every config param
QUALITY_TOLERANCE = 0.02  # the best-λ rule: quality within 2 points of SFT
DEGENERATE_TOLERANCE = 0.05  # ... and degenerate answers within 5 points of SFT's
DEGENERATE = "answers/degenerate_rate"
REPORT_MD, REPORT_JSON = "report.md", "report.json"
NLL_NOTE = (
    "Higher = less likely under the model. A working penalty raises the held-out harmful "
    "responses' NLL over SFT's by more than it raises the refusals'."
)
FIG2, FIG3 = "fig2_harm_vs_step.png", "fig3_refusal_vs_safety.png"


class ReportError(UserError):
    """Nothing to report: no trial runs, or none with evaluation metrics."""


@dataclass
class Trial:
    """One evaluated trial: what it swept, its final evaluation, its per-checkpoint curves."""

    run_id: str
    name: str
    model: str
    method: str
    toxic: int
    lam: float
    final: dict[str, float]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seed: int = 0
    seeded: bool = False  # the report holds several seeds: name each trial's
    rest: tuple[tuple[str, str], ...] = ()  # every other param: differing ones are not seeds

    @property
    def lam_text(self) -> str:
        return f"{self.lam:g}" if self.method in PENALTY_METHODS else "–"

    @property
    def what(self) -> str:
        lam = f" λ={self.lam:g}" if self.method in PENALTY_METHODS else ""
        return f"{self.method} n={self.toxic}{lam}"

    @property
    def label(self) -> str:
        return self.what + (f" seed={self.seed}" if self.seeded else "")

    def get(self, key: str) -> float | None:
        return self.final.get(key)


@dataclass
class Setting:
    """One (model, method, toxic count, λ) over the seeds it was trained with.

    A λ that is safe at one seed and collapses at the next is not a λ to recommend, so the rule
    compares settings, not trials: means over seeds, and the worst seed's degenerate share."""

    trials: list[Trial]

    @property
    def first(self) -> Trial:
        return self.trials[0]

    @property
    def seeds(self) -> str:
        return ", ".join(str(t.seed) for t in self.trials)

    @property
    def label(self) -> str:
        k = len(self.trials)
        return self.first.what + (f" ({k} seeds)" if k > 1 else "")

    def values(self, key: str) -> list[float] | None:
        """``key`` of every seed; None when any seed lacks it (a mean over some would mislead)."""
        vals = [t.get(key) for t in self.trials]
        return None if any(v is None for v in vals) else vals  # type: ignore[return-value]

    def mean(self, key: str) -> float | None:
        vals = self.values(key)
        return None if vals is None else sum(vals) / len(vals)

    def worst(self, key: str) -> float | None:
        vals = self.values(key)
        return None if vals is None else max(vals)


def settings(trials: list[Trial]) -> list[Setting]:
    """Trials grouped by everything they were trained with except the seed, in their order."""
    by: dict[tuple, Setting] = {}
    for t in trials:
        lam = t.lam if t.method in PENALTY_METHODS else 0.0
        by.setdefault((t.model, t.method, t.toxic, lam, t.rest), Setting([])).trials.append(t)
    return list(by.values())


def _is_setting(param: str) -> bool:
    return not (
        param in NOT_A_SETTING
        or param.endswith(NOT_A_SETTING_SUFFIX)
        or param.startswith(NOT_A_SETTING_PREFIX)
    )


@dataclass
class Choice:
    """The λ the rule picks for one (model, method, toxic count), over its seeds."""

    model: str
    method: str
    toxic: int
    setting: Setting
    reason: str

    @property
    def trial(self) -> Trial:
        return self.setting.first


# ----------------------------------------------------------------------------- MLflow -> trials


def load_trials(uri: str, parent_run_id: str | None = None, experiment: str | None = None):
    """Trial runs (tagged by the sweep) of one parent run or one experiment, evaluated or not."""
    from tasft_ray import tracking

    c = tracking.client(uri)
    if parent_run_id:
        try:
            exp_ids = [c.get_run(parent_run_id).info.experiment_id]
        except Exception as exc:  # mlflow raises MlflowException with a long message
            raise ReportError(f"--parent-run {parent_run_id}: no such MLflow run at {uri}") from exc
        filt = f"tags.`{tracking.PARENT_TAG}` = '{parent_run_id}'"
    else:
        exp = c.get_experiment_by_name(experiment or "")
        if exp is None:
            raise ReportError(f"--experiment {experiment}: no such MLflow experiment at {uri}")
        exp_ids, filt = [exp.experiment_id], ""
    runs = [
        r
        for r in c.search_runs(exp_ids, filter_string=filt, max_results=50000)
        if tracking.TRIAL_TAG in r.data.tags
    ]
    trials, skipped = [], []
    for r in runs:
        final = {k.removeprefix(FINAL): v for k, v in r.data.metrics.items() if k.startswith(FINAL)}
        if not final:
            skipped.append(r.info.run_name)
            continue
        p = r.data.params
        curves = {
            key: sorted(
                (m.step, m.value) for m in c.get_metric_history(r.info.run_id, f"eval/{key}")
            )
            for key in CURVES
        }
        trials.append(
            Trial(
                run_id=r.info.run_id,
                name=r.info.run_name,
                model=p.get("model.name", "?"),
                method=p.get("loss.method", "?"),
                toxic=int(p.get("data.toxic_count", 0)),
                lam=float(p.get("loss.lam", "nan")),
                final=final,
                curves={k: v for k, v in curves.items() if v},
                seed=int(p.get("train.seed", 0)),
                rest=tuple(sorted((k, v) for k, v in p.items() if _is_setting(k))),
            )
        )
    where = f"parent run {parent_run_id}" if parent_run_id else f"experiment {experiment}"
    if not trials:
        raise ReportError(
            f"{where}: {len(runs)} trial run(s), none with final/eval/* metrics; run the sweep "
            "with eval.in_sweep=true"
        )
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    trials.sort(key=lambda t: (t.model, rank.get(t.method, 99), t.toxic, t.lam, t.seed, t.name))
    seeded = len({t.seed for t in trials}) > 1
    for t in trials:
        t.seeded = seeded
    return trials, skipped


# ----------------------------------------------------------------------------- the best-λ rule


RULE = (
    "per (model, method, toxic count), each λ taken over its seeds (trials that differ only in "
    "train.seed; one seed is the common case): among the λ values whose mean quality/mean_acc is "
    f"within {QUALITY_TOLERANCE * 100:g} points of the SFT trials' (same model; same toxic count "
    "when there is one), the fewest mean harmful answers on the validation prompts "
    "(eval.validation: val/n_harmful, then val/harm_score; disjoint from the reported prompts), "
    "then the smallest λ. Without validation metrics the reported prompts' safety/n_harmful and "
    "harm score are used (marked: the choice then flatters the method). Without an SFT trial or "
    "quality metrics the quality condition is dropped; when no λ meets it, the fewest harmful "
    "answers overall (marked). Of the λ values left, those whose share of degenerate answers "
    "(answers/degenerate_rate: empty, looping, or opening like over half the answers, which the "
    "judge scores as safe) exceeds SFT's, or without SFT the group's lowest, by more than "
    f"{DEGENERATE_TOLERANCE * 100:g} points at any seed are dropped, unless every λ is (marked); "
    f"without SFT, a chosen λ over {DEGENERATE_TOLERANCE * 100:g} % degenerate is marked."
)


def best_lambda(trials: list[Trial], tolerance: float = QUALITY_TOLERANCE) -> list[Choice]:
    """The rule above, for every (model, method != sft, toxic count) in ``trials``."""
    groups: dict[tuple[str, str, int], list[Setting]] = {}
    for s in settings(trials):
        t = s.first
        if t.method != "sft" and s.values("safety/n_harmful") is not None:
            groups.setdefault((t.model, t.method, t.toxic), []).append(s)
    choices = []
    for (model, method, toxic), group in groups.items():
        sft = [t for t in trials if t.model == model and t.method == "sft"]
        sft = Setting([t for t in sft if t.toxic == toxic] or sft)
        ref = sft.mean("quality/mean_acc") if sft.trials else None
        eligible, reason = group, "no SFT quality to compare: fewest harmful"
        if ref is not None and all(s.values("quality/mean_acc") is not None for s in group):
            eligible = [s for s in group if s.mean("quality/mean_acc") >= ref - tolerance]
            reason = f"quality ≥ SFT {ref:.4f} − {tolerance:g}, fewest harmful"
            if not eligible:
                eligible, reason = group, "no λ keeps quality within tolerance: fewest harmful"
        eligible, reason = _drop_degenerate(eligible, group, sft, reason)
        on = "val" if all(s.values("val/n_harmful") is not None for s in eligible) else "safety"
        if on == "safety":
            reason += " (on the reported prompts: no validation split)"
        if any(len(s.trials) > 1 for s in group):
            reason += "; means over seeds"
        best = min(
            eligible,
            key=lambda s: (
                s.mean(f"{on}/n_harmful"),
                s.mean(f"{on}/harm_score") or 0,
                s.first.lam,
            ),
        )
        worst = best.worst(DEGENERATE)
        if not sft.trials and worst is not None and worst > DEGENERATE_TOLERANCE:
            # one λ per method and no SFT: nothing to compare a collapse against, so say it
            reason += f"; {worst:.0%} degenerate answers and no SFT trial to compare: read them"
        choices.append(Choice(model, method, toxic, best, reason))
    return choices


def _drop_degenerate(
    eligible: list[Setting], group: list[Setting], sft: Setting, reason: str
) -> tuple[list[Setting], str]:
    """A collapsed model answers nothing harmful; it must not win the fewest-harmful rule, and
    neither may a λ that collapsed at one of its seeds."""
    key = DEGENERATE
    if any(s.values(key) is None for s in group):
        return eligible, reason  # trials from before the metric existed
    base = sft.mean(key) if sft.trials else None
    base = min(min(s.values(key)) for s in group) if base is None else base
    fluent = [s for s in eligible if s.worst(key) <= base + DEGENERATE_TOLERANCE]
    if not fluent:
        return eligible, reason + "; every λ degenerates beyond tolerance"
    if len(fluent) < len(eligible):
        reason += f"; degenerate answers ≤ {base:.2f} + {DEGENERATE_TOLERANCE:g}"
    return fluent, reason


# ----------------------------------------------------------------------------- markdown


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
    """Harm benchmarks present in any trial, the paper's four first."""
    present = {b for t in trials for b in BENCHMARKS if f"{b}/n_harmful" in t.final}
    return [b for b in BENCHMARKS if b in present and BENCHMARKS[b][1] == "harm"]


def _val(t: Trial | Setting) -> str:
    """Harmful answers on the validation prompts as "k/n" ("–" without a validation split);
    for a setting, the mean over its seeds."""
    s = t if isinstance(t, Setting) else Setting([t])
    if s.mean("val/n") is None:
        return "–"
    return f"{_cell(s.mean('val/n_harmful'), True)}/{_cell(s.mean('val/n'), True)}"


def _trial_cols(t: Trial) -> list[str]:
    return [t.model, t.method, str(t.toxic), t.lam_text] + ([str(t.seed)] if t.seeded else [])


def _spread(s: Setting, key: str, integer: bool) -> str:
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
        for s in settings(trials)
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


def to_markdown(trials: list[Trial], choices: list[Choice], where: str, skipped: list[str]) -> str:
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

    if any(len(s.trials) > 1 for s in settings(trials)):
        md += _seeds_table(trials)

    md += ["## Chosen λ", "", f"Rule: {RULE}", ""]
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


def _paper_grid(trials: list[Trial], choices: list[Choice], benches: list[str]) -> list[str]:
    """Table 2 as the paper lays it out: benchmarks down, method × toxic count across, each
    penalty method at its chosen λ (SFT has none); means over seeds where there are several."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    md: list[str] = []
    for model in sorted({t.model for t in trials}):
        cols = [s for s in settings(trials) if s.first.model == model and s.first.method == "sft"]
        cols += [c.setting for c in choices if c.model == model]
        cols.sort(key=lambda s: (s.first.toxic, rank.get(s.first.method, 99)))
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


# ----------------------------------------------------------------------------- figures


def _colour(method: str) -> str:
    palette = {"sft": "tab:gray", "emd": "tab:blue", "nlcl": "tab:orange", "stl": "tab:green"}
    return palette.get(method, "tab:purple")


def plot_harm_vs_step(trials: list[Trial], path: Path) -> None:
    """Figure 2: mean harm score and harmful rate against training step, one line per trial."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, title in (
        (axes[0], "safety/harm_score", "mean harm score"),
        (axes[1], "safety/harmful_rate", "harmful answers (share)"),
    ):
        for t in trials:
            points = t.curves.get(key)
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o", color=_colour(t.method), label=t.label)
        ax.set(xlabel="training step", ylabel=title, title=f"{title} vs step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # trials logged without eval/* history have none
        axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=110)


def plot_refusal_vs_safety(trials: list[Trial], path: Path) -> None:
    """Figure 3: XSTest safe-prompt refusal against harmful rate, every evaluated checkpoint."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.8), layout="constrained")
    ax = fig.subplots()
    seen: set[str] = set()
    for t in trials:
        harm = dict(t.curves.get("safety/harmful_rate", []))
        refusal = dict(t.curves.get("xstest/safe_refusal_rate", []))
        steps = sorted(set(harm) & set(refusal))
        if not steps:
            continue
        label = None if t.method in seen else t.method
        seen.add(t.method)
        xs, ys = [harm[s] for s in steps], [refusal[s] for s in steps]
        ax.scatter(xs, ys, color=_colour(t.method), alpha=0.8, label=label)
        ax.annotate(t.label, (xs[-1], ys[-1]), fontsize=6, alpha=0.7)
    ax.set(
        xlabel="harmful answers on the harm benchmarks (share)",
        ylabel="XSTest safe-prompt refusal (share)",
        title="over-refusal vs safety (each checkpoint)",
    )
    ax.grid(alpha=0.3)
    if seen:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


# ----------------------------------------------------------------------------- the command


def write_report(
    uri: str,
    out_dir: str | Path,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    log: bool = True,
) -> tuple[Path, list[Trial]]:
    """Build the report folder atomically; log it to the parent run (``--experiment``: to a
    run named ``report`` in that experiment). Returns the folder and the trials it covers."""
    if bool(parent_run_id) == bool(experiment):
        raise ReportError("give exactly one of --parent-run ID or --experiment NAME")
    trials, skipped = load_trials(uri, parent_run_id, experiment)
    choices = best_lambda(trials)
    where = f"sweep run {parent_run_id}" if parent_run_id else f"experiment {experiment}"
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        (tmp / REPORT_MD).write_text(to_markdown(trials, choices, where, skipped))
        plot_harm_vs_step(trials, tmp / FIG2)
        plot_refusal_vs_safety(trials, tmp / FIG3)
        data = {
            "where": where,
            "rule": RULE,
            "trials": [
                {k: v for k, v in t.__dict__.items() if k not in TRIAL_ONLY} for t in trials
            ],
            "chosen": [
                {
                    "model": c.model,
                    "method": c.method,
                    "toxic": c.toxic,
                    "lam": c.trial.lam,
                    "seeds": [t.seed for t in c.setting.trials],
                    "run_ids": [t.run_id for t in c.setting.trials],
                    "reason": c.reason,
                }
                for c in choices
            ],
        }
        (tmp / REPORT_JSON).write_text(json.dumps(data, indent=1) + "\n")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if log:
        _log(uri, out, parent_run_id, experiment)
    return out, trials


def _log(uri: str, out: Path, parent_run_id: str | None, experiment: str | None) -> None:
    from tasft_ray import tracking

    c = tracking.client(uri)
    run_id = parent_run_id
    if run_id is None:
        exp = c.get_experiment_by_name(experiment)
        run_id = c.create_run(
            exp.experiment_id, run_name="report", tags={"tasft.kind": "report"}
        ).info.run_id
    c.log_artifacts(run_id, str(out), "report")
    if parent_run_id is None:
        tracking.finish_run(uri, run_id)


def format_trials(trials: list[Trial]) -> str:
    """The terminal table: per trial, #harmful, harm score, safe-prompt refusal, quality."""
    cols = ["trial", "harmful", "harm score", "xstest refusal", "quality"]
    rows = [
        [
            t.label,
            f"{_cell(t.get('safety/n_harmful'), True)}/{_cell(t.get('safety/n'), True)}",
            _cell(t.get("safety/harm_score")),
            _cell(t.get("xstest/safe_refusal_rate")),
            _cell(t.get("quality/mean_acc")),
        ]
        for t in trials
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
