"""The fused loss under DeepSpeed ZeRO-3, on 2 gloo processes and the tiny model.

ZeRO-3 partitions the frozen output layer, so the fused loss has to gather it; this checks that
it does, and that the result is the same training run as the fused loss under ZeRO-2 (loss values
and LoRA weights after 3 steps) for every method, and as the reference loss under ZeRO-3 for EMD
(the method whose cost matrix is the head itself; fused against reference for every method
without ZeRO is test_train.py's), with an untied head and with a tied, soft-capped (Gemma-style)
one, and across a checkpoint + restore.

Everything runs in one pair of spawned processes (one rendezvous): a Ray Tune trial per case
would cost minutes. The Ray path with a real crash under ZeRO-3 is
``test_tune.py::test_grid_of_engines_and_methods_with_crashes_evaluation_and_report``, which
runs the default ``loss.impl`` (fused, asserted below).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from tasft_ray.config import load_config

WORLD = 2
STEPS = 3
METHODS = ("sft", "emd", "nlcl", "kto")
ENGINES = {  # name -> overrides
    "z3_fused": ["engine.zero_stage=3", "loss.impl=fused"],
    "z3_reference": ["engine.zero_stage=3", "loss.impl=reference"],
    "z2_fused": ["engine.zero_stage=2", "loss.impl=fused"],
}
TIED_METHODS = ("emd",)  # tied, soft-capped head: the EMD cost is that very weight
REFERENCE_METHODS = ("emd",)  # also run with the reference loss under ZeRO-3
CHUNK = 64  # fewer response positions per chunk than a micro-batch has: several chunks


def _engines(method: str) -> list[str]:
    return [e for e in ENGINES if e != "z3_reference" or method in REFERENCE_METHODS]


def _cases() -> list[tuple[str, str, bool]]:
    plain = [(m, e, False) for m in METHODS for e in _engines(m)]
    return plain + [(m, e, True) for m in TIED_METHODS for e in _engines(m)]


def _tied_softcapped_model(tokenizer, seed: int = 0):
    """A tiny Gemma 3: output layer tied to the input embedding, final logits soft-capped."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        final_logit_softcapping=3.0,  # low enough that the cap bends the logits
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return Gemma3ForCausalLM(config)


class _Probe:
    """What the fused path did in one run: logits rows per block, the head as the loss saw it."""

    def __init__(self):
        self.blocks: list[tuple[int, int, tuple[int, ...]]] = []  # (rows, dims, weight shape)
        self.model_positions: list[int] = []  # positions the model's own lm_head projected

    def install(self) -> None:
        """Record every logits block the loss builds (this process only: a spawned worker)."""
        from tasft_ray.losses.chunks import OutputHead

        original = OutputHead.chunk_logits
        blocks = self.blocks

        def chunk_logits(head, h):
            blocks.append((h.shape[0], h.dim(), tuple(head.weight.shape)))
            return original(head, h)

        OutputHead.chunk_logits = chunk_logits


_MIXTURES: dict[str, object] = {}  # per method, shared by its cases (this worker process)


def _mixture(cfg):
    from tasft_ray.data.mixture import build_mixture
    from tasft_ray.models import load_tokenizer

    method = cfg.loss.method
    if method not in _MIXTURES:
        tok = load_tokenizer(cfg.model)
        _MIXTURES[method] = build_mixture(cfg.data, method, tok, cfg.train.seed, cfg.data_root)
    return _MIXTURES[method]


def _run_case(method, engine, tied, ckpt_root, rank, counter, probe) -> dict:
    from tasft_ray.models import is_partitioned
    from tasft_ray.training.loop import TASFTTrainer

    cfg = _config(method, engine)
    mixture = _mixture(cfg)
    calls_before = counter[0]
    trainer = TASFTTrainer(cfg, rank, WORLD, mixture=mixture)
    head = trainer.model.get_base_model().get_output_embeddings()
    hook = head.register_forward_hook(lambda _m, _a, o: probe.model_positions.append(o.shape[-2]))
    emb0 = trainer.embeddings
    probe.blocks.clear()
    probe.model_positions.clear()
    losses = [trainer.train_step()["loss/total"] for _ in range(STEPS)]
    hook.remove()
    result = {
        "losses": losses,
        "adapter": _adapter(trainer),
        "head_partitioned": is_partitioned(head.weight) and head.weight.numel() == 0,
        "head_shape": tuple(getattr(head.weight, "ds_shape", head.weight.shape)),
        "blocks": list(probe.blocks),
        "model_positions": list(probe.model_positions),
        "emb_builds": counter[0] - calls_before,
        "emb_same": trainer.embeddings is emb0,
        "emb": None if emb0 is None else emb0.clone(),
        "tied": head.weight is trainer.model.get_input_embeddings().weight,
    }
    if (method, engine, tied) == ("emd", "z3_fused", False):
        result["restored"] = _crash_and_restore(cfg, mixture, rank, ckpt_root)
    return result


