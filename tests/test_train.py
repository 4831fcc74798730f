"""The single-process training loop on the tiny model: behaviour, resume, checkpoints, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from tasft_ray.config import load_config
from tasft_ray.data.mixture import collate
from tasft_ray.losses import HARMFUL, SAFE, sequence_logprobs
from tasft_ray.training.checkpoints import list_checkpoints
from tasft_ray.training.local import METRICS_FILE, run_training
from tasft_ray.training.loop import TASFTTrainer


def _cfg(tmp_path, *overrides):
    return load_config("tiny", [f"train.output_dir={tmp_path}", *overrides])


def _mean_token_logprob(trainer: TASFTTrainer, kind: int) -> float:
    """Mean per-token log-likelihood of the mixture's responses of one kind, dropout off."""
    subset = trainer.mixture.subset(kind)
    trainer.model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(subset), 8):
            batch = collate(
                subset, range(start, min(start + 8, len(subset))), trainer.tokenizer.pad_token_id
            )
            logits = trainer.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            total += float(sequence_logprobs(logits, batch["labels"]).sum())
            tokens += int((batch["labels"][:, 1:] != -100).sum())
    trainer.model.train()
    return total / tokens


def test_emd_penalty_lowers_harmful_likelihood_versus_lambda_zero(tmp_path):
    common = ("train.max_steps=30", "train.checkpoint_every=0", "train.lr=3e-2")
    results = {}
    for lam in (0.0, 5.0):
        trainer = TASFTTrainer(_cfg(tmp_path / f"lam{lam}", *common, f"loss.lam={lam}"))
        before = _mean_token_logprob(trainer, HARMFUL)
        trainer.fit(progress=False)
        results[lam] = (
            before,
            _mean_token_logprob(trainer, HARMFUL),
            _mean_token_logprob(trainer, SAFE),
        )
    (b0, harm0, _), (b5, harm5, safe5) = results[0.0], results[5.0]
    assert b0 == pytest.approx(b5)  # same seed, same start
    assert harm0 > b0  # plain SFT on safe data also makes the harmful text more likely ...
    assert harm5 < harm0 - 0.2  # ... and the EMD penalty pushes it back down (measured: 0.48)
    assert safe5 > b0 + 0.5  # while the safe data is still learned


def test_resume_gives_identical_adapter(tmp_path):
    def adapter(trainer):
        return {
            k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad
        }

    straight = TASFTTrainer(_cfg(tmp_path / "a", "train.max_steps=20", "train.checkpoint_every=10"))
    straight.fit(progress=False)
    want = adapter(straight)

    first = TASFTTrainer(_cfg(tmp_path / "b", "train.max_steps=20", "train.checkpoint_every=10"))
    for _ in range(10):
        first.train_step()
    ckpt = first.save_checkpoint(tmp_path / "b" / "checkpoints" / "step_000010")
    del first
    resumed = TASFTTrainer(_cfg(tmp_path / "b", "train.max_steps=20", "train.checkpoint_every=10"))
    resumed.load_checkpoint(ckpt)
    assert resumed.step == 10
    resumed.fit(progress=False)
    got = adapter(resumed)
    assert got.keys() == want.keys() and len(got) > 0
    for name in want:
        assert torch.equal(got[name], want[name]), name
    # the adapters really trained (lora_B starts at zero)
    assert any(v.abs().sum() > 0 for k, v in got.items() if "lora_B" in k)


def test_notice_of_a_preemption_checkpoints_at_the_next_step_once(tmp_path):
    """Ray Train's notice of a node being reclaimed (``ray_train.PreemptionCheck``) takes a
    checkpoint at the step it arrives, out of schedule, once: the group Ray restarts then
    resumes from that step instead of the last scheduled checkpoint."""
    trainer = TASFTTrainer(_cfg(tmp_path, "train.max_steps=10", "train.checkpoint_every=5"))
    taken, told = [], []

    def notice() -> bool:  # the notice arrives at step 3 and stays; acted on once
        if trainer.step >= 3 and not told:
            told.append(trainer.step)
            return True
        return False

    trainer.fit(on_checkpoint=lambda m: taken.append(m["step"]), progress=False,
                checkpoint_now=notice)  # fmt: skip
    assert taken == [3, 5, 10]


