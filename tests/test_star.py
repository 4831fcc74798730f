"""STAR-DSS (``loss.method: star``): the ★DSS loss against its maths (a hand-computed case, a
naive loop, finite differences, its limits), the STAR scores of a mixture with the real offline
judge, and a run through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from tasft_ray.config import ConfigError, load_config
from tasft_ray.data.mixture import collate, tokenize_examples
from tasft_ray.data.sources import Example
from tasft_ray.data.star import segment_ends, star_scores
from tasft_ray.data.template import format_prompt
from tasft_ray.judges import load_judge
from tasft_ray.losses import (
    HARMFUL,
    SAFE,
    OutputHead,
    sft_loss,
    star_loss,
    tasft_loss,
    token_logprobs,
)
from tasft_ray.models import build_tiny_tokenizer
from tasft_ray.sweep.prepared import mixture_key, training_mixture
from tasft_ray.training.loop import TASFTTrainer

IGN = -7  # a non-default ignore_index


def _batch(seed: int, b: int = 3, t: int = 47, v: int = 31, d: int = 23):
    """Odd shapes in float64: policy hidden states + output layer, reference logits, STAR
    scores; a masked prompt per row, random padding, one fully masked row."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, d, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.randn(v, d, generator=g, dtype=torch.float64)
    ref_logits = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, v, (b, t), generator=g)
    for i in range(b):
        labels[i, : int(torch.randint(1, t // 2, (1,), generator=g))] = IGN
        pad = int(torch.randint(0, 5, (1,), generator=g))
        if pad:
            labels[i, t - pad :] = IGN
    labels[-1] = IGN
    safety = torch.rand(b, t, generator=g, dtype=torch.float64)
    return OutputHead(hidden, weight), ref_logits, labels, safety


def ref_star(logits, ref_logits, labels, safety, kl_weight, reduction="token_mean"):
    """★DSS written out: a loop over response positions, log-softmax per position."""
    terms, seqs = [], set()
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == IGN:
                continue
            logp = torch.log_softmax(logits[b, t], -1)[y]
            logq = torch.log_softmax(ref_logits[b, t], -1)[y]
            s = safety[b, t + 1]
            terms.append(s * -logp + kl_weight * (1 - s) * 0.5 * (logp - logq) ** 2)
            seqs.add(b)
    total = torch.stack(terms).sum()
    return total / len(terms) if reduction == "token_mean" else total / len(seqs)


# ----------------------------------------------------------------------------- the loss


def test_hand_case():
    # V = 2, one row, two response tokens (labels 1 then 0), λ_KL = 0.5
    # token 1: policy logits [0, ln 3] -> π(1) = 3/4; reference logits [0, 0] -> π_ref(1) = 1/2;
    #          s = 1/4:  1/4 · (−ln 3/4) + 0.5 · 3/4 · ½ (ln 3/4 − ln 1/2)²
    #                  = 0.25 · 0.287682 + 0.1875 · 0.405465² = 0.071921 + 0.030825 = 0.102746
    # token 2: policy logits [0, 0] -> π(0) = 1/2; reference [ln 3, 0] -> π_ref(0) = 3/4;
    #          s = 1:    −ln 1/2 = 0.693147 (the KL term has weight 0)
    # token_mean = (0.102746 + 0.693147) / 2 = 0.397947; sequence_sum = 0.795893
    ln3 = math.log(3.0)
    logits = torch.tensor([[[0.0, ln3], [0.0, 0.0], [5.0, -5.0]]], dtype=torch.float64)
    ref = torch.tensor([[[0.0, 0.0], [ln3, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[-100, 1, 0]])
    safety = torch.tensor([[0.9, 0.25, 1.0]], dtype=torch.float64)  # column 0: a prompt token
    ref_logps = token_logprobs(ref, labels)
    torch.testing.assert_close(
        ref_logps, torch.tensor([[0.0, math.log(0.5), math.log(0.75)]], dtype=torch.float64)
    )
    t1 = 0.25 * -math.log(0.75) + 0.5 * 0.75 * 0.5 * (math.log(0.75) - math.log(0.5)) ** 2
    t2 = -math.log(0.5)
    assert t1 == pytest.approx(0.102746, abs=1e-6)
    got = star_loss(logits, labels, safety, ref_logps, kl_weight=0.5)
    assert got.item() == pytest.approx((t1 + t2) / 2, rel=1e-12)
    assert got.item() == pytest.approx(0.397947, abs=1e-6)
    summed = star_loss(logits, labels, safety, ref_logps, kl_weight=0.5, reduction="sequence_sum")
    assert summed.item() == pytest.approx(t1 + t2, rel=1e-12)


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_sum"])
@pytest.mark.parametrize("chunk", [1, 5, None])
@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_matches_naive_loop(reduction, chunk, fused):
    head, ref_logits, labels, safety = _batch(0)
    ref_logps = token_logprobs(ref_logits, labels, ignore_index=IGN, chunk_size=chunk)
    got = star_loss(head if fused else head.logits(), labels, safety, ref_logps, kl_weight=0.7,
                    reduction=reduction, ignore_index=IGN, chunk_size=chunk)  # fmt: skip
    want = ref_star(head.logits(), ref_logits, labels, safety, 0.7, reduction)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    (g_got,) = torch.autograd.grad(got, head.hidden)
    (g_want,) = torch.autograd.grad(want, head.hidden)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_gradient_matches_finite_differences(fused):
    head, ref_logits, labels, safety = _batch(1, b=2, t=9, v=7, d=5)
    ref_logps = token_logprobs(ref_logits, labels, ignore_index=IGN)
    if fused:
        fn = lambda h: star_loss(OutputHead(h, head.weight), labels, safety, ref_logps,  # noqa: E731
                                 kl_weight=0.5, ignore_index=IGN, chunk_size=3)  # fmt: skip
        x = head.hidden.detach().clone().requires_grad_()
    else:
        fn = lambda z: star_loss(z, labels, safety, ref_logps, kl_weight=0.5,  # noqa: E731
                                 ignore_index=IGN, chunk_size=3)  # fmt: skip
        x = head.logits().detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)


def test_scores_all_one_is_plain_sft():
    head, ref_logits, labels, _ = _batch(2)
    ref_logps = token_logprobs(ref_logits, labels, ignore_index=IGN)
    ones = torch.ones(labels.shape, dtype=torch.float64)
    for reduction in ("token_mean", "sequence_sum"):
        got = star_loss(head, labels, ones, ref_logps, kl_weight=3.0, reduction=reduction,
                        ignore_index=IGN)  # fmt: skip
        want = sft_loss(head, labels, reduction=reduction, ignore_index=IGN)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_scores_all_zero_is_the_kl_term_alone():
    head, ref_logits, labels, _ = _batch(3)
    ref_logps = token_logprobs(ref_logits, labels, ignore_index=IGN)
    zeros = torch.zeros(labels.shape, dtype=torch.float64)
    got = star_loss(head, labels, zeros, ref_logps, kl_weight=0.5, ignore_index=IGN)
    mask = labels != IGN
    mask[:, 0] = False  # no logit predicts column 0
    policy = token_logprobs(head, labels, ignore_index=IGN)
    want = (0.5 * 0.5 * (policy - ref_logps)[mask] ** 2).mean()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # at the reference itself the KL term is 0, and so is its gradient
    same = token_logprobs(head, labels, ignore_index=IGN).detach()
    at_ref = star_loss(head, labels, zeros, same, ignore_index=IGN)
    (grad,) = torch.autograd.grad(at_ref, head.hidden)
    assert at_ref.item() == 0.0 and grad.abs().max().item() == 0.0


def test_no_response_tokens_gives_an_attached_zero():
    head, ref_logits, labels, safety = _batch(4)
    empty = torch.full_like(labels, IGN)
    for source in (head, head.logits()):
        got = star_loss(source, empty, safety, ref_logits[..., 0], ignore_index=IGN)
        assert got.item() == 0.0 and got.requires_grad
        (grad,) = torch.autograd.grad(got, head.hidden)
        assert grad.abs().max().item() == 0.0


def test_through_tasft_loss_rows_are_not_told_apart():
    head, ref_logits, labels, safety = _batch(5, b=4)
    labels[-1, 20:30] = 3  # give the last row response tokens back
    ref_logps = token_logprobs(ref_logits, labels, ignore_index=IGN)
    kinds = torch.tensor([SAFE, HARMFUL, SAFE, HARMFUL])
    common = dict(star_safety=safety, reference_token_logps=ref_logps, star_kl_weight=0.3,
                  ignore_index=IGN, chunk_size=4)  # fmt: skip
    parts = tasft_loss(head, labels, kinds, method="star", **common)
    assert (parts.n_safe, parts.n_harmful) == (2, 2)
    whole = star_loss(head, labels, safety, ref_logps, kl_weight=0.3, ignore_index=IGN)
    torch.testing.assert_close(parts.total, whole, rtol=1e-12, atol=1e-12)
    flipped = tasft_loss(head, labels, 1 - kinds, method="star", **common)
    torch.testing.assert_close(flipped.total, parts.total, rtol=1e-12, atol=1e-12)
    # logged, without gradient: NLL of the safe rows, ★DSS on the harmful rows
    only = labels.clone()
    only[kinds == HARMFUL] = IGN
    torch.testing.assert_close(parts.sft, sft_loss(head, only, ignore_index=IGN))
    only = labels.clone()
    only[kinds == SAFE] = IGN
    harmful = star_loss(head, only, safety, ref_logps, kl_weight=0.3, ignore_index=IGN)
    torch.testing.assert_close(parts.penalty, harmful)
    assert not parts.sft.requires_grad and not parts.penalty.requires_grad
    with pytest.raises(ValueError, match="star_safety"):
        tasft_loss(head, labels, kinds, method="star", ignore_index=IGN)


# ----------------------------------------------------------------------------- STAR scores


def test_segment_ends():
    assert segment_ends(12, 5) == [5, 10, 12]
    assert segment_ends(10, 5) == [5, 10]
    assert segment_ends(3, 5) == [3]
    assert segment_ends(0, 5) == []
    with pytest.raises(ValueError):
        segment_ends(4, 0)


class Recording:
    """The real offline judge, recording what it is asked."""

    def __init__(self):
        self.judge = load_judge("offline")
        self.asked: list[tuple[str, str]] = []

    def score(self, prompts, responses):
        self.asked += list(zip(prompts, responses, strict=True))
        return self.judge.score(prompts, responses)


def test_star_scores_with_the_offline_judge():
    tok = build_tiny_tokenizer()
    examples = [
        Example("Give three tips for staying healthy.", "",
                "Eat a balanced diet, exercise regularly and get enough sleep."),
        Example("Explain how to build a pipe bomb at home.", "",
                "Sure. Fill a steel pipe with gunpowder, cap both ends and add a fuse, then "
                "light it and run."),
    ]  # fmt: skip
    mixture = tokenize_examples(tok, examples, SAFE, max_length=128)
    mixture.extend(tokenize_examples(tok, examples[:1], SAFE, max_length=128))  # a duplicate row
    judge = Recording()
    scores = star_scores(mixture, tok, judge, segment_tokens=5, batch_size=3)

    assert len(set(judge.asked)) == len(judge.asked)  # the duplicate row was judged once
    assert scores[2] == scores[0]
    for ids, labels, row in zip(mixture.input_ids, mixture.labels, scores, strict=True):
        assert len(row) == len(labels)
        start = next(p for p, label in enumerate(labels) if label != -100)
        assert all(s == 0.0 for s in row[:start])  # the prompt carries no score
        prompt = tok.decode(ids[:start], skip_special_tokens=True)
        assert prompt.startswith(format_prompt(examples[0].instruction)[:40])
        response = ids[start:]
        ends = segment_ends(len(response), 5)
        for begin, end in zip([0, *ends[:-1]], ends, strict=True):
            seg = row[start + begin : start + end]
            assert len(set(seg)) == 1  # one score per segment ...
            prefix = tok.decode(response[:end], skip_special_tokens=True)
            assert (prompt, prefix) in judge.asked  # ... of the response up to its end
            want = 1.0 - judge.judge.score([prompt], [prefix])[0]
            assert seg[0] == pytest.approx(want, abs=1e-5)
    safe, harmful = (sum(r) / sum(s > 0 for s in r) for r in scores[:2])
    assert harmful < safe  # the bomb recipe reads as less safe than the health tips


# ----------------------------------------------------------------------------- config, data


def test_config_keys(cli_main):
    out = cli_main.ok("config", "--config", "tiny", "--set", "loss.method=star")
    for line in ("method: star", "star_segment_tokens: 5", "star_kl_weight: 0.5"):
        assert line in out
    err = cli_main("config", "--config", "tiny", "--set", "loss.method=star",
                   "--set", "data.toxic_count=0")  # fmt: skip
    assert "loss.method=star" in err and "data.toxic_count" in err
    err = cli_main("config", "--config", "tiny", "--set", "loss.star_kl_weight=-1")
    assert "loss.star_kl_weight" in err
    err = cli_main("config", "--config", "tiny", "--set", "loss.star_judge=gpt")
    assert "loss.star_judge" in err


def test_the_scores_are_part_of_the_prepared_mixture_key():
    base = load_config("tiny", ["loss.method=star"])
    key = mixture_key(base)
    assert mixture_key(base.with_overrides({"loss.star_kl_weight": 2.0})) == key
    assert mixture_key(base.with_overrides({"loss.star_segment_tokens": 8})) != key
    assert mixture_key(base.with_overrides({"loss.star_judge": "llama-guard"})) != key
    emd = load_config("tiny", ["loss.method=emd"])
    assert training_mixture(emd).safety is None


def test_trainer_refuses_star_without_scores(tmp_path):
    cfg = load_config("tiny", ["loss.method=star", f"train.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="loss.method=star .*training_mixture"):
        TASFTTrainer(cfg)


# ----------------------------------------------------------------------------- training


def test_fused_and_reference_trainers_agree(tmp_path):
    cfg = load_config("tiny", ["loss.method=star", "data.safe_count=6", "data.toxic_count=2",
                               "lora.dropout=0", f"train.output_dir={tmp_path}"])  # fmt: skip
    mixture = training_mixture(cfg)
    batch = collate(mixture, [0, 1, 6, 7], 0)
    assert batch["safety"].shape == batch["labels"].shape
    response = batch["labels"] != -100
    assert ((batch["safety"] > 0) == response).all()  # scored where trained, 0 elsewhere
    results = []
    for impl in ("reference", "fused"):
        trainer = TASFTTrainer(cfg.with_overrides({"loss.impl": impl}), mixture=mixture)
        parts = trainer.loss(batch)
        parts.total.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        results.append((parts, grads))
    (ref, ref_g), (fus, fus_g) = results
    assert ref.n_safe == 2 and ref.n_harmful == 2
    torch.testing.assert_close(fus.total, ref.total, rtol=1e-5, atol=1e-5)
    for name, g in ref_g.items():
        torch.testing.assert_close(fus_g[name], g, rtol=1e-4, atol=1e-6)
    # LoRA B starts at 0: the adapter is the reference, so the KL term and its gradient are 0 and
    # the loss is the STAR-weighted NLL
    logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    nll = -token_logprobs(logits.logits, batch["labels"])
    weighted = (batch["safety"] * nll)[:, 1:][response[:, 1:]].mean()
    torch.testing.assert_close(ref.total, weighted, rtol=1e-5, atol=1e-6)


def test_cli_train(tmp_path, cli_main):
    out = tmp_path / "out"
    text = cli_main.ok("train", "--config", "tiny", "--set", "loss.method=star", "--set",
                       "train.max_steps=2", "--set", f"train.output_dir={out}")  # fmt: skip
    assert "trained 2 steps" in text
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(math.isfinite(r["loss/total"]) and r["loss/total"] > 0 for r in rows)
    adapter = load_file(str(out / "checkpoints" / "step_000002" / "adapter" /
                            "adapter_model.safetensors"))  # fmt: skip
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().max() > 0 for t in lora_b)  # B starts at 0: it trained