def _crash_and_restore(cfg, mixture, rank, ckpt_root: Path) -> dict:
    """Train 2 steps, checkpoint, drop the trainer (its engine and shards) and resume in a new
    one for the last step: the restored run must end where the straight one did."""
    from tasft_ray.training.loop import TASFTTrainer

    first = TASFTTrainer(cfg, rank, WORLD, mixture=mixture)
    for _ in range(STEPS - 1):
        first.train_step()
    ckpt = ckpt_root / "step2"
    first.write_checkpoint(ckpt)  # both ranks, one shared directory, as Ray would merge them
    torch.distributed.barrier()
    del first
    second = TASFTTrainer(cfg, rank, WORLD, mixture=mixture)
    second.load_checkpoint(ckpt)
    assert second.step == STEPS - 1
    loss = second.train_step()["loss/total"]
    return {"loss": loss, "adapter": _adapter(second)}


def _config(method: str, engine: str):
    return load_config(
        "tiny",
        [
            "engine.kind=deepspeed",
            *ENGINES[engine],
            f"loss.method={method}",
            f"loss.chunk_size={CHUNK}",
            "lora.dropout=0",
            f"train.max_steps={STEPS}",
            "train.micro_batch_size=4",
            "train.grad_accum=2",
            "train.lr=1e-3",  # Adam turns fp32 rounding in tiny gradients into lr-sized steps
        ],
    )


