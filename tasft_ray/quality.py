"""Quality (the paper's Table 1): PIQA, BoolQ, OpenBookQA accuracy by log-likelihood, via lm-eval.

The sets come from the shipped files through the data registry (never the hub): each is
normalised to JSONL {question, context, choices, label} in a temp folder and given to
lm-evaluation-harness as a task config over a local ``json`` dataset; the model is passed in
memory (base + adapter merged), so no checkpoint conversion is needed. Prompts follow
lm-eval's own task configs for these sets.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from tasft_ray.config import ConfigError, SourceConfig
from tasft_ray.data.sources import load_source

log = logging.getLogger(__name__)

# task -> prompt template (Jinja, over the normalised fields)
QUALITY_TASKS: dict[str, str] = {
    "piqa": "Question: {{question}}\nAnswer:",
    "boolq": "{{context}}\nQuestion: {{question}}?\nAnswer:",
    "openbookqa": "{{question}}",
}


def write_docs(task: str, folder: Path, root: str | None, limit: int | None) -> Path:
    """The shipped set as lm-eval-ready JSONL (first ``limit`` docs)."""
    examples = load_source(SourceConfig(name=task), root)[:limit]
    path = folder / f"{task}.jsonl"
    with path.open("w") as f:
        for ex in examples:
            meta = ex.meta_dict
            doc = {
                "question": ex.instruction,
                "context": ex.input,
                "choices": json.loads(meta["choices"]),
                "label": int(meta["label"]),
            }
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return path


def task_config(task: str, docs: Path) -> dict[str, Any]:
    """An lm-eval multiple-choice task over a local JSONL file."""
    return {
        "task": f"tasft_{task}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": QUALITY_TASKS[task],
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": " ",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    }


def run_quality(
    lm, tasks: list[str], root: str | None, limit: int | None = None
) -> dict[str, float]:
    """Accuracy per task (``quality/<task>/acc``, ``acc_norm``) and their mean.

    Args:
        lm: an ``lm_eval.api.model.LM`` — ``hf_lm(model, tokenizer)`` for a real model.
        tasks: names in QUALITY_TASKS. root: data root (None: $TASFT_DATA_DIR, cache, download).
        limit: docs per task (None: all).
    """
    unknown = [t for t in tasks if t not in QUALITY_TASKS]
    if unknown:
        raise ConfigError(f"eval.quality_tasks: unknown {unknown}; known: {list(QUALITY_TASKS)}")
    try:
        from lm_eval import simple_evaluate
    except ImportError:
        raise ConfigError("eval.quality_tasks needs lm-eval: pip install 'lm-eval>=0.4'") from None
    with tempfile.TemporaryDirectory(prefix="tasft_quality_") as tmp:
        configs = [task_config(t, write_docs(t, Path(tmp), root, limit)) for t in tasks]
        out = simple_evaluate(model=lm, tasks=configs, log_samples=False, verbosity="WARNING")
    metrics: dict[str, float] = {}
    for t in tasks:
        res = out["results"][f"tasft_{t}"]
        metrics[f"quality/{t}/acc"] = float(res["acc,none"])
        metrics[f"quality/{t}/acc_norm"] = float(res["acc_norm,none"])
    if tasks:
        metrics["quality/mean_acc"] = sum(metrics[f"quality/{t}/acc"] for t in tasks) / len(tasks)
    return metrics


def hf_lm(model, tokenizer, batch_size: int = 8):
    """lm-eval's HF wrapper around an in-memory model (a peft model is merged first)."""
    from lm_eval.models.huggingface import HFLM

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return HFLM(pretrained=model.eval(), tokenizer=tokenizer, batch_size=batch_size)
