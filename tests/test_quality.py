"""Quality through lm-eval on the shipped PIQA / BoolQ / OpenBookQA files."""

from __future__ import annotations

import json

import pytest
from lm_eval.api.model import LM

from tasft_ray.config import ConfigError, load_config
from tasft_ray.evaluation.quality import (
    QUALITY_TASKS,
    continuation_lm,
    hf_lm,
    run_quality,
    write_docs,
)
from tasft_ray.models import load_model

TASKS = list(QUALITY_TASKS)


class LongestAnswer(LM):
    """A model whose answer is known: the longest choice gets the highest log-likelihood."""

    def loglikelihood(self, requests):
        return [(float(len(req.args[1])), False) for req in requests]

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError

    def generate_until(self, requests):
        raise NotImplementedError


def test_scoring_on_a_constructed_case(tmp_path):
    """lm-eval's accuracy equals the hand-computed one: label == index of the longest choice."""
    got = run_quality(LongestAnswer(), TASKS, None, limit=40)
    for task in TASKS:
        docs = [
            json.loads(x) for x in write_docs(task, tmp_path, None, 40).read_text().splitlines()
        ]
        want = sum(
            d["label"] == max(range(len(d["choices"])), key=lambda i: len(d["choices"][i]))
            for d in docs
        ) / len(docs)
        assert got[f"quality/{task}/acc"] == pytest.approx(want)
    assert 0 < got["quality/mean_acc"] < 1


def _requests(tmp_path, tasks: list[str]) -> list:
    """Real (context, continuation) pairs of ``tasks``, plus an empty context."""
    from lm_eval.api.instance import Instance

    pairs = [("", " a bare continuation")]
    for task in tasks:
        for line in write_docs(task, tmp_path, None, 3).read_text().splitlines():
            d = json.loads(line)
            ctx = f"{d['context']}\nQuestion: {d['question']}?\nAnswer:"
            pairs += [(ctx, f" {c}") for c in d["choices"]]
    return [
        Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i)
        for i, p in enumerate(pairs)
    ]


# max_length 32: BoolQ passages are left-truncated (its answers are short enough for HFLM)
@pytest.mark.parametrize(("max_length", "tasks"), [(2048, TASKS), (32, ["boolq"])])
def test_continuation_lm_equals_lm_eval_hflm(tmp_path, max_length, tasks):
    """Same log-likelihoods and greedy flags as lm-eval's HFLM, request by request."""
    from lm_eval.models.huggingface import HFLM

    tok, model = load_model(load_config("tiny").model)
    requests = _requests(tmp_path, tasks)
    ref = HFLM(pretrained=model.eval(), tokenizer=tok, batch_size=3, max_length=max_length)
    want = ref.loglikelihood(requests, disable_tqdm=True)
    got = continuation_lm(model, tok, batch_size=4, max_length=max_length).loglikelihood(
        requests, disable_tqdm=True
    )
    assert len(got) == len(want) > 6
    for (g, g_greedy), (w, w_greedy) in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-4) and g_greedy == w_greedy


def test_tiny_model_accuracies_in_unit_interval():
    tok, model = load_model(load_config("tiny").model)
    got = run_quality(continuation_lm(model, tok, batch_size=4), TASKS, None, limit=6)
    assert got == run_quality(hf_lm(model, tok, batch_size=4), TASKS, None, limit=6)
    assert set(got) == {f"quality/{t}/{m}" for t in TASKS for m in ("acc", "acc_norm")} | {
        "quality/mean_acc"
    }
    assert all(0.0 <= v <= 1.0 for v in got.values())


def test_unknown_task_is_one_line():
    with pytest.raises(ConfigError, match=r"eval.quality_tasks: unknown \['mmlu'\]"):
        run_quality(LongestAnswer(), ["mmlu"], None)


def test_quality_outside_a_git_checkout_prints_nothing_from_git(tmp_path, monkeypatch, capfd):
    """lm-eval asks git for a commit hash with git's stderr on the console: a trial's worker
    outside a checkout printed "fatal: not a git repository" at every validation."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    run_quality(LongestAnswer(), ["piqa"], None, limit=2)
    assert "fatal" not in capfd.readouterr().err