def _adapter(trainer) -> dict[str, torch.Tensor]:
    with trainer.engine.full_parameters():  # ZeRO-3 shards the LoRA weights too
        return {
            n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad
        }


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
    )  # fmt: skip
    os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(out_dir) / "torch_extensions")  # JIT builds
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    import deepspeed

    from tasft_ray.models import loading as models
    from tasft_ray.training import loop

    # DeepSpeed keeps parameters under 1e5 elements whole on every rank; the tiny model's head
    # is smaller, so without this ZeRO-3 would never partition it and nothing would be tested.
    initialize = deepspeed.initialize

    def initialize_partitioning_everything(**kwargs):
        kwargs["config"]["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        return initialize(**kwargs)

    deepspeed.initialize = initialize_partitioning_everything
    counter = [0]
    embedding_matrix = loop.embedding_matrix

    def counted(*args, **kwargs):
        counter[0] += 1
        return embedding_matrix(*args, **kwargs)

    loop.embedding_matrix = counted
    probe = _Probe()
    probe.install()
    out = Path(out_dir)
    results = {}
    build_tiny_model = models.build_tiny_model
    for method, engine, tied in _cases():
        models.build_tiny_model = _tied_softcapped_model if tied else build_tiny_model
        results[(method, engine, tied)] = _run_case(
            method, engine, tied, out / "ckpt", rank, counter, probe
        )
    torch.save(results, out / f"rank{rank}.pt")
    shm = deepspeed.comm.comm.cdb.shm_comm_op is not None
    (out / f"rank{rank}_comm.json").write_text(json.dumps({"shm_op": shm}))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def zero3_out(tmp_path_factory) -> Path:
    """The two ranks' results (rank{r}.pt, rank{r}_comm.json) and their JIT-build folder."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("zero3")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return out


@pytest.fixture(scope="module")
def zero3_runs(zero3_out) -> dict:
    ranks = [torch.load(zero3_out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for key, res in ranks[1].items():  # every rank reports the group's loss
        assert res["losses"] == pytest.approx(ranks[0][key]["losses"], abs=1e-7), key
    return ranks[0]


def _close(a: dict, b: dict, what: str) -> None:
    assert a["losses"] == pytest.approx(b["losses"], abs=1e-5), what
    assert a["adapter"].keys() == b["adapter"].keys()
    for name, value in a["adapter"].items():
        torch.testing.assert_close(value, b["adapter"][name], rtol=0, atol=1e-5, msg=what)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied-softcap"])
def test_zero3_fused_matches_zero3_reference_and_zero2_fused(zero3_runs, tied):
    methods = TIED_METHODS if tied else METHODS
    for method in methods:
        runs = {e: zero3_runs[(method, e, tied)] for e in _engines(method)}
        base = runs["z2_fused"]
        _close(runs["z3_fused"], base, f"{method} tied={tied}: ZeRO-3 fused vs ZeRO-2 fused")
        if "z3_reference" in runs:
            _close(runs["z3_reference"], base,
                   f"{method} tied={tied}: ZeRO-3 reference vs ZeRO-2 fused")  # fmt: skip
        moved = any(v.abs().max() > 1e-3 for k, v in base["adapter"].items() if "lora_B" in k)
        assert moved, "the adapter did not train: the comparison would prove nothing"
        assert all(r["tied"] == tied for r in runs.values())


def test_zero3_fused_path_is_taken_with_the_head_partitioned(zero3_runs):
    """Under ZeRO-3 the head stays partitioned outside the loss, the loss saw it whole, and no
    (B, T, V) logits exist: the model projects one position, the loss chunk_size at a time."""
    for (method, engine, _tied), run in zero3_runs.items():
        zero3, fused = engine.startswith("z3"), engine.endswith("fused")
        assert run["head_partitioned"] == zero3, (method, engine)
        if fused:
            assert run["blocks"], (method, engine)
            assert all(rows <= CHUNK and dims == 2 for rows, dims, _ in run["blocks"])
            assert {w for *_, w in run["blocks"]} == {run["head_shape"]}
            assert set(run["model_positions"]) == {1}
        else:
            assert not run["blocks"] and min(run["model_positions"]) > 1


def test_emd_embeddings_built_once_and_whole_under_zero3(zero3_runs):
    """The cost embeddings are one whole (V, d) copy per run, the same tensor every step, on
    every engine, equal to the untrained input embedding even though ZeRO-3 partitions it."""
    for tied in (False, True):
        runs = {e: zero3_runs[("emd", e, tied)] for e in ENGINES}
        for engine, run in runs.items():
            assert run["emb_builds"] == 1 and run["emb_same"], engine
            assert tuple(run["emb"].shape) == run["head_shape"], engine
            assert run["emb"].abs().sum() > 0, engine
        torch.testing.assert_close(runs["z3_fused"]["emb"], runs["z2_fused"]["emb"])
    for (method, _e, _t), run in zero3_runs.items():
        if method != "emd":
            assert run["emb_builds"] == 0 and run["emb"] is None


def test_zero3_fused_restore_matches_an_uninterrupted_run(zero3_runs):
    straight = zero3_runs[("emd", "z3_fused", False)]
    restored = straight["restored"]
    assert restored["loss"] == pytest.approx(straight["losses"][-1], abs=1e-6)
    for name, value in straight["adapter"].items():
        torch.testing.assert_close(restored["adapter"][name], value, rtol=0, atol=1e-6)


def test_deepspeed_on_cpu_compiles_nothing(zero3_out):
    """DeepSpeed's communication backend would JIT-compile its shared-memory op (inference only,
    30-60 s of C++) at start; the engine keeps it from that: no op, nothing built."""
    for rank in range(WORLD):
        assert json.loads((zero3_out / f"rank{rank}_comm.json").read_text()) == {"shm_op": False}
    built = zero3_out / "torch_extensions"
    assert not built.exists() or not any(built.rglob("*.so")), sorted(built.rglob("*"))


def test_ray_zero3_case_runs_the_fused_loss():
    """test_tune's ZeRO-3 crash + restore through Ray runs the default impl: keep it fused."""
    cfg = load_config("tiny", ["engine.kind=deepspeed", "engine.zero_stage=3"])
    assert cfg.loss.impl == "fused"


def test_a_head_released_before_a_recomputing_backward_fails_loudly():
    """The eager gradient needs no weight in backward, so the trainer releases the gathered head
    before it; a loss that still recomputes in backward must say so, not multiply by a shard."""
    from tasft_ray.losses import OutputHead
    from tasft_ray.losses.chunks import Positions, flat_input, map_chunks
    from tasft_ray.losses.logprob import LOGPROB

    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, 4, generator=g, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(7, 4, generator=g), requires_grad=False)
    labels = torch.randint(0, 7, (2, 5), generator=g)
    pos = Positions.of(labels, -100)
    stats = map_chunks(LOGPROB, flat_input(OutputHead(h, w)), pos, chunk_size=3, grad_col=0)
    w.data = torch.empty(0)  # what a ZeRO-3 release does to the parameter
    with pytest.raises(RuntimeError, match="keep it whole until backward"):
        (stats[:, 0] + stats[:, 1]).sum().backward()