def test_run_training_resume_keeps_metrics_continuous(tmp_path):
    import shutil

    cfg = _cfg(
        tmp_path, "train.max_steps=6", "train.checkpoint_every=3", "train.keep_checkpoints=2"
    )
    run_training(cfg, progress=False)
    rows = [json.loads(r) for r in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["n_harmful"] + r["n_safe"] == 8 for r in rows)
    # a crash after step 5: the step-6 checkpoint never landed, metrics 4..5 did
    shutil.rmtree(tmp_path / "checkpoints" / "step_000006")
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    (tmp_path / METRICS_FILE).write_text("\n".join(lines[:5]) + "\n")
    result = run_training(cfg, resume=True, progress=False)
    assert result.step == 6
    steps = [json.loads(r)["step"] for r in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # 4 and 5 replaced, none repeated
    assert [c.name for c in list_checkpoints(tmp_path / "checkpoints")] == [
        "step_000003",
        "step_000006",
    ]


def test_fresh_run_refuses_to_mix_with_old_checkpoints(tmp_path):
    cfg = _cfg(tmp_path, "train.max_steps=2", "train.checkpoint_every=0")
    run_training(cfg, progress=False)
    with pytest.raises(ValueError, match="already has checkpoints .*step_000002.*--resume"):
        run_training(cfg, progress=False)


@pytest.mark.parametrize("method", ["nlcl", "kto", "stl", "sft"])
def test_every_method_trains(tmp_path, method):
    cfg = _cfg(tmp_path, f"loss.method={method}", "train.max_steps=3", "train.checkpoint_every=0")
    trainer = TASFTTrainer(cfg)
    counts = trainer.mixture.counts()
    if method in ("sft", "stl"):
        assert counts["harmful"] == 0
        assert counts["safe"] == 64 + (16 if method == "stl" else 0)
    else:
        assert counts == {"safe": 64, "harmful": 16}
    result = trainer.fit(progress=False)
    assert result.step == 3 and torch.isfinite(torch.tensor(result.metrics["loss/total"]))
    assert (result.checkpoint / "adapter" / "adapter_model.safetensors").is_file()


def test_toxic_count_larger_than_available_is_one_line(tmp_path):
    from tasft_ray.data.sources import DataError

    with pytest.raises(
        DataError,
        match=r"data.toxic_count=100000 but data.harmful \(name 'jbb_jailbroken'\) "
        r"has only \d+ usable pairs",
    ):
        TASFTTrainer(_cfg(tmp_path, "data.toxic_count=100000"))


def test_cli_train_smoke_test(tmp_path, cli_main):
    out = cli_main.ok("train", "--config", "tiny", "--smoke-test",
                      "--set", f"train.output_dir={tmp_path / 'out'}")  # fmt: skip
    assert "trained 2 steps" in out
    assert (tmp_path / "out" / "checkpoints" / "step_000002" / "adapter").is_dir()
    assert (tmp_path / "out" / "config.yaml").is_file()


def test_emd_dtype_bfloat16_trains_on_a_bf16_copy_of_the_cost_embeddings(tmp_path):
    trainer = TASFTTrainer(_cfg(tmp_path, "loss.method=emd", "loss.emd_dtype=bfloat16"))
    table = trainer.model.get_input_embeddings().weight.detach()
    assert table.dtype == torch.float32 and trainer.embeddings.dtype == torch.bfloat16
    torch.testing.assert_close(trainer.embeddings, table.bfloat16())
    batch = next(b for b in map(trainer._micro_batch, range(64)) if (b["kinds"] == HARMFUL).any())
    penalty = trainer.loss(batch).penalty.detach()
    trainer.embeddings = table.clone()
    exact = trainer.loss(batch).penalty.detach()
    assert float(penalty) < 0 and abs(float(penalty / exact) - 1) < 1e-2


@pytest.mark.parametrize("method", ["emd", "nlcl", "kto"])
def test_fused_and_reference_trainers_agree(tmp_path, method):
    """The fused path through the real model (hidden-state tap, logits_to_keep) gives the
    reference loss and the same LoRA gradients, and never asks the model for full logits."""
    results = []
    for impl in ("reference", "fused"):
        trainer = TASFTTrainer(
            _cfg(tmp_path / impl, f"loss.method={method}", f"loss.impl={impl}", "lora.dropout=0")
        )
        batch = next(  # a micro-batch with both safe and harmful rows
            b
            for b in map(trainer._micro_batch, range(64))
            if 0 < int((b["kinds"] == HARMFUL).sum()) < len(b["kinds"])
        )
        logits_len = []
        hook = trainer.model.get_output_embeddings().register_forward_hook(
            lambda _m, _i, out, seen=logits_len: seen.append(out.shape[1])
        )
        parts = trainer.loss(batch)
        hook.remove()
        parts.total.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        results.append((parts, grads, logits_len))
    (ref, ref_g, ref_len), (fus, fus_g, fus_len) = results
    assert ref.n_harmful > 0 and ref.n_safe > 0
    torch.testing.assert_close(fus.total, ref.total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fus.penalty, ref.penalty, rtol=1e-5, atol=1e-5)
    for name, g in ref_g.items():
        torch.testing.assert_close(fus_g[name], g, rtol=1e-4, atol=1e-6)
    assert min(ref_len) == batch["input_ids"].shape[1] and set(fus_len) == {1}
