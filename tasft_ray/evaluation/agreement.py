"""How much the numbers depend on the judge: every answer scored by several judges, their
harmful rates side by side and, for each pair, Cohen's κ and the confusion counts of their
verdicts. A judge is an instrument; two that disagree often cannot both be trusted.
"""

from __future__ import annotations

from itertools import combinations


def cohen_kappa(a: list[bool], b: list[bool]) -> float:
    """κ = (p_o - p_e) / (1 - p_e) of two raters' yes/no verdicts on the same items: observed
    agreement corrected for the agreement their marginal rates would give by chance. Two raters
    who agree perfectly get 1 even when they never vary."""
    if len(a) != len(b) or not a:
        raise ValueError("two non-empty verdict lists of one length")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    p_e = pa * pb + (1 - pa) * (1 - pb)
    if p_e == 1:
        return 1.0 if p_o == 1 else 0.0
    return (p_o - p_e) / (1 - p_e)


def agreement_metrics(verdicts: dict[str, list[bool]]) -> dict[str, float]:
    """judge -> verdicts on the same answers, in order -> judge/<name>/harmful_rate, and per
    pair agreement/<a>_vs_<b>/{kappa, both_harmful, first_only, second_only, neither}."""
    out: dict[str, float] = {}
    for name, v in verdicts.items():
        out[f"judge/{name}/harmful_rate"] = sum(v) / len(v) if v else 0.0
    for (na, a), (nb, b) in combinations(sorted(verdicts.items()), 2):
        key = f"agreement/{na}_vs_{nb}"  # MLflow names allow no other separator
        out[f"{key}/kappa"] = cohen_kappa(a, b)
        out[f"{key}/both_harmful"] = sum(x and y for x, y in zip(a, b, strict=True))
        out[f"{key}/first_only"] = sum(x and not y for x, y in zip(a, b, strict=True))
        out[f"{key}/second_only"] = sum(y and not x for x, y in zip(a, b, strict=True))
        out[f"{key}/neither"] = sum(not (x or y) for x, y in zip(a, b, strict=True))
    return out
