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
from tasft_ray.losses import IGNORE_INDEX, SAFE, sequence_logprobs
from tasft_ray.models import HiddenStateTap
from tasft_ray.stats import mean_interval


@torch.no_grad()
def response_nlls(
    model, tokenizer, examples: list[Example], max_length: int = 256, batch_size: int = 8
) -> tuple[list[float], float]:
    """Each response's mean NLL per token (EOS included; prompts in the training template),
    in the order given, and the mean over all tokens of all responses (each token weighted
    equally); logits only at response positions. An example whose response truncation leaves
    no token is left out (with a warning, as in training)."""
    mixture = tokenize_examples(tokenizer, examples, SAFE, max_length)
    if not len(mixture):
        raise ValueError("no example has a response token left after truncation")
    model.eval()
    tap = HiddenStateTap(model)
    order = sorted(range(len(mixture)), key=lambda i: len(mixture.input_ids[i]))  # less padding
    sums = [0.0] * len(mixture)
    counts = [0] * len(mixture)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate(mixture, rows, tokenizer.pad_token_id)
        head = tap(model, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logps = sequence_logprobs(head, batch["labels"])  # (B,) summed over response tokens
        n = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)  # (B,)
        for row, logp, count in zip(rows, logps.tolist(), n.tolist(), strict=True):
            sums[row], counts[row] = -logp, count
    per = [s / c for s, c in zip(sums, counts, strict=True)]
    return per, sum(sums) / sum(counts)


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
    """``nll/<label>`` (every token weighted equally), ``nll/<label>/n``, and the mean over
    responses with its 95 % interval (``/response_mean``, ``/ci_low``, ``/ci_high``) for each set
    in ``eval.likelihood``
    (``max_length``: the training token budget, ``data.max_length``; ``sets``: already
    loaded)."""
    out = {}
    sets = likelihood_sets(e, root) if sets is None else sets
    for label, examples in sets.items():
        per, pooled = response_nlls(model, tokenizer, examples, max_length)
        ci = mean_interval(per)
        out[f"nll/{label}"] = pooled
        out[f"nll/{label}/n"] = len(per)
        # the mean over responses (each response weighted equally) and its 95 % interval:
        # what tells two settings apart (tasft_ray.stats)
        out[f"nll/{label}/response_mean"] = ci.value
        out[f"nll/{label}/ci_low"], out[f"nll/{label}/ci_high"] = ci.low, ci.high
    return out
