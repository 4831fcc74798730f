"""Held-out response NLL against a per-example computation from the model's own full logits."""

from __future__ import annotations

import math

import pytest
import torch

from tasft_ray.config import load_config
from tasft_ray.data.mixture import encode_pair
from tasft_ray.data.sources import Example
from tasft_ray.data.template import format_prompt
from tasft_ray.evaluation.likelihood import likelihood_metrics, response_nlls
from tasft_ray.models import attach_lora, load_model

EXAMPLES = [
    Example("Give three tips for staying healthy.", "", "Eat well, sleep, exercise."),
    Example("Summarize the following paragraph.", "The sky is blue.", "It is about the sky."),
    Example("Write a short poem about the sea.", "", "I cannot help with that request. " * 6),
    Example("What is the capital of France?", "", "Paris."),
    Example("Translate the sentence into French.", "Good morning", "Bonjour"),
]


def _by_hand(model, tok, examples, max_length):
    """Each example alone (no padding), full logits, -log softmax of every response token:
    the mean over all tokens, and each example's own mean."""
    total, n, per = 0.0, 0, []
    with torch.no_grad():
        for ex in examples:
            ids, labels = encode_pair(
                tok, format_prompt(ex.instruction, ex.input), ex.output, max_length
            )
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            mine = [-float(torch.log_softmax(logits[t - 1], -1)[labels[t]])
                    for t in range(1, len(ids)) if labels[t] != -100]  # fmt: skip
            total, n = total + sum(mine), n + len(mine)
            per.append(sum(mine) / len(mine))
    return total / n, per


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_response_nll_is_the_token_mean_nll_of_the_responses(batch_size):
    tok, base = load_model(load_config("tiny").model, seed=0)
    model = attach_lora(base, load_config("tiny").lora)
    torch.nn.init.normal_(
        model.base_model.model.model.layers[0].self_attn.q_proj.lora_B.default.weight
    )
    model.eval()
    for max_length in (256, 24):  # 24: the long refusal is truncated like training data
        pooled, per = _by_hand(model, tok, EXAMPLES, max_length)
        each, got = response_nlls(model, tok, EXAMPLES, max_length, batch_size)
        assert got == pytest.approx(pooled, rel=1e-5)
        assert each == pytest.approx(per, rel=1e-5)  # in the order given
    assert math.isfinite(got) and got > 0
    assert len(set(each)) == len(EXAMPLES)  # one number per response, not one per batch


def test_likelihood_metrics_per_set():
    cfg = load_config(
        "tiny",
        [
            "eval.likelihood={harmful: {name: jbb_jailbroken}, refusal: {name: jbb_refused}}",
            "eval.likelihood_max=3",
        ],
    )
    tok, model = load_model(cfg.model, seed=0)
    m = likelihood_metrics(cfg.eval, model, tok, cfg.data.max_length, None)
    keys = ("", "/n", "/response_mean", "/ci_low", "/ci_high")
    assert set(m) == {f"nll/{s}{k}" for s in ("harmful", "refusal") for k in keys}
    assert m["nll/harmful/n"] == 3 and m["nll/refusal/n"] == 3
    assert m["nll/harmful"] > 0 and m["nll/refusal"] > 0 and m["nll/harmful"] != m["nll/refusal"]
    for s in ("harmful", "refusal"):  # the interval is around the mean over responses
        assert m[f"nll/{s}/ci_low"] < m[f"nll/{s}/response_mean"] < m[f"nll/{s}/ci_high"]
