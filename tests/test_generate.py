"""`tasft-ray generate`: the Ray Data pipeline on the tiny model with the offline judge."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli
from conftest import sets as overrides_of

from tasft_ray import tracking
from tasft_ray.config import load_config
from tasft_ray.data.mixture import build_mixture
from tasft_ray.files import read_jsonl as read_rows
from tasft_ray.generation.prompts import load_prompts, prompt_id
from tasft_ray.generation.run import MANIFEST_SUFFIX
from tasft_ray.models import build_tiny_tokenizer

COLUMNS = {
    "id",
    "source",
    "instruction",
    "input",
    "prompt",
    "response",
    "judge",
    "score",
    "harmful",
    "refused",
    "model",
    "adapter",
    "seed",
}


def _generate(tmp_path: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    """`tasft-ray generate` of 40 prompts, as a subprocess on the session's Ray head."""
    sets = [
        "generate.prompts=[{name: harmfulq}]",
        "generate.max_prompts=40",
        "generate.batch_size=8",
        "generate.sampling.max_new_tokens=12",
        "generate.sampling.do_sample=false",
        f"generate.output={tmp_path / 'gen.jsonl'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        *overrides,
    ]
    return run_cli(
        ["tasft_ray", "generate", "--config", "tiny", *overrides_of(*sets)], tmp_path, env
    )


def test_interrupted_generation_resumes_to_exactly_every_prompt(tmp_path, head_env):
    out = tmp_path / "gen.jsonl"
    first = _generate(tmp_path, head_env, "testing.fail_after_rows=15")
    assert first.returncode == 2, first.stderr[-3000:]
    assert "testing.fail_after_rows: stopped after 15 rows" in first.stderr
    partial = read_rows(out)
    assert len(partial) == 15

    second = _generate(tmp_path, head_env)
    assert second.returncode == 0, second.stderr[-3000:]
    rows = read_rows(out)
    ids = [r["id"] for r in rows]
    assert len(rows) == 40 and len(set(ids)) == 40
    assert rows[:15] == partial  # nothing rewritten, nothing dropped
    want = {
        p["id"]
        for p in load_prompts(
            load_config(
                "tiny", ["generate.prompts=[{name: harmfulq}]", "generate.max_prompts=40"]
            ).generate,
            None,
        )
    }
    assert set(ids) == want
    for r in rows:
        assert COLUMNS <= set(r)
        assert 0.0 <= r["score"] <= 1.0 and r["judge"] == "offline"
        assert r["id"] == prompt_id(r["instruction"], r["input"])
    manifest = json.loads(Path(str(out) + MANIFEST_SUFFIX).read_text())
    assert manifest["rows"] == 40 and manifest["new_rows"] == 25
    assert manifest["harmful"] == sum(r["harmful"] for r in rows)
    # each call is an MLflow run, open while it works: the failed one FAILED with its progress
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("tasft-ray")
    assert exp.tags[tracking.KIND_TAG] == tracking.TRAINING_KIND  # the UI's runs table
    runs = c.search_runs([exp.experiment_id], filter_string="tags.`tasft.kind` = 'generate'",
                         order_by=["attributes.start_time ASC"])  # fmt: skip
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    done = c.get_metric_history(runs[0].info.run_id, "progress/rows_done")
    assert done[-1].value == done[-1].step == 15  # flushed rows are logged before the stop
    kept = c.get_metric_history(runs[0].info.run_id, "progress/rows_kept")[-1].value
    assert kept == sum(r["harmful"] for r in partial)
    done = c.get_metric_history(runs[1].info.run_id, "progress/rows_done")
    assert done[-1].value == 40 and all(15 < m.step <= 40 for m in done)
    assert runs[1].info.end_time - runs[1].info.start_time >= 1000 * manifest["seconds"]
    arts = [a.path for a in c.list_artifacts(runs[1].info.run_id, "dataset")]
    assert "dataset/gen.jsonl" in arts and runs[1].data.metrics["rows"] == 40
    (logged,) = c.get_run(runs[1].info.run_id).inputs.dataset_inputs
    assert logged.dataset.name == "gen.jsonl"
    assert logged.dataset.digest == hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    assert {t.key: t.value for t in logged.tags} == {tracking.CONTEXT_TAG: "generated",
                                                     tracking.ROWS_TAG: "40"}  # fmt: skip

    # a generated dataset is directly usable as D_related
    cfg = load_config(
        "tiny",
        [
            f"data.harmful={{path: {out}, format: generated}}",
            "data.toxic_count=0",
            "loss.method=sft",
        ],
    )
    n_harmful = sum(r["harmful"] for r in rows)
    if n_harmful:
        cfg = cfg.with_overrides({"data.toxic_count": n_harmful})
        mix = build_mixture(cfg.data, "emd", build_tiny_tokenizer(), seed=0)
        assert mix.counts()["harmful"] == n_harmful


def test_target_stops_once_enough_harmful_pairs_are_kept(tmp_path, head_env):
    # threshold 0: every answer counts as harmful, so the target is met after ~5 rows
    proc = _generate(
        tmp_path,
        head_env,
        "generate.target=5",
        "generate.judge_options={threshold: 0.0}",
        "generate.flush_every=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(tmp_path / "gen.jsonl")
    assert 5 <= len(rows) < 40 and all(r["harmful"] for r in rows)
    assert "5 harmful" in proc.stdout


def test_prompt_exclusion_and_dedup():
    cfg = load_config("tiny", ["generate.prompts=[{name: harmfulq}, {name: harmfulq}]"])
    prompts = load_prompts(cfg.generate, cfg.data_root)
    assert len(prompts) == 200 and len({p["id"] for p in prompts}) == 200
    # seeded shuffle: the same order on every call (resume), another seed another order
    assert [p["id"] for p in load_prompts(cfg.generate, cfg.data_root)] == [
        p["id"] for p in prompts
    ]
    reseeded = load_prompts(cfg.with_overrides({"generate.sampling.seed": 1}).generate, None)
    assert sorted(p["id"] for p in reseeded) == sorted(p["id"] for p in prompts)
    assert [p["id"] for p in reseeded] != [p["id"] for p in prompts]
    in_order = load_prompts(cfg.with_overrides({"generate.shuffle": False}).generate, None)
    assert [p["id"] for p in in_order] != [p["id"] for p in prompts]
    cfg = cfg.with_overrides({"generate.exclude": [{"name": "harmfulq"}]})
    assert load_prompts(cfg.generate, cfg.data_root) == []


def test_backend_choice_follows_the_machine():
    from tasft_ray.config import ConfigError
    from tasft_ray.inference.vllm import resolve_backend, vllm_available

    cfg = load_config("tiny", ["generate.backend=vllm"])
    auto = resolve_backend(load_config("tiny").generate.backend)
    if vllm_available():
        assert resolve_backend(cfg.generate.backend) == "vllm" and auto == "vllm"
    else:  # CPU machines (CI): HF in an actor pool, and a clear error when vLLM is forced
        assert auto == "hf"
        with pytest.raises(ConfigError, match="needs a GPU"):
            resolve_backend(cfg.generate.backend)
