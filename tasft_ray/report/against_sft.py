"""Each trial against its SFT trial, with 95 % intervals: is the method told apart from SFT?

Two safety measures, each with an interval (``tasft_ray.stats``): harmful answers on the paper's
prompts (a count out of n: Wilson) and the held-out harmful responses' NLL per token (a mean over
responses: mean ± 1.96 s/√n; ``eval.likelihood``'s ``harmful`` set, higher = the harmful
responses are less likely). A method is *separated from SFT* on a measure when the two
intervals do not overlap, on the safer side. The SFT trial compared with is the one that differs
only in method (report.rule.sft_reference), at the same seed when there is one.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasft_ray.report.rule import sft_reference
from tasft_ray.report.trials import SeedGroup, Trial
from tasft_ray.stats import Better, Interval, separation, wilson

NLL_SET = "harmful"  # the eval.likelihood label whose NLL is the second safety measure


@dataclass(frozen=True)
class Measure:
    """A safety measure: its name in the lines, how to read its interval, which side is safer."""

    name: str
    better: Better

    def of(self, t: Trial) -> Interval | None:
        if self.better == "lower":  # harmful answers
            n, k = t.get("safety/n"), t.get("safety/n_harmful")
            return wilson(int(k), int(n)) if n and k is not None else None
        keys = [f"nll/{NLL_SET}/{x}" for x in ("response_mean", "ci_low", "ci_high", "n")]
        got = [t.get(k) for k in keys]
        return None if any(v is None for v in got) else Interval(*got[:3], int(got[3]))

    def text(self, i: Interval) -> str:
        if self.better == "lower":
            return count_text(i)
        return f"{i.value:.3f} [{i.low:.3f}, {i.high:.3f}]"


def count_text(i: Interval) -> str:
    """A count's Wilson interval as the report prints it: ``k/n (rate [low, high])``."""
    return f"{round(i.value * i.n)}/{i.n} ({i.value:.1%} [{i.low:.1%}, {i.high:.1%}])"


MEASURES = (Measure("harmful answers", "lower"), Measure("held-out harmful NLL", "higher"))


def sft_of(t: Trial, trials: list[Trial]) -> Trial | None:
    """The SFT trial ``t`` is compared with: same model and other params, same seed if any."""
    group = sft_reference(SeedGroup([t]), trials).trials
    return next((s for s in group if s.seed == t.seed), group[0] if group else None)


def method_rows(trials: list[Trial]) -> tuple[list[str], list[list[str]]]:
    """Per trial: both safety measures with their intervals, XSTest-safe refusals, quality."""
    header = ["trial", *(m.name for m in MEASURES), "xstest safe refused", "quality"]
    rows = []
    for t in trials:
        cells = [t.label]
        for m in MEASURES:
            i = m.of(t)
            cells.append(m.text(i) if i else "–")
        n, rate = t.get("xstest_safe/n"), t.get("xstest/safe_refusal_rate")
        cells.append(f"{round(rate * n)}/{int(n)}" if n and rate is not None else "–")
        q = t.get("quality/mean_acc")
        cells.append(f"{q:.3f}" if q is not None else "–")
        rows.append(cells)
    return header, rows


def separation_lines(trials: list[Trial]) -> list[str]:
    """One line per trial of another method than SFT that has an SFT trial to compare with:
    per safety measure, both values and whether it is separated from SFT."""
    lines = []
    for t in trials:
        sft = sft_of(t, trials) if t.method != "sft" else None
        if sft is None:
            continue
        parts = []
        for m in MEASURES:
            mine, base = m.of(t), m.of(sft)
            if mine is None or base is None:
                continue
            verdict = separation(mine, base, m.better)
            parts.append(f"{m.name} {m.text(mine)} vs SFT {m.text(base)}: separated from SFT: "
                         f"{verdict}")  # fmt: skip
        if parts:
            lines.append(f"{t.label}: " + " · ".join(parts))
    return lines
