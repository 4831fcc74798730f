"""What the sweep's parent run shows in the MLflow UI once its trials are done: how many
finished, the setting the sweep chose (as metrics, so the runs table can show and sort it) and
a plot of every trial's curves side by side, so no trial has to be opened to compare them.

The choice itself is made elsewhere (the objective's search log; the report's best-λ rule,
which logs its own ``chosen/*`` metrics); this only records it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasft_ray import tracking

CURVES_PNG = "trial_curves.png"
CURVE_KEYS = (  # (metric, panel title): training, then validation when the trials had it
    ("loss/total", "training loss (loss/total)"),
    ("val/harm_score", "validation harm score (val/harm_score)"),
    ("eval/safety/harmful_rate", "harmful answers per checkpoint (eval/safety/harmful_rate)"),
)


def log_counts(uri: str, parent: str, status: dict[str, str]) -> None:
    """trials/<how each ended> on the parent run."""
    counts: dict[str, int] = {}
    for st in status.values():
        counts[st] = counts.get(st, 0) + 1
    c = tracking.client(uri)
    for st in ("ok", "error", "stopped early", "unfinished"):
        c.log_metric(parent, f"trials/{st.replace(' ', '_')}", counts.get(st, 0))


def log_best_setting(uri: str, parent: str, lam: float, toxic: int) -> None:
    """The objective's best trial as numbers (its label is the tasft.best_trial tag)."""
    c = tracking.client(uri)
    c.log_metric(parent, "best/lam", lam)
    c.log_metric(parent, "best/toxic_count", toxic)


def plot_trial_curves(uri: str, parent: str) -> Path | None:
    """trial_curves.png: each curve key that any child run logged, one line per trial (by its
    setting name), logged to the parent run; returns the file or None when no trial has a
    curve."""
    from matplotlib.figure import Figure

    c = tracking.client(uri)
    runs = sorted(tracking.child_runs(uri, parent), key=lambda r: r.info.run_name or "")
    curves: dict[str, dict[str, list]] = {key: {} for key, _ in CURVE_KEYS}
    for r in runs:
        for key, points in curves.items():
            history = c.get_metric_history(r.info.run_id, key)
            points[r.info.run_name] = sorted((m.step, m.value) for m in history)
    panels = [(k, t) for k, t in CURVE_KEYS if any(curves[k].values())]
    if not panels:
        return None
    fig = Figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, points in curves[key].items():
            if points:
                ax.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None,
                        label=name)  # fmt: skip
        ax.set(xlabel="training step", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    with tempfile.TemporaryDirectory(prefix="tasft_curves_") as tmp:
        path = Path(tmp) / CURVES_PNG
        fig.savefig(path, dpi=100)
        c.log_artifact(parent, str(path))
    return Path(CURVES_PNG)
