"""Data readers, registry and template, checked against the real shipped data.

Counts come from each folder's SOURCE.md under $TASFT_DATA_DIR. Record contents are never printed
or compared as literals: several sets hold genuinely harmful text.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from tasft_ray.config import SourceConfig
from tasft_ray.data import DataError, Example, load_source
from tasft_ray.data import registry as reg
from tasft_ray.data.sources import READERS, examples_from_rows, read_path
from tasft_ray.data.template import format_prompt

DATA = Path(os.environ["TASFT_DATA_DIR"])
REFUSED_PORT_URL = "http://127.0.0.1:9/"  # discard port: nothing listens, connect is refused

# name -> (records, whether they carry a response)
EXPECTED = {
    "alpaca_1k": (1000, True),
    "alpaca_gpt4_demo": (999, True),
    "alpaca_safety_flagged": (1904, True),
    "stl_safety_only": (2483, True),
    "stl_i_malicious": (100, False),
    "stl_i_cona": (178, False),
    "stl_i_controversial": (40, False),
    "stl_q_harm": (100, False),
    "stl_physical_unsafe": (100, False),
    "stl_physical_safe": (100, False),
    "stl_i_alpaca": (50, False),
    "xstest": (450, False),
    "xstest_completions": (3 * 450, True),
    # SOURCE.md: 750 jailbroken pairs, none duplicated. It says "15 files" but the folder holds
    # 13 (1300 records); 750 + 483 non-jailbroken + 67 null responses = 1300.
    "jbb_jailbroken": (750, True),
    # 483 non-jailbroken responses, but 47 are the same canned refusal to the same goal from
    # another model/attack; identical (goal, response) pairs are kept once -> 436.
    "jbb_refused": (436, True),
    "harmbench": (400, False),
    "advbench": (520, False),
    "harmfulq": (200, False),
    "harmfulqa": (1960, False),
    "catqa": (550, False),
    "adversarialqa": (500, False),
    "hh_rlhf_harmless": (2312, True),
    "piqa": (1838, False),
    "boolq": (3270, False),
    "openbookqa": (500, False),  # 500 records, the last line without a newline
    "alpaca_eval": (805, True),  # reference outputs: text-davinci-003
    "alpaca_eval_gpt4": (805, True),  # gpt4_1106_preview
}


def _load(name: str) -> list[Example]:
    return load_source(SourceConfig(name=name), None)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, "DataError messages must be one line"
    return msg


# --------------------------------------------------------------------------- registry counts


def test_every_registered_entry_is_covered():
    assert set(EXPECTED) | {"alpaca"} == set(reg.dataset_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registry_counts_match_source_md(name):
    count, has_output = EXPECTED[name]
    examples = _load(name)
    assert len(examples) == count
    assert all(ex.instruction.strip() for ex in examples)
    if has_output:
        assert all(isinstance(ex.output, str) for ex in examples)
    else:
        assert all(ex.output is None for ex in examples)


def test_xstest_labels_and_filter():
    labels = Counter(ex.meta_dict["label"] for ex in _load("xstest"))
    assert labels == {"safe": 250, "unsafe": 200}
    unsafe = read_path(DATA / "xstest/xstest_prompts.csv", "xstest", label="unsafe")
    assert len(unsafe) == 200
    assert all(ex.meta_dict["type"].startswith("contrast_") for ex in unsafe)
    assert {"id", "type", "label"} <= set(unsafe[0].meta_dict)


def test_xstest_completions_carry_human_labels():
    examples = _load("xstest_completions")
    assert Counter(ex.meta_dict["model"] for ex in examples) == {
        "llama2new": 450,
        "llama2orig": 450,
        "mistralinstruct": 450,
    }
    assert {ex.meta_dict["final_label"] for ex in examples} == {
        "1_full_compliance",
        "2_full_refusal",
        "3_partial_refusal",
    }
    # the completions files have no label column: it is derived from type (contrast_* = unsafe)
    assert Counter(ex.meta_dict["label"] for ex in examples) == {"safe": 750, "unsafe": 600}


def test_jbb_counts_agree_with_raw_files():
    raw = Counter()
    refused_pairs = set()
    for file in (DATA / "jailbreakbench_artifacts/attack-artifacts").rglob("*.json"):
        for rec in json.loads(file.read_text())["jailbreaks"]:
            if rec["response"]:
                raw[rec["jailbroken"]] += 1
                if not rec["jailbroken"]:
                    refused_pairs.add((rec["goal"], rec["response"]))
    assert raw == {True: 750, False: 483}
    assert len(refused_pairs) == 436
    jailbroken = _load("jbb_jailbroken")
    assert {ex.meta_dict["jailbroken"] for ex in jailbroken} == {"true"}
    assert {"method", "model", "category"} <= set(jailbroken[0].meta_dict)
    assert {ex.meta_dict["jailbroken"] for ex in _load("jbb_refused")} == {"false"}


def test_harmbench_context_becomes_input():
    examples = _load("harmbench")
    assert sum(bool(ex.input) for ex in examples) == 100  # the contextual behaviors
    assert all("BehaviorID" in ex.meta_dict and "category" in ex.meta_dict for ex in examples)
    adv = _load("advbench")
    assert [ex.meta_dict["BehaviorID"] for ex in adv[:2]] == ["advbench_1", "advbench_2"]


def test_red_instruct_nested_topics_are_flattened():
    assert len({ex.meta_dict["topic"] for ex in _load("harmfulqa")}) == 10
    assert len({ex.meta_dict["topic"] for ex in _load("catqa")}) == 11
    assert all(not ex.meta for ex in _load("harmfulq"))


def test_stl_tags_kept_in_meta():
    assert all("tag" in ex.meta_dict for ex in _load("stl_i_malicious"))
    assert all(not ex.meta for ex in _load("stl_i_cona"))


def test_hh_rlhf_last_turn_and_rejected_reply():
    examples = _load("hh_rlhf_harmless")
    assert all(ex.input == "" and "\n\nHuman:" not in ex.instruction for ex in examples)
    assert all("chosen" in ex.meta_dict for ex in examples)
    assert Counter(ex.meta_dict["turns"] for ex in examples)["1"] == 662
    path = DATA / "hh_rlhf_harmless_base/test.jsonl"
    chosen = read_path(path, "hh_rlhf", {"output": "chosen"})
    assert [e.output for e in chosen] == [e.meta_dict["chosen"] for e in examples]
    assert [e.meta_dict["rejected"] for e in chosen] == [e.output for e in examples]


def test_hub_rows_use_the_same_rules_as_files():
    path = DATA / "hh_rlhf_harmless_base/test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:50]]
    assert examples_from_rows(rows, "hh_rlhf") == read_path(path, "hh_rlhf")[:50]


# --------------------------------------------------------------------------- template


def test_template_without_input_is_exact():
    assert format_prompt("Name a color.") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName a color.\n\n### Response:\n"
    )


def test_template_with_input_is_exact():
    assert format_prompt("Sum these.", "1, 2") == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nSum these.\n\n### Input:\n1, 2\n\n### Response:\n"
    )


def test_template_keeps_braces_and_rejects_unknown_names():
    assert "{x}" in format_prompt("Print {x}.", template="alpaca")
    with pytest.raises(ValueError, match="unknown prompt template 'chatml' \\(known: alpaca\\)"):
        format_prompt("hi", template="chatml")


# --------------------------------------------------------------------------- example record


def test_example_meta_is_sorted_and_hashable():
    ex = Example("do it", meta={"b": 2, "a": "x", "c": True})
    assert ex.meta == (("a", "x"), ("b", "2"), ("c", "true"))
    assert ex.meta_dict == {"a": "x", "b": "2", "c": "true"}
    assert len({ex, Example("do it", meta=(("c", "true"), ("a", "x"), ("b", "2")))}) == 1


# --------------------------------------------------------------------------- error messages


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = _write(
        tmp_path / "x.jsonl",
        '{"instruction": "a", "output": "b"}\n\n{"instruction": "a" "output": "b"}\n',
    )
    assert _error(read_path, path, "alpaca") == f"{path}:3: invalid JSON (Expecting ',' delimiter)"


def test_malformed_json_array_names_line(tmp_path):
    path = _write(tmp_path / "x.json", '[\n{"instruction": "a",\n}]')
    assert _error(read_path, path, "alpaca") == (
        f"{path}:3: invalid JSON (Expecting property name enclosed in double quotes)"
    )


def test_missing_field_names_record_and_field(tmp_path):
    recs = [{"instruction": "a", "output": "b"}, {"input": "", "output": "b"}]
    path = _write(tmp_path / "x.json", json.dumps(recs))
    assert _error(read_path, path, "alpaca") == f"{path}: record 1: missing field 'instruction'"


def test_renamed_field_is_named_as_in_the_file(tmp_path):
    path = _write(tmp_path / "x.jsonl", json.dumps({"instruction": "a", "output": "b"}) + "\n")
    msg = _error(read_path, path, "alpaca", {"output": "response"})
    assert msg == f"{path}:1: missing field 'response'"


def test_wrong_type_names_field_and_types(tmp_path):
    path = _write(tmp_path / "x.json", json.dumps([{"instruction": "a", "output": 3}]))
    msg = _error(read_path, path, "alpaca")
    assert msg == f"{path}: record 0: field 'output' must be a string (got int)"


def test_empty_instruction_and_non_object_records(tmp_path):
    path = _write(tmp_path / "x.json", json.dumps([{"instruction": " ", "output": "b"}]))
    msg = _error(read_path, path, "alpaca")
    assert msg == f"{path}: record 0: field 'instruction' is empty (expected non-empty text)"
    path = _write(tmp_path / "y.json", json.dumps(["just a string"]))
    assert (
        _error(read_path, path, "alpaca") == f"{path}: record 0: expected a JSON object (got str)"
    )


def test_empty_input_is_fine_and_null_input_means_none(tmp_path):
    recs = [
        {"instruction": "a", "input": "", "output": "b"},
        {"instruction": "a", "input": None, "output": ""},
    ]
    path = _write(tmp_path / "x.json", json.dumps(recs))
    assert [(e.input, e.output) for e in read_path(path, "alpaca")] == [("", "b"), ("", "")]


def test_csv_errors_name_line_and_column(tmp_path):
    path = _write(tmp_path / "p.csv", 'id,prompt\n1,"two\nlines"\n2\n')
    assert _error(read_path, path, "xstest") == f"{path}:4: expected 2 columns, got 1"
    path = _write(tmp_path / "q.csv", "id,text\n1,hello\n")
    assert (
        _error(read_path, path, "xstest")
        == f"{path}:1: missing column 'prompt' (columns: id, text)"
    )


def test_stl_eval_inputs_must_align(tmp_path):
    path = _write(tmp_path / "s.json", json.dumps({"instructions": ["a", "b"], "inputs": ["x"]}))
    assert _error(read_path, path, "stl_eval") == (
        f"{path}: field 'inputs' has 1 items but there are 2 instructions "
        "(expected the same number or none)"
    )


def test_jbb_flag_must_be_boolean(tmp_path):
    rec = {"goal": "g", "response": "r", "jailbroken": "yes"}
    path = _write(tmp_path / "a.json", json.dumps({"parameters": {}, "jailbreaks": [rec]}))
    msg = _error(read_path, path, "jbb")
    assert msg == f"{path}: record 0: field 'jailbroken' must be a boolean (got str)"


def test_generated_rows_keep_judge_fields_and_filter_harmful(tmp_path):
    rows = [
        {"prompt": "p1", "response": "r1", "harmful": True, "judge": "offline", "score": 0.9},
        {"prompt": "p2", "response": "r2", "harmful": False, "judge": "offline", "score": 0.1},
    ]
    path = _write(tmp_path / "gen.jsonl", "\n".join(json.dumps(r) for r in rows))
    kept = read_path(path, "generated")
    assert [(e.instruction, e.output) for e in kept] == [("p1", "r1")]
    assert kept[0].meta_dict == {"harmful": "true", "judge": "offline", "score": "0.9"}
    assert len(read_path(path, "generated", harmful_only=False)) == 2
    bad = _write(tmp_path / "bad.jsonl", json.dumps({"prompt": "p", "response": "r"}))
    assert _error(read_path, bad, "generated") == (
        f"{bad}:1: missing field 'harmful' (needed by harmful_only)"
    )


def test_generated_rows_give_back_the_bare_instruction(tmp_path):
    """generate keeps the templated prompt the model saw beside instruction and input; training
    templates again, so what is read back must be the bare instruction (else the prompt is
    wrapped twice)."""
    from tasft_ray.data.template import format_prompt

    as_written = {"id": "a", "instruction": "Name a colour.", "input": "in a word",
                  "prompt": format_prompt("Name a colour.", "in a word"), "response": "Red.",
                  "harmful": True}  # fmt: skip
    prompt_only = {"prompt": format_prompt("Name a fruit."), "response": "Pear.", "harmful": True}
    path = _write(tmp_path / "gen.jsonl", "\n".join(map(json.dumps, [as_written, prompt_only])))
    got = [(e.instruction, e.input, e.output) for e in read_path(path, "generated")]
    assert got == [("Name a colour.", "in a word", "Red."), ("Name a fruit.", "", "Pear.")]


def test_unknown_format_fields_and_options(tmp_path):
    path = _write(tmp_path / "x.json", "[]")
    assert _error(read_path, path, "parquet").startswith(
        f"{path}: unknown format 'parquet' (known:"
    )
    assert _error(read_path, path, "alpaca", {"answer": "a"}) == (
        f"{path}: fields: key 'answer' is not used by this format "
        "(expected one of: instruction, input, output)"
    )
    assert _error(read_path, DATA / "xstest/xstest_prompts.csv", "xstest", label="maybe").endswith(
        "option 'label' must be one of 'safe', 'unsafe', None (got 'maybe')"
    )


def test_unknown_registry_name_lists_known_names():
    msg = _error(_load, "alpacca")
    assert msg.startswith("unknown dataset 'alpacca' (known: advbench, adversarialqa, alpaca, ")
    assert "jbb_jailbroken" in msg and "xstest_completions" in msg


def test_registered_format_mismatch_is_an_error():
    msg = _error(load_source, SourceConfig(name="harmfulq", format="alpaca"), None)
    assert msg.startswith("dataset 'harmfulq': format 'alpaca' does not match its registered")


# --------------------------------------------------------------------------- missing / download


def _offline(monkeypatch, tmp_path, name: str) -> tuple[Path, Path]:
    """Empty root and cache, and a download URL that is refused at once."""
    root, cache = tmp_path / "root", tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("TASFT_CACHE_DIR", str(cache))
    entry = dataclasses.replace(reg.REGISTRY[name], url_base=REFUSED_PORT_URL)
    monkeypatch.setitem(reg.REGISTRY, name, entry)
    return root, cache


def test_missing_dataset_offline_says_where_it_looked(monkeypatch, tmp_path):
    root, cache = _offline(monkeypatch, tmp_path, "harmfulq")
    msg = _error(load_source, SourceConfig(name="harmfulq"), str(root))
    assert msg.startswith(
        f"dataset 'harmfulq' is not available: not in {root}/red_instruct (missing "
        f"dangerousqa.json), not in cache {cache}/data/red_instruct (missing dangerousqa.json), "
        f"download of {REFUSED_PORT_URL}dangerousqa.json failed ("
    )
    assert "refused" in msg.lower()
    assert msg.endswith(
        "; set TASFT_DATA_DIR or data.root to a folder containing red_instruct/dangerousqa.json"
    )
    assert list((cache / "data").iterdir()) == []  # no half-written folder left behind


def test_missing_dataset_without_any_root(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path, "xstest")
    monkeypatch.delenv("TASFT_DATA_DIR")
    msg = _error(reg.resolve_dataset, "xstest", None)
    assert "no local data root (data.root and TASFT_DATA_DIR unset)" in msg


def test_full_alpaca_is_absent_locally_and_fails_in_one_line(monkeypatch, tmp_path):
    real = reg.REGISTRY["alpaca"]
    assert real.url_base.startswith("https://raw.githubusercontent.com/tatsu-lab/stanford_alpaca/")
    assert real.hf == "tatsu-lab/alpaca" and real.files == ("alpaca_data.json",)
    assert not (DATA / "stanford_alpaca/alpaca_data.json").exists()
    _offline(monkeypatch, tmp_path, "alpaca")
    msg = _error(_load, "alpaca")  # root None -> $TASFT_DATA_DIR, the shipped data
    assert msg.startswith(
        f"dataset 'alpaca' is not available: not in {DATA}/stanford_alpaca "
        "(missing alpaca_data.json), not in cache "
    )
    assert "stanford_alpaca/alpaca_data.json" in msg.split("; set ")[-1]


def test_path_sources_with_format(tmp_path):
    src = SourceConfig(path=str(DATA / "red_instruct/dangerousqa.json"), format="red_instruct")
    assert len(load_source(src, None)) == 200
    folder = DATA / "jailbreakbench_artifacts/attack-artifacts"
    assert len(load_source(SourceConfig(path=str(folder), format="jbb"), None)) == 750
    rows = [{"question": "q", "answer": "a"}]
    path = _write(tmp_path / "qa.jsonl", json.dumps(rows[0]))
    src = SourceConfig(
        path=str(path), format="alpaca", fields={"instruction": "question", "output": "answer"}
    )
    assert load_source(src, None) == [Example("q", "", "a")]


class _Server:
    """A local HTTP file server that records the paths it was asked for."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        handler = partial(Handler, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    site = tmp_path / "site"
    recs = [{"instruction": f"task {i}", "input": "", "output": f"answer {i}"} for i in range(3)]
    _write(site / "sub/a.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n")
    _write(site / "b.json", json.dumps(recs[:2]))
    _write(site / "c.json", json.dumps(recs[:1]))
    (site / "d.jsonl.gz").write_bytes(gzip.compress((site / "sub/a.jsonl").read_bytes()))
    cache = tmp_path / "cache"
    monkeypatch.setenv("TASFT_CACHE_DIR", str(cache))
    server = _Server(site)
    yield site, cache, server
    server.close()


