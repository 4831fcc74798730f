"""Dataset lineage and live runs at unit level: digests of what a mixture really read, run
statuses on failure, throttled progress, the experiment kind (MLflow with sqlite)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tasft_ray import tracking
from tasft_ray.config import Config, load_config
from tasft_ray.data.lineage import describe_file
from tasft_ray.data.mixture import select_records
from tasft_ray.data.sources import read_source
from tasft_ray.evaluation.safety import answers_table

DATA = Path(os.environ["TASFT_DATA_DIR"])


def _sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def test_a_mixture_names_each_source_it_read_with_rows_used_and_file_digest(tmp_path):
    pairs = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(5)]
    harmful = tmp_path / "mine.json"
    harmful.write_text(json.dumps(pairs))
    cfg = load_config("tiny", [f"data.harmful={{path: {harmful}, format: alpaca}}",
                               "data.toxic_count=3"])  # fmt: skip
    sel = select_records(cfg.data, "emd", 0, None)
    (h, s) = sel.inputs  # the harmful set first: the runs table shows a run's first input
    assert (h.role, h.name, h.digest, h.rows) == ("harmful", "mine.json", _sha(harmful), 3)
    alpaca = DATA / "alpaca_data_1k_sample" / "alpaca_data_1k.json"
    assert (s.role, s.name, s.digest, s.rows) == ("safe", "alpaca_1k", _sha(alpaca), 64)
    assert len(sel.safe) == 64 and len(sel.related) == 3
    # the digest is of the content: one changed byte changes it, a copy elsewhere keeps it
    copy = tmp_path / "copy" / "mine.json"
    copy.parent.mkdir()
    copy.write_bytes(harmful.read_bytes())
    assert describe_file("generated", copy, 5).digest == h.digest
    harmful.write_text(json.dumps(pairs).replace("q0", "q9"))
    assert select_records(cfg.data, "emd", 0, None).inputs[0].digest != h.digest
    # SFT reads no harmful data, so it names none; STL names the refusals it trained on
    assert [i.role for i in select_records(cfg.data, "sft", 0, None).inputs] == ["safe"]
    assert [i.role for i in select_records(cfg.data, "stl", 0, None).inputs] == [
        "refusals",
        "safe",
    ]


def test_a_missing_file_is_described_as_the_fallback_that_was_read(tmp_path):
    cfg = load_config("tiny", [f"data.harmful={{path: {tmp_path / 'none.jsonl'}, format: "
                               "generated, fallback: {name: jbb_jailbroken}}"])  # fmt: skip
    got = read_source(cfg.data.harmful, None).describe("harmful", 16)
    assert got.name == "jbb_jailbroken" and got.source_type == "local"


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_live_runs_end_failed_or_killed_and_log_progress_at_most_as_often_as_asked(tmp_path):
    uri, cfg = _uri(tmp_path), Config.from_dict({"model": {"name": "tiny"}})
    c = tracking.client(uri)
    with pytest.raises(ValueError), tracking.live_run(uri, cfg, "generate") as run:
        assert c.get_run(run.run_id).info.status == "RUNNING"  # open while it works
        raise ValueError("boom")
    assert c.get_run(run.run_id).info.status == "FAILED"
    with pytest.raises(KeyboardInterrupt), tracking.live_run(uri, cfg, "evaluate") as run:
        raise KeyboardInterrupt
    assert c.get_run(run.run_id).info.status == "KILLED"
    with tracking.live_run(uri, cfg, "generate") as run:
        run.every_s = 3600.0
        for step in range(1, 6):
            run.progress(step, {"progress/rows_done": step}, force=step == 4)
    history = c.get_metric_history(run.run_id, "progress/rows_done")
    assert [m.step for m in history] == [1, 4]  # the first, then only the forced one
    assert c.get_run(run.run_id).info.status == "FINISHED"


def test_the_experiment_opens_as_model_training_even_if_it_existed_before(tmp_path):
    uri = _uri(tmp_path)
    c = tracking.client(uri)
    old = c.create_experiment("old")  # made by an older tasft-ray, or by hand
    assert tracking.KIND_TAG not in c.get_experiment(old).tags
    for name in ("old", "new"):
        exp = c.get_experiment(tracking.ensure_experiment(uri, name))
        assert exp.tags[tracking.KIND_TAG] == "custom_model_development"


def test_answers_table_keeps_every_answer_and_each_judges_verdict():
    rows = [
        {"source": "advbench", "id": "a", "instruction": "q", "input": "ctx", "response": "r",
         "score": 0.9, "harmful": True, "refused": False, "judge": "offline",
         "judges": {"llama-guard": {"score": 0.2, "harmful": False}}},
        {"source": "xstest_safe", "id": "b", "instruction": "p", "input": "", "response": "no",
         "score": 0.1, "harmful": False, "refused": True, "judge": "offline"},
    ]  # fmt: skip
    t = answers_table(rows)
    assert t["prompt"] == ["q\n\nctx", "p"] and t["harm_score"] == [0.9, 0.1]
    assert t["llama-guard_score"] == [0.2, None] and t["llama-guard_harmful"] == [False, None]
    assert list(t)[:8] == ["benchmark", "prompt_id", "prompt", "response", "harm_score",
                           "harmful", "refused", "judge"]  # fmt: skip
