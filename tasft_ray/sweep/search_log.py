"""A search's record on the sweep's parent MLflow run: the objective, the best trial and its
numbers as metrics, the search's history (each trial's objective, in the order they ran), and,
for a multi-objective search, the Pareto front as a table and a plot."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.files import write_atomic
from tasft_ray.objective import Objective, pareto_front
from tasft_ray.report.markdown import plain_table

PARETO_MD, PARETO_JSON, PARETO_PNG = "pareto.md", "pareto.json", "pareto.png"


def best_trial(objective: Objective, finals: dict[str, dict], reference: dict | None):
    """The feasible trial with the best objective (its name), or None."""
    return objective.best(list(finals.items()), reference)


def log_search(
    uri: str,
    parent: str,
    objective: Objective,
    finals: dict[str, dict],
    labels: dict[str, str],
    reference: dict | None,
) -> str | None:
    """Log the search on the parent run; returns the best trial's name. ``finals``: each
    trial's last result (Tune's order), ``labels``: each trial's setting."""
    c = tracking.client(uri)
    c.set_tag(parent, "tasft.objective", objective.describe())
    for i, metrics in enumerate(finals.values()):
        score = objective.score(metrics, reference)
        if math.isfinite(score):
            c.log_metric(parent, "search/objective", score, step=i)
    best = best_trial(objective, finals, reference)
    if best is not None:
        c.set_tag(parent, "tasft.best_trial", labels.get(best, best))
        for key in objective.metrics:
            if key in finals[best]:
                c.log_metric(parent, f"best/{key}", float(finals[best][key]))
    if reference:
        for key, value in reference.items():
            c.log_metric(parent, f"reference/{key}", float(value))
    if objective.pareto:
        with tempfile.TemporaryDirectory(prefix="tasft_pareto_") as tmp:
            front = write_pareto(Path(tmp), objective, finals, labels, reference)
            c.log_artifacts(parent, tmp, "search")
        c.log_metric(parent, "search/pareto_size", len(front))
    return best


def write_pareto(folder: Path, objective: Objective, finals: dict[str, dict],
                 labels: dict[str, str], reference: dict | None) -> list[str]:  # fmt: skip
    """pareto.md / .json / .png in ``folder``: the front among the feasible trials."""
    directions = dict(objective.pareto)
    feasible = [(k, m) for k, m in finals.items() if not objective.violations(m, reference)]
    front = pareto_front(feasible, directions)
    keys = list(directions)
    rows = [[labels.get(k, k), *(f"{finals[k][x]:.4f}" for x in keys)] for k in front]
    head = ["trial", *(f"{x} ({d})" for x, d in directions.items())]
    write_atomic(folder / PARETO_MD, "Pareto front (feasible trials):\n\n```\n"
                 + plain_table(head, rows) + "\n```\n")  # fmt: skip
    data = [{"trial": k, "label": labels.get(k, k), **{x: finals[k][x] for x in keys}}
            for k in front]  # fmt: skip
    write_atomic(folder / PARETO_JSON, json.dumps(data, indent=1) + "\n")
    _plot(folder / PARETO_PNG, keys, finals, front, labels)
    return front


def _plot(path: Path, keys: list[str], finals: dict[str, dict], front: list[str], labels):
    from matplotlib.figure import Figure

    x, y = keys[0], keys[1] if len(keys) > 1 else keys[0]
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    pts = [(k, m) for k, m in finals.items() if x in m and y in m]
    ax.scatter([m[x] for _, m in pts], [m[y] for _, m in pts], color="tab:gray", alpha=0.5,
               label="trials")  # fmt: skip
    on = [(k, finals[k]) for k in front]
    ax.scatter([m[x] for _, m in on], [m[y] for _, m in on], color="tab:red", label="Pareto front")
    for k, m in on:
        ax.annotate(labels.get(k, k), (m[x], m[y]), fontsize=6)
    ax.set(xlabel=x, ylabel=y, title="search: Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
