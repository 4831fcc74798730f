"""Tokenisation, masking, truncation and the D_unrelated ∪ D_related mixture."""

from __future__ import annotations

import pytest

from tasft_ray.config import load_config
from tasft_ray.data.mixture import (
    Mixture,
    build_mixture,
    collate,
    encode_pair,
    epoch_order,
    group_by_length,
    select_records,
)
from tasft_ray.data.template import format_prompt
from tasft_ray.losses import HARMFUL, IGNORE_INDEX, SAFE
from tasft_ray.models import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_prompt_masked_response_scored_and_ends_with_eos(tok):
    prompt = format_prompt("Name a colour.")
    ids, labels = encode_pair(tok, prompt, "Blue.", max_length=512)
    n_prompt = len(tok(prompt)["input_ids"])
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(ids[n_prompt:-1]) == "Blue."


def test_truncation_keeps_response_cue_and_budget(tok):
    prompt = format_prompt("word " * 400)
    response = "answer " * 400
    ids, labels = encode_pair(tok, prompt, response, max_length=64)
    assert len(ids) == len(labels) == 64
    scored = [t for t in labels if t != IGNORE_INDEX]
    assert len(scored) == 16  # a quarter of the budget is kept for the response
    assert tok.decode(ids[: 64 - 16]).endswith("### Response:\n")
    # a short prompt leaves the rest of the budget to the response (EOS cut off)
    ids, labels = encode_pair(tok, "Hi", response, max_length=64)
    assert len(ids) == 64 and ids[-1] != tok.eos_token_id


def test_mixture_counts_kinds_and_determinism(tok):
    cfg = load_config("tiny")
    mix = build_mixture(cfg.data, "emd", tok, seed=0)
    assert mix.counts() == {"safe": 64, "harmful": 16}
    assert mix.kinds[:64] == [SAFE] * 64 and mix.kinds[64:] == [HARMFUL] * 16
    again = build_mixture(cfg.data, "emd", tok, seed=0)
    assert again.input_ids == mix.input_ids
    other = build_mixture(cfg.data, "emd", tok, seed=1)
    assert other.input_ids != mix.input_ids


def test_toxic_selection_first_and_seeded():
    cfg = load_config("tiny", ["data.toxic_selection=first", "data.toxic_count=5"])
    first = select_records(cfg.data, "nlcl", 0, None).related
    first_again = select_records(cfg.data, "nlcl", 7, None).related
    assert first == first_again  # 'first' ignores the seed
    seeded = load_config("tiny", ["data.toxic_count=5"])
    s0 = select_records(seeded.data, "nlcl", 0, None).related
    s1 = select_records(seeded.data, "nlcl", 1, None).related
    assert s0 != s1 and len(s0) == len(s1) == 5


def test_methods_choose_their_safety_data():
    cfg = load_config("tiny")
    related = select_records(cfg.data, "sft", 0, None).related
    assert related == []  # plain SFT drops the harmful pairs
    sel = select_records(cfg.data, "stl", 0, None)
    related, kind = sel.related, sel.related_kind
    assert kind == SAFE and len(related) == 16  # STL: safe refusals, trained as SFT data
    sel = select_records(cfg.data, "kto", 0, None)
    related, kind = sel.related, sel.related_kind
    assert kind == HARMFUL and len(related) == 16


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(50, seed=3, epoch=0)
    assert sorted(a) == list(range(50))
    assert a == epoch_order(50, seed=3, epoch=0)
    assert a != epoch_order(50, seed=3, epoch=1)


def _padding(order: list[int], lengths: list[int], micro: int) -> int:
    batches = [order[i : i + micro] for i in range(0, len(order), micro)]
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_group_by_length_same_examples_less_padding():
    lengths = [(i * 37) % 200 + 5 for i in range(96)]
    order = epoch_order(96, seed=1, epoch=0)
    grouped = group_by_length(order, lengths, micro=4, window=6, seed=1, epoch=0)
    assert sorted(grouped) == sorted(order)  # a permutation: every example once per epoch
    # each window of 6 micro-batches holds the same examples as before, only regrouped
    for w in range(0, 96, 24):
        assert sorted(grouped[w : w + 24]) == sorted(order[w : w + 24])
    # hand check: sorted windows of 24 leave at most (max - min) per batch of padding
    assert _padding(grouped, lengths, 4) < 0.25 * _padding(order, lengths, 4)
    assert grouped == group_by_length(order, lengths, 4, 6, seed=1, epoch=0)  # pure
    batch_lengths = [lengths[grouped[i]] for i in range(0, 24, 4)]
    assert batch_lengths != sorted(batch_lengths)  # micro-batches shuffled within the window
    assert group_by_length(order, lengths, 4, 0, 1, 0) == order  # off


def test_collate_pads_right_and_masks(tok):
    mix = Mixture()
    mix.add([1, 5, 6], [IGNORE_INDEX, 5, 6], SAFE)
    mix.add([1, 7], [IGNORE_INDEX, 7], HARMFUL)
    batch = collate(mix, [0, 1], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 5, 6], [IGNORE_INDEX, 7, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["kinds"].tolist() == [SAFE, HARMFUL]