def _register(monkeypatch, name: str, files: tuple[str, ...], url: str, **kw) -> None:
    entry = reg.DatasetEntry(
        name=name, folder="served_set", files=files, format="alpaca", url_base=url, **kw
    )
    monkeypatch.setitem(reg.REGISTRY, name, entry)


def test_download_lands_in_cache_once(served, monkeypatch, tmp_path):
    site, cache, server = served
    _register(monkeypatch, "served", ("sub/a.jsonl", "b.json"), server.url)
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    entry, folder = reg.resolve_dataset("served", str(empty_root))
    assert folder == cache / "data/served_set"
    assert (folder / "sub/a.jsonl").read_bytes() == (site / "sub/a.jsonl").read_bytes()
    assert sorted(server.requests) == ["/b.json", "/sub/a.jsonl"]
    assert [p.name for p in (cache / "data").iterdir()] == ["served_set"]  # no temp dirs left
    assert len(load_source(SourceConfig(name="served"), str(empty_root))) == 3 + 2
    assert len(server.requests) == 2  # second resolve used the cache

    # another entry sharing the folder adds its file without disturbing the first
    _register(monkeypatch, "served_more", ("c.json", "b.json"), server.url)
    reg.resolve_dataset("served_more", str(empty_root))
    assert server.requests[2:] == ["/c.json"]
    assert (folder / "sub/a.jsonl").exists() and (folder / "c.json").exists()


