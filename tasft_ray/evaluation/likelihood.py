"""Held-out response likelihood: the penalty's effect on the distribution, without sampling noise.

Judged greedy answers are a coarse readout on a small model: on 40 prompts one answer is 2.5
points, and an answer only flips once the penalty has moved the argmax. The penalty acts on the
next-token distribution, so ``eval.likelihood`` measures that directly: the mean per-token
negative log-likelihood of fixed responses the model never trained on (e.g. JailbreakBench's
jailbroken answers, and the refusals to the same goals). A method that works raises
``nll/harmful`` over SFT's more than it raises ``nll/refusal``.
"""

from __future__ import annotations

import torch

from tasft_ray.config import EvalConfig
from tasft_ray.data.mixture import collate, tokenize_examples
from tasft_ray.data.records import Example
from tasft_ray.data.sources import load_source
from tasft_ray.losses import IGNORE_INDEX, SAFE, tasft_loss
from tasft_ray.models import HiddenStateTap


@torch.no_grad()
def response_nll(
    model, tokenizer, examples: list[Example], max_length: int = 256, batch_size: int = 8
) -> float:
    """Mean NLL per response token (EOS included), prompts in the training template, all
    tokens of all responses weighted equally; logits only at response positions."""
    mixture = tokenize_examples(tokenizer, examples, SAFE, max_length)
    if not len(mixture):
        raise ValueError("no example has a response token left after truncation")
    model.eval()
    tap = HiddenStateTap(model)
    order = sorted(range(len(mixture)), key=lambda i: len(mixture.input_ids[i]))  # less padding
    total, tokens = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = collate(mixture, order[start : start + batch_size], tokenizer.pad_token_id)
        head = tap(model, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        parts = tasft_loss(head, batch["labels"], batch["kinds"], method="sft")
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total, tokens = total + float(parts.sft) * n, tokens + n
    return total / tokens


def likelihood_sets(e: EvalConfig, root: str | None) -> dict[str, list[Example]]:
    """The held-out responses of each set in ``eval.likelihood`` (first ``likelihood_max``)."""
    return {
        label: [x for x in load_source(source, root, f"eval.likelihood.{label}") if x.output][
            : e.likelihood_max
        ]
        for label, source in e.likelihood.items()
    }


def likelihood_metrics(
    e: EvalConfig,
    model,
    tokenizer,
    max_length: int,
    root: str | None,
    sets: dict[str, list[Example]] | None = None,
) -> dict[str, float]:
    """``nll/<label>`` and ``nll/<label>/n`` for each set in ``eval.likelihood``
    (``max_length``: the training token budget, ``data.max_length``; ``sets``: already
    loaded)."""
    out = {}
    sets = likelihood_sets(e, root) if sets is None else sets
    for label, examples in sets.items():
        out[f"nll/{label}"] = response_nll(model, tokenizer, examples, max_length)
        out[f"nll/{label}/n"] = len(examples)
    return out
