"""AlpacaEval win rate: the real openai client against a local OpenAI-compatible chat server
whose verdict is known (it prefers the longer output), so every win can be counted by hand."""

from __future__ import annotations

import logging

import pytest
from conftest import prefer_longer, serve_json

from tasft_ray.config import ConfigError, SourceConfig, load_config
from tasft_ray.data.sources import load_source
from tasft_ray.evaluation.alpaca_eval import AlpacaEvalError, PairwiseJudge, win_rate


def test_win_rate_on_a_constructed_case(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seen: list[dict] = []
    outputs = ["long answer here", "x", "a much longer answer", "short", "four-ish", "mid size"]
    refs = ["short", "longer reference", "ref", "much longer reference", "r", "mid size+"]
    instructions = [f"instruction {i}" for i in range(5)] + ["UNSURE"]
    with serve_json(prefer_longer(seen)) as url:
        verdicts = PairwiseJudge("judge-x", base_url=url).judge(instructions, outputs, refs, 0)
    # the judge prefers the longer text wherever it is shown: wins are outputs longer than refs
    want = [1.0, 0.0, 1.0, 0.0, 1.0, 0.5]  # the last: unparseable verdict, half a win
    assert [v.win for v in verdicts] == want
    assert {v.model_is_a for v in verdicts} == {True, False}  # both positions were used
    assert all(b["max_tokens"] == 1 and b["temperature"] == 0 for b in seen)
    assert seen[0]["model"] == "judge-x" and "instruction 0" in seen[0]["messages"][-1]["content"]


def test_win_rate_of_the_tiny_model(monkeypatch):
    from tasft_ray.models import load_model

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seen: list[dict] = []
    with serve_json(prefer_longer(seen)) as url:
        cfg = load_config(
            "tiny",
            [
                "eval.alpaca_eval.judge_model=judge-x",
                f"eval.alpaca_eval.base_url={url}",
                "eval.alpaca_eval.max_instructions=5",
                "eval.alpaca_eval.max_new_tokens=4",
            ],
        )
        tok, model = load_model(cfg.model)
        metrics, verdicts = win_rate(cfg.eval.alpaca_eval, model, tok, None)
    refs = load_source(SourceConfig(name="alpaca_eval"), None)[:5]
    assert [v.instruction for v in verdicts] == [r.instruction for r in refs]
    assert [v.reference for v in verdicts] == [r.output for r in refs]
    assert len(seen) == 5 and metrics["alpaca_eval/n"] == 5
    wins = [float(len(v.output) > len(v.reference)) for v in verdicts]
    assert metrics["alpaca_eval/win_rate"] == pytest.approx(sum(wins) / 5)
    assert metrics["alpaca_eval/unparsed"] == 0


def test_skipped_without_a_judge_and_errors_are_one_line(monkeypatch, caplog):
    cfg = load_config("tiny")
    with caplog.at_level(logging.INFO, logger="tasft_ray.evaluation.alpaca_eval"):
        assert win_rate(cfg.eval.alpaca_eval, None, None, None) == ({}, [])
    assert "AlpacaEval skipped: set eval.alpaca_eval.judge_model" in caplog.text

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="needs the OPENAI_API_KEY"):
        PairwiseJudge("judge-x")

    def fail(path, headers, body):
        return 500, {}, {"error": {"message": "boom"}}

    with serve_json(fail) as url:
        judge = PairwiseJudge("judge-x", base_url=url, max_retries=0)
        with pytest.raises(AlpacaEvalError) as info:
            judge.answer("i", "a", "b")
    assert str(info.value) == f"eval.alpaca_eval: HTTP 500 from {url}/"
    with pytest.raises(AlpacaEvalError, match="cannot reach"):
        PairwiseJudge("judge-x", base_url="http://127.0.0.1:9/v1", max_retries=0).answer(
            "i", "a", "b"
        )
