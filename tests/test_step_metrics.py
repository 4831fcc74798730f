"""A step's metrics over the worker group: token-weighted means over ranks, counts summed."""

from __future__ import annotations

import pytest
import torch.multiprocessing as mp

from tasft_ray.training.step_metrics import reduce_over_ranks


def _local(total, n, sft, n_safe, penalty, n_harm, tokens=100, rows=(3, 1)):
    return {
        "loss/total": total,
        "response_tokens": n,
        "loss/sft": sft,
        "safe_tokens": n_safe,
        "loss/penalty": penalty,
        "harmful_tokens": n_harm,
        "tokens": tokens,
        "n_safe": rows[0],
        "n_harmful": rows[1],
        "lr": 0.1,
    }


def test_token_weighted_means_by_hand():
    ranks = [
        _local(2.0, 10, 1.5, 6, -0.5, 4, tokens=40),
        _local(4.0, 30, 3.0, 30, 0.0, 0, tokens=60, rows=(4, 0)),  # no harmful rows here
    ]

    def sum_over_ranks(_vector):
        vectors = [
            [r[t] * r[w] for t, w in (("loss/total", "response_tokens"),
                                      ("loss/sft", "safe_tokens"),
                                      ("loss/penalty", "harmful_tokens"))]
            + [float(r[c]) for c in ("response_tokens", "safe_tokens", "harmful_tokens",
                                     "tokens", "n_safe", "n_harmful")]
            for r in ranks
        ]  # fmt: skip
        return [a + b for a, b in zip(*vectors, strict=True)]

    out = reduce_over_ranks(ranks[0], sum_over_ranks)
    assert out["loss/total"] == pytest.approx((2.0 * 10 + 4.0 * 30) / 40)  # 3.5
    assert out["loss/sft"] == pytest.approx((1.5 * 6 + 3.0 * 30) / 36)  # 2.75
    assert out["loss/penalty"] == pytest.approx(-0.5)  # only rank 0 had harmful tokens
    assert (out["tokens"], out["n_safe"], out["n_harmful"]) == (100, 7, 1)
    assert out["lr"] == 0.1  # not a per-rank sample: passed through
    one = reduce_over_ranks(_local(1.0, 0, 0.0, 0, 0.0, 0), lambda v: v)
    assert one["loss/total"] == 0.0  # no tokens anywhere: 0, not a division by zero


def _rank(rank: int, init: str, out) -> None:
    import torch.distributed as dist

    from tasft_ray.config import load_config
    from tasft_ray.training.loop import TASFTTrainer

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    cfg = load_config("tiny", ["train.num_workers=2", "engine.kind=ddp", "lora.dropout=0"])
    trainer = TASFTTrainer(cfg, rank=rank, world_size=2)
    reduced = trainer.train_step()
    out.put((rank, trainer.local_metrics, reduced))
    dist.destroy_process_group()


def test_two_ranks_with_different_shards_log_the_all_reduced_loss(tmp_path):
    """Two real gloo ranks, each on its own shard of the tiny mixture: both log the same
    numbers, the token-weighted mean of their own ones (hand-computed here)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    init = f"file://{tmp_path / 'pg'}"
    procs = [ctx.Process(target=_rank, args=(r, init, out)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict((r, (local, reduced)) for r, local, reduced in (out.get(timeout=300) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (l0, r0), (l1, r1) = got[0], got[1]
    assert l0["loss/total"] != l1["loss/total"]  # different shards, different losses
    for term, weight in (("loss/total", "response_tokens"), ("loss/sft", "safe_tokens")):
        want = (l0[term] * l0[weight] + l1[term] * l1[weight]) / (l0[weight] + l1[weight])
        assert r0[term] == pytest.approx(want, rel=1e-12) and r1[term] == r0[term]
    nh = l0["harmful_tokens"] + l1["harmful_tokens"]
    want = l0["loss/penalty"] * l0["harmful_tokens"] + l1["loss/penalty"] * l1["harmful_tokens"]
    assert r0["loss/penalty"] == pytest.approx(want / nh if nh else 0.0, rel=1e-12)
    assert r0["tokens"] == l0["tokens"] + l1["tokens"] == r1["tokens"]
    assert r0["n_safe"] + r0["n_harmful"] == 2 * 4 * 2  # 2 ranks x grad_accum 2 x micro 4
