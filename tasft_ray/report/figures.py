"""Figures 2 and 3 of the paper from the trials' per-checkpoint curves."""

from __future__ import annotations

from pathlib import Path

from tasft_ray.report.trials import Trial

FIG2, FIG3 = "fig2_harm_vs_step.png", "fig3_refusal_vs_safety.png"


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