def test_failed_download_leaves_nothing(served, monkeypatch):
    site, cache, server = served
    _register(monkeypatch, "served_bad", ("b.json", "missing.json"), server.url)
    monkeypatch.delenv("TASFT_DATA_DIR")
    msg = _error(reg.resolve_dataset, "served_bad", None)
    assert f"download of {server.url}missing.json failed (HTTP 404 File not found)" in msg
    assert list((cache / "data").iterdir()) == []


def test_gzipped_remote_is_stored_plain(served, monkeypatch):
    site, cache, server = served
    _register(monkeypatch, "served_gz", ("d.jsonl",), server.url, remote_gzip=True)
    monkeypatch.delenv("TASFT_DATA_DIR")
    _, folder = reg.resolve_dataset("served_gz", None)
    assert (folder / "d.jsonl").read_bytes() == (site / "sub/a.jsonl").read_bytes()
    assert server.requests == ["/d.jsonl.gz"]


def test_url_source_is_cached(served):
    site, cache, server = served
    src = SourceConfig(url=server.url + "sub/a.jsonl", format="alpaca")
    assert len(load_source(src, None)) == 3
    assert len(load_source(src, None)) == 3
    assert server.requests == ["/sub/a.jsonl"]
    assert [p.name for p in (cache / "urls").rglob("*") if p.is_file()] == ["a.jsonl"]
    bad = SourceConfig(url=server.url + "nope.jsonl", format="alpaca")
    assert _error(load_source, bad, None) == (
        f"url source {server.url}nope.jsonl: download failed (HTTP 404 File not found); "
        "download the file yourself and use a path source instead"
    )


