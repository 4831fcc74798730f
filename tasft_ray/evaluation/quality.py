"""Quality (the paper's Table 1): PIQA, BoolQ, OpenBookQA accuracy by log-likelihood, via lm-eval.

The sets come from the shipped files through the data registry (never the hub): each is
normalised to JSONL {question, context, choices, label} in a temp folder and given to
lm-evaluation-harness as a task config over a local ``json`` dataset; the model is passed in
memory (base + adapter merged), so no checkpoint conversion is needed. Prompts follow
lm-eval's own task configs for these sets.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from tasft_ray.config import ConfigError, SourceConfig
from tasft_ray.data.records import Example
from tasft_ray.data.sources import load_source

log = logging.getLogger(__name__)

# task -> prompt template (Jinja, over the normalised fields)
QUALITY_TASKS: dict[str, str] = {
    "piqa": "Question: {{question}}\nAnswer:",
    "boolq": "{{context}}\nQuestion: {{question}}?\nAnswer:",
    "openbookqa": "{{question}}",
}


def quality_docs(task: str, root: str | None, limit: int | None) -> list[Example]:
    """The first ``limit`` docs of a quality set, from the data registry."""
    check_tasks([task])
    return load_source(SourceConfig(name=task), root)[:limit]


def check_tasks(tasks: list[str]) -> None:
    unknown = [t for t in tasks if t not in QUALITY_TASKS]
    if unknown:
        raise ConfigError(f"eval.quality_tasks: unknown {unknown}; known: {list(QUALITY_TASKS)}")


def write_docs(
    task: str,
    folder: Path,
    root: str | None,
    limit: int | None,
    examples: list[Example] | None = None,
) -> Path:
    """The set as lm-eval-ready JSONL (first ``limit`` docs, or the ``examples`` given)."""
    examples = quality_docs(task, root, limit) if examples is None else examples
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
    lm,
    tasks: list[str],
    root: str | None,
    limit: int | None = None,
    docs: dict[str, list[Example]] | None = None,
) -> dict[str, float]:
    """Accuracy per task (``quality/<task>/acc``, ``acc_norm``) and their mean.

    Args:
        lm: an ``lm_eval.api.model.LM`` — ``hf_lm(model, tokenizer)`` for a real model.
        tasks: names in QUALITY_TASKS. root: data root (None: $TASFT_DATA_DIR, cache, download).
        limit: docs per task (None: all). docs: task -> its docs, already loaded (a sweep's
            driver loads them once; then nothing is read from disk here).
    """
    check_tasks(tasks)
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("eval.quality_tasks needs lm-eval: pip install 'lm-eval>=0.4'") from None
    _quiet_lm_eval()
    with tempfile.TemporaryDirectory(prefix="tasft_quality_") as tmp:
        configs = [
            task_config(t, write_docs(t, Path(tmp), root, limit, (docs or {}).get(t)))
            for t in tasks
        ]
        # Our tasks are inline configs: without include_defaults=False, lm-eval indexes its
        # ~14,000 built-in task YAML files on every call (6-12 s of CPU each time: most of a
        # tiny model's validation, paid at every checkpoint of every trial)
        out = simple_evaluate(model=lm, tasks=configs, log_samples=False,
                              task_manager=TaskManager(include_defaults=False))  # fmt: skip
    metrics: dict[str, float] = {}
    for t in tasks:
        res = out["results"][f"tasft_{t}"]
        metrics[f"quality/{t}/acc"] = float(res["acc,none"])
        metrics[f"quality/{t}/acc_norm"] = float(res["acc_norm,none"])
    if tasks:
        metrics["quality/mean_acc"] = sum(metrics[f"quality/{t}/acc"] for t in tasks) / len(tasks)
    return metrics


def _quiet_lm_eval() -> None:
    """lm-eval's INFO lines (seeds, selected tasks, contexts built) and the datasets library's
    bar per task file: a run's console gets our one quality bar instead. lm-eval also runs
    ``git describe`` for its results' ``git_hash`` (which we never read) with git's stderr left on
    the console: "fatal: not a git repository" at every validation of a trial whose worker runs
    outside a git checkout (Ray's working dirs, a cluster node)."""
    import datasets
    from lm_eval import evaluator

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    evaluator.get_git_commit_hash = _no_git_hash


def _no_git_hash() -> None:
    return None


def hf_lm(model, tokenizer, batch_size: int = 8):
    """lm-eval's own HF wrapper around an in-memory model (a peft model is merged first)."""
    from lm_eval.models.huggingface import HFLM

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return HFLM(pretrained=model.eval(), tokenizer=tokenizer, batch_size=batch_size)


def continuation_lm(model, tokenizer, batch_size: int = 8, max_length: int = 2048):
    """The LM that `tasft-ray evaluate` uses: ``ContinuationLM`` (see there); a peft adapter is
    merged into the weights first (faster, and the model is not trained further)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return _continuation_lm_class()(model.eval(), tokenizer, batch_size, max_length)


def unmerged_lm(model, tokenizer, batch_size: int = 8, max_length: int = 2048):
    """``ContinuationLM`` over a model still being trained: its adapter stays separate."""
    return _continuation_lm_class()(model, tokenizer, batch_size, max_length)


@functools.cache
def _continuation_lm_class():
    """Defined on first use: lm-eval is imported only when quality is evaluated."""
    import torch
    from lm_eval.api.model import TemplateLM

    from tasft_ray.models import HiddenStateTap

    class ContinuationLM(TemplateLM):
        """Log-likelihood scoring that projects only continuation positions to the vocabulary.

        lm-eval's HFLM takes log_softmax over the full (B, T, V) logits: at Gemma's 262k
        vocabulary a batch of 8 BoolQ passages is gigabytes and most of the time. Here the
        decoder's final hidden states are kept (``HiddenStateTap``) and only the few
        continuation tokens go through the output layer; tokenisation, context/continuation
        splitting and the metrics stay lm-eval's (TemplateLM), so the numbers are HFLM's.
        """

        def __init__(self, model, tokenizer, batch_size: int, max_length: int):
            super().__init__()
            self.model, self.tokenizer = model, tokenizer
            self.tap = HiddenStateTap(model)
            self.batch_size, self.max_length = batch_size, max_length

        @property
        def eot_token_id(self) -> int:
            return self.tokenizer.eos_token_id

        @property
        def prefix_token_id(self) -> int:
            bos = self.tokenizer.bos_token_id
            return bos if bos is not None else self.tokenizer.eos_token_id

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs):
            kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            return self.tokenizer.encode(string, **kw)

        @torch.no_grad()
        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            from tqdm.auto import tqdm

            # requests with the same model input (BoolQ's " yes" / " no" after one passage)
            # share one forward pass; longest inputs first (padding, memory)
            seqs = [(ctx + cont)[-(self.max_length + 1) :] for _, ctx, cont in requests]
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, (seq, (_, _, cont)) in enumerate(zip(seqs, requests, strict=True)):
                if len(cont) >= len(seq):
                    raise ConfigError(f"a continuation of {len(cont)} tokens >= max_length")
                groups.setdefault(tuple(seq[:-1]), []).append(i)
            inputs = sorted(groups, key=len, reverse=True)
            out: list[tuple[float, bool] | None] = [None] * len(requests)
            bar = tqdm(total=len(requests), desc="quality", disable=disable_tqdm, mininterval=2)
            for start in range(0, len(inputs), self.batch_size):
                part = inputs[start : start + self.batch_size]
                ids = torch.zeros(len(part), len(part[0]), dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, inp in enumerate(part):  # right-padded: positions are unchanged
                    ids[row, : len(inp)] = torch.tensor(inp)
                    mask[row, : len(inp)] = 1
                head = self.tap(self.model, input_ids=ids, attention_mask=mask)
                for row, inp in enumerate(part):
                    for i in groups[inp]:
                        cont = torch.tensor(requests[i][2])
                        h = head.hidden[row, len(inp) - len(cont) : len(inp)]
                        logp = torch.log_softmax(head.chunk_logits(h).float(), dim=-1)
                        total = float(logp.gather(1, cont[:, None]).sum())
                        out[i] = (total, bool((logp.argmax(-1) == cont).all()))
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], out[i])
                bar.update(sum(len(groups[inp]) for inp in part))
            bar.close()
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("ContinuationLM scores multiple-choice tasks only")

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("ContinuationLM scores multiple-choice tasks only")

    return ContinuationLM
