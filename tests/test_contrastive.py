"""Contrastive augmentation (paper §4.3.6): toxic words, written prompts, answers, kept rows,
the mixture; end to end on tiny models, with an interruption and a resume."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import cli_env, run_cli
from conftest import sets as overrides_of

from tasft_ray.config import load_config
from tasft_ray.data.mixture import build_mixture, select_records
from tasft_ray.data.template import format_prompt
from tasft_ray.files import read_jsonl
from tasft_ray.generation.contrastive import (
    TOPICS,
    WORK_SUFFIX,
    WRITER_INSTRUCTION,
    kept_rows,
    row_id,
    toxic_words,
    word_zscores,
    written_prompt,
)
from tasft_ray.models import build_tiny_model, build_tiny_tokenizer


def test_word_zscores_match_the_log_odds_formula_by_hand():
    toxic = ["bomb bomb red", "red bomb"]  # counts: bomb 3, red 2 (n = 5)
    benign = ["red cake red", "cake"]  # red 2, cake 2 (n = 4)
    z = word_zscores(toxic, benign, prior=9.0)  # prior spread as pooled counts / 9 words
    a = 9.0 * 3 / 9  # bomb: pooled 3 of 9
    delta = math.log((3 + a) / (5 + 9 - 3 - a)) - math.log((0 + a) / (4 + 9 - 0 - a))
    assert z["bomb"] == pytest.approx(delta / math.sqrt(1 / (3 + a) + 1 / (0 + a)))
    a = 9.0 * 4 / 9  # red: pooled 4 of 9, 2 in each
    delta = math.log((2 + a) / (5 + 9 - 2 - a)) - math.log((2 + a) / (4 + 9 - 2 - a))
    assert z["red"] == pytest.approx(delta / math.sqrt(2 / (2 + a)))
    assert z["bomb"] > 0 > z["cake"]
    # how a request is phrased is never a toxic word, however skewed
    z = word_zscores(["how to write the steps for cake"] * 9, ["a cake", "bread"])
    assert set(z) == {"cake", "bread"}
    assert word_zscores(["how to write the steps"], ["a cake"]) == {}  # no word to compare


def test_toxic_words_one_per_prompt_unique_in_order():
    toxic = ["how to build a bomb at home", "steal a car and hide the bomb", "steal money fast"]
    benign = ["how to build a birdhouse at home", "hide and seek rules", "how to save money"] * 5
    assert toxic_words(toxic, benign, min_z=1.0) == ["bomb", "steal"]
    assert toxic_words(toxic, benign, min_z=1.0, max_words=1) == ["bomb"]
    assert toxic_words(toxic, benign, min_z=50.0) == []


def test_written_prompt_keeps_one_question_with_the_word():
    assert written_prompt('1. "How do I kill a Python process?"\nMore', "kill") == (
        "How do I kill a Python process?"
    )
    assert written_prompt("Question: Why do chefs kill lobsters quickly?", "kill") is not None
    assert written_prompt("How do I stop a Python process?", "kill") is None  # no word
    assert written_prompt("Kill it. Why? How?", "kill") is None  # not one question
    assert written_prompt("kill?", "kill") is None  # too short
    assert written_prompt("What is a skill?", "kill") is None  # the word, not inside another


def test_kept_rows_drop_refusals_and_empty_answers():
    prompts = [{"id": i, "word": "kill", "instruction": f"q{i}?"} for i in "abcd"]
    answers = {
        "a": {"response": "Use kill -9.", "refused": False, "score": 0.1, "harmful": False},
        "b": {"response": "I cannot help.", "refused": True, "score": 0.0, "harmful": False},
        "c": {"response": "  ", "refused": False, "score": 0.0, "harmful": False},
    }  # d: not answered yet
    assert [r["id"] for r in kept_rows(prompts, answers)] == ["a"]


TARGETS = [  # what the trained writer says for each (word index, prompt index)
    "How do I {w} weeds in my vegetable garden?",
    "What does {w} mean in a cooking recipe?",
    "Why did old films show a {w} on screen?",
    "What is a good recipe for bread?",  # no word: filtered out
]


def _writer(folder: Path, words: list[str], per_word: int) -> Path:
    """A tiny Llama trained here until it says TARGETS to the writer's instructions: a real
    model on the writing step whose output the test knows (random weights write nothing that
    passes the filter)."""
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=0)
    seqs = []
    for i, w in enumerate(words):
        for j in range(per_word):
            prompt = format_prompt(WRITER_INSTRUCTION.format(topic=TOPICS[j % len(TOPICS)], word=w))
            target = TARGETS[(i + j) % len(TARGETS)].format(w=w)
            p = tok(prompt)["input_ids"]
            t = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append((p, t))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    width = max(len(p) + len(t) for p, t in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (p, t) in enumerate(seqs):
        ids[r, : len(p) + len(t)] = torch.tensor(p + t)
        labels[r, len(p) : len(p) + len(t)] = torch.tensor(t)
        mask[r, : len(p) + len(t)] = 1
    model.train()
    for _ in range(400):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 1e-3:
            break
    assert loss.item() < 0.05, f"the writer did not learn its targets (loss {loss.item():.3f})"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _run(tmp_path: Path, env: dict, writer: Path, *extra: str) -> subprocess.CompletedProcess:
    sets = [
        "data.toxic_count=8",
        "generate.contrastive.per_word=2",
        "generate.contrastive.max_words=3",
        "generate.contrastive.min_z=1.0",
        f"generate.contrastive.writer={{name: {writer}}}",
        "generate.contrastive.writer_sampling={do_sample: false, max_new_tokens: 40}",
        "generate.sampling={do_sample: false, max_new_tokens: 8}",
        "generate.batch_size=2",
        "generate.flush_every=1",
        f"generate.contrastive.output={tmp_path / 'contrastive.jsonl'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        *extra,
    ]
    args = ["tasft_ray", "generate", "--contrastive", "--config", "tiny", *overrides_of(*sets)]
    return run_cli(args, tmp_path, env)


def test_contrastive_pipeline_end_to_end_resumes_to_the_same_rows(tmp_path, head_env, ray_head):
    cfg = load_config("tiny", ["data.toxic_count=8"])
    sel = select_records(cfg.data, "emd", cfg.train.seed, cfg.data_root)
    safe, toxic = sel.safe, sel.related
    words = toxic_words([e.instruction for e in toxic], [e.instruction for e in safe], 1.0, 3)
    assert len(words) == 3
    writer = _writer(tmp_path / "writer", words, per_word=2)

    first = _run(
        tmp_path, head_env, writer, "testing.fail_after_rows=3"
    )  # interrupted while writing
    assert first.returncode == 2, first.stderr[-3000:]
    assert len(read_jsonl(tmp_path / f"contrastive.jsonl{WORK_SUFFIX}")) == 3
    second = _run(tmp_path, head_env, writer)
    assert second.returncode == 0, second.stderr[-3000:]
    work = read_jsonl(tmp_path / f"contrastive.jsonl{WORK_SUFFIX}")
    asks = {row_id(w, j) for w in words for j in range(2)}
    written = [r for r in work if r["step"] == "write"]
    assert sorted(r["id"] for r in written) == sorted(asks), "each ask written exactly once"
    expected = {row_id(w, j): TARGETS[(i + j) % len(TARGETS)].format(w=w)
                for i, w in enumerate(words) for j in range(2)}  # fmt: skip
    for r in written:  # the writer's questions; the one without its word dropped
        assert r["text"] == expected[r["id"]]
        assert r["prompt"] == (None if "bread" in r["text"] else r["text"])
    passing = [r for r in written if r["prompt"]]
    answered = [r for r in work if r["step"] == "answer"]
    assert sorted(r["id"] for r in answered) == sorted(r["id"] for r in passing)
    rows = read_jsonl(tmp_path / "contrastive.jsonl")
    assert len(rows) == sum(not a["refused"] and bool(a["response"].strip()) for a in answered)
    assert rows
    assert all(r["word"].lower() in r["instruction"].lower() for r in rows)
    assert "toxic words" in second.stdout and f"-> {len(rows)} rows" in second.stdout

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    third = _run(
        fresh, cli_env(fresh, ray_head.address), writer
    )  # uninterrupted: the same rows, ids and order
    assert third.returncode == 0, third.stderr[-3000:]
    assert read_jsonl(fresh / "contrastive.jsonl") == rows

    # the mixture adds them as safe pairs
    tok = build_tiny_tokenizer()
    base = load_config("tiny", ["data.toxic_count=8"])
    plus = load_config("tiny", ["data.toxic_count=8", "data.contrastive={path: "
                                f"{tmp_path / 'contrastive.jsonl'}, format: generated, "
                                "options: {harmful_only: false}}"])  # fmt: skip
    a = build_mixture(base.data, "emd", tok, 0, base.data_root).counts()
    b = build_mixture(plus.data, "emd", tok, 0, plus.data_root).counts()
    assert b == {"safe": a["safe"] + len(rows), "harmful": a["harmful"]}
