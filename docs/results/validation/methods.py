"""Issue 33's table: per method, the setting it was given, its harmful answers on all 518 prompts
pooled over seeds (95 % Wilson interval), XSTest-safe refusals, quality, degenerate answers and
the training steps spent on it, read from the report.json files of the sweeps in this folder.

The seeds ran on different boxes, so no one MLflow store holds every trial (`tasft-ray report`
makes the same table, "Best feasible setting per method", from one store). The SFT search ran
with validation only; `export-search` writes its trials from MLflow once, beside its report.

    python docs/results/validation/methods.py        # the table ("Six methods at two seeds")
    python docs/results/validation/methods.py export-search --parent-run ID   # once: the search
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

from tasft_ray.config import ObjectiveConfig
from tasft_ray.report.against_sft import count_text
from tasft_ray.stats import wilson
from tasft_ray.tracking import client

HERE = Path(__file__).parent
SEARCH = HERE / "sft-optimization" / "search.json"
# label, method, the folders whose report.json hold its seeds, how many of the SFT search's
# trials (in the order they started, its reference first) had run when the row's setting was chosen
ROWS = [
    ("SFT, default optimiser (lr 5e-4, 32 steps, batch 8)", "sft", ["full", "full-seed1"], 0),
    ("SFT, optimiser searched: best of 5 settings (lr 6.9e-4, 32 steps, batch 16)", "sft",
     ["sft-searched"], 6),
    ("SFT, best of the search's first 3 settings (lr 1.83e-4, 16 steps, batch 8)", "sft",
     ["sft-searched-lr1.8e-4"], 3),
    ("EMD λ 16", "emd", ["full", "full-seed1"], 0),
    ("NLCL (token) λ 4", "nlcl", ["full", "full-seed1"], 0),
    ("STL", "stl", ["full", "full-seed1"], 0),
    ("KTO", "kto", ["full", "full-seed1"], 0),
    ("STAR-DSS", "star", ["star", "full-seed1"], 0),
]


def trials_of(method: str, folders: list[str]) -> list[dict]:
    out = []
    for folder in folders:
        path = HERE / folder / "report.json"
        if not path.exists():  # a sweep not run (yet)
            continue
        out += [t for t in json.loads(path.read_text())["trials"] if t["method"] == method]
    return out


def steps_of(t: dict) -> int:
    """Training steps; the oldest report.json (full/) predates the field: its last curve point."""
    return t.get("steps") or max(s for s, _ in t["curves"]["safety/harm_score"])


def table() -> str:
    search = json.loads(SEARCH.read_text()) if SEARCH.exists() else None
    lines = [
        "| method, setting | seeds | harmful / 518 per seed "
        "| **harmful, seeds pooled (95 % Wilson)** | XSTest-safe refused | quality (mean acc) "
        "| degenerate | trial-steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pooled = {}
    for label, method, folders, search_trials in ROWS:
        trials = trials_of(method, folders)
        if not trials:
            lines.append(f"| {label} | – | not run | | | | | |")
            continue
        f = [t["final"] for t in trials]
        k, n = round(sum(x["safety/n_harmful"] for x in f)), round(sum(x["safety/n"] for x in f))
        interval = pooled[label] = wilson(k, n)
        refused = round(sum(x["xstest/safe_refusal_rate"] * x["xstest_safe/n"] for x in f))
        safe_n = round(sum(x["xstest_safe/n"] for x in f))
        quality = sum(x["quality/mean_acc"] for x in f) / len(f)
        degenerate = [x.get("answers/degenerate_rate") for x in f]
        steps = sum(steps_of(t) for t in trials)
        if search:
            started = sorted(search["trials"], key=lambda t: t["start_time"])
            steps += sum(t["steps"] for t in started[:search_trials])
        lines.append(
            f"| {label} | {', '.join(str(t.get('seed', 0)) for t in trials)} "
            f"| {', '.join(str(round(x['safety/n_harmful'])) for x in f)} "
            f"| **{count_text(interval)}** "
            f"| {refused}/{safe_n} | {quality:.3f} "
            f"| {', '.join('–' if d is None else f'{d:.1%}' for d in degenerate)} | {steps} |"
        )
    lines.append("")
    names = list(pooled)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            word = "overlap (within noise)" if pooled[a].overlaps(pooled[b]) else "apart"
            lines.append(f"- {a} vs {b}: {word}")
    return "\n".join(lines)


def export_search(parent_run: str, uri: str) -> None:
    """The search's trials — setting, training steps, last validation, feasibility under the
    search's own objective against its SFT reference — to sft-optimization/search.json."""
    c = client(uri)
    parent = c.get_run(parent_run)
    logged = ast.literal_eval(parent.data.params["sweep.objective"])
    objective = ObjectiveConfig.model_validate(logged).build()
    runs = c.search_runs([parent.info.experiment_id],
                         filter_string=f"tags.mlflow.parentRunId = '{parent_run}'")  # fmt: skip
    trials = []
    for r in runs:
        p, m = r.data.params, r.data.metrics
        trials.append({
            "run_name": r.info.run_name, "status": r.info.status, "start_time": r.info.start_time,
            "role": r.data.tags.get("tasft.role", ""),
            "lr": float(p["train.lr"]), "max_steps": int(p["train.max_steps"]),
            "grad_accum": int(p["train.grad_accum"]),
            "steps": int(max((h.step for h in c.get_metric_history(r.info.run_id, "loss/total")),
                             default=0)),
            "validation": {k: v for k, v in m.items() if k.startswith("val/")},
        })  # fmt: skip
    reference = next((t["validation"] for t in trials if t["role"] == "reference"), None)
    for t in trials:
        t["feasible"] = bool(t["validation"]) and objective.feasible(t["validation"], reference)
        t["objective"] = objective.value(t["validation"]) if t["validation"] else None
    SEARCH.parent.mkdir(exist_ok=True)
    tmp = SEARCH.with_suffix(".tmp")
    tmp.write_text(json.dumps({"parent_run": parent_run, "objective": objective.describe(),
                               "trials": trials}, indent=1) + "\n")  # fmt: skip
    tmp.replace(SEARCH)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    ex = sub.add_parser("export-search")
    ex.add_argument("--parent-run", required=True)
    ex.add_argument("--uri", default="sqlite:///mlflow.db")
    args = ap.parse_args()
    if args.cmd == "export-search":
        export_search(args.parent_run, args.uri)
    print(table())


if __name__ == "__main__":
    main()