def test_hub_failure_is_one_line(tmp_path):
    """Runs in a child process: the hub client reads its offline switches at import time."""
    code = (
        "from tasft_ray.config import SourceConfig\n"
        "from tasft_ray.data import DataError, load_source\n"
        "try:\n"
        "    load_source(SourceConfig(hf='tatsu-lab/alpaca', format='alpaca'), None)\n"
        "except DataError as exc:\n"
        "    print(exc)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stderr[-2000:]
    assert lines[0].startswith("hf dataset 'tatsu-lab/alpaca' split 'train': could not load (")


def test_readers_cover_every_config_format():
    from typing import get_args

    from tasft_ray.config import SourceFormat

    assert set(READERS) == set(get_args(SourceFormat))


def test_source_options_reach_the_reader():
    folder = Path(os.environ["TASFT_DATA_DIR"]) / "jailbreakbench_artifacts" / "attack-artifacts"
    refused = load_source(
        SourceConfig(path=str(folder), format="jbb", options={"jailbroken": False})
    )
    assert len(refused) == 436 and all(e.meta_dict["jailbroken"] == "false" for e in refused)
    named = load_source(SourceConfig(name="xstest", options={"label": "unsafe"}))
    assert len(named) == 200
    with pytest.raises(DataError, match=r"format 'jbb' has no option \['colour'\]"):
        load_source(SourceConfig(path=str(folder), format="jbb", options={"colour": 1}))


def test_quality_sets_choices_and_labels(tmp_path):
    piqa = _load("piqa")
    assert all(len(json.loads(ex.meta_dict["choices"])) == 2 for ex in piqa)
    labels = [json.loads(ex.meta_dict["label"]) for ex in piqa]
    assert set(labels) == {0, 1}  # aligned with valid-labels.lst, both answers occur
    boolq = _load("boolq")[0]
    assert boolq.input and json.loads(boolq.meta_dict["choices"]) == ["no", "yes"]
    obqa = _load("openbookqa")[0]  # "answer": "B. quit eating lunch out"
    assert json.loads(obqa.meta_dict["choices"])[json.loads(obqa.meta_dict["label"])] == (
        "quit eating lunch out"
    )
    bad = _write(
        tmp_path / "bad.jsonl", '{"question": "q", "options": "A. x\\nB. y", "answer": "C. z"}'
    )
    msg = _error(load_source, SourceConfig(path=str(bad), format="openbookqa"))
    assert "answer 'C. z' not among options ['A', 'B']" in msg
    (tmp_path / "p").mkdir()
    _write(tmp_path / "p" / "valid.jsonl", '{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    _write(tmp_path / "p" / "valid-labels.lst", "0\n1\n")
    msg = _error(load_source, SourceConfig(path=str(tmp_path / "p"), format="piqa"))
    assert "2 labels for 1 questions" in msg


def test_renamed_local_copy_downloads_from_its_upstream_path(served, monkeypatch):
    site, cache, server = served
    _register(monkeypatch, "served_renamed", ("a_renamed.jsonl",), server.url,
              remote={"a_renamed.jsonl": "sub/a.jsonl"})  # fmt: skip
    monkeypatch.delenv("TASFT_DATA_DIR")
    _, folder = reg.resolve_dataset("served_renamed", None)
    assert server.requests == ["/sub/a.jsonl"]
    assert (folder / "a_renamed.jsonl").read_bytes() == (site / "sub/a.jsonl").read_bytes()


def test_path_source_falls_back_until_the_file_exists(tmp_path, caplog):
    target = tmp_path / "generated.jsonl"
    src = SourceConfig(path=str(target), format="alpaca", fallback={"name": "alpaca_1k"})
    with caplog.at_level("WARNING"):
        assert len(load_source(src, None)) == 1000  # the fallback, with a warning
    assert "does not exist yet: using its fallback name 'alpaca_1k'" in caplog.text
    _write(target, json.dumps([{"instruction": "i", "output": "o"}]))
    assert len(load_source(src, None)) == 1  # the file, once it exists
    with pytest.raises(ValueError, match="file not found"):
        SourceConfig(path=str(tmp_path / "none.jsonl"), format="alpaca")
    with pytest.raises(ValueError, match="'fallback' only applies to a 'path' source"):
        SourceConfig(name="alpaca_1k", fallback={"name": "alpaca_1k"})


def test_a_source_splits_by_prompt_into_disjoint_train_and_heldout_parts():
    """The held-out responses of eval.likelihood can come from the source the training pairs
    are drawn from: no prompt (JailbreakBench goal) is in both parts, together they are the
    whole source, and each prompt's side is fixed by its text alone."""
    from tasft_ray.data.sources import in_heldout, read_source

    every = load_source(SourceConfig(name="jbb_jailbroken"))
    train = read_source(SourceConfig(name="jbb_jailbroken", prompt_part="train"))
    held = load_source(SourceConfig(name="jbb_jailbroken", prompt_part="heldout"))
    goals = {e.instruction for e in train.examples}, {e.instruction for e in held}
    assert goals[0] and goals[1] and not goals[0] & goals[1]
    assert len(train.examples) + len(held) == len(every)
    assert 0.1 < len(goals[1]) / len(goals[0] | goals[1]) < 0.3  # about heldout_share = 0.2
    assert train.name == "jbb_jailbroken [train prompts]"  # what the run's lineage shows
    # the side is the prompt's own: the same in another source (the refusals to the same goals),
    # whatever the spacing or case
    refused = load_source(SourceConfig(name="jbb_refused", prompt_part="heldout"))
    assert refused and not {e.instruction for e in refused} & goals[0]
    assert all(in_heldout(g, 0.2) for g in goals[1]) and not any(in_heldout(g, 0.2)
                                                                 for g in goals[0])
    some = next(iter(goals[1]))
    assert in_heldout(f"  {some.upper()} ", 0.2)
    wider = load_source(SourceConfig(name="jbb_jailbroken", prompt_part="heldout",
                                     heldout_share=0.5))  # fmt: skip
    assert {e.instruction for e in held} < {e.instruction for e in wider}
