"""Bad input, wider: every mistake a new user can make with a config file, a config key, a data
file, a flag or a service is one line naming the file or key, exit code 2, no traceback, and
nothing written (no output folder, lock, partial file or MLflow store) — all before any work.

Each case runs the CLI in this process (conftest ``cli_main``) in an empty folder holding only
the inputs the case wrote. The table in docs/reliability.md ("Bad input") is made from the same
list and checked against it, row by row; after changing a case or a message, regenerate it:

    TASFT_WRITE_RELIABILITY=1 python -m pytest -n 0 tests/test_bad_input.py
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ERROR, TUNE_ERROR

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
BEGIN, END = "<!-- bad-input table: begin -->", "<!-- bad-input table: end -->"
WRITE = bool(os.environ.get("TASFT_WRITE_RELIABILITY"))
REPO = str(Path(__file__).resolve().parent.parent)
TINY = ("--config", "tiny")
ALPACA_ROW = '{"instruction": "Name a colour.", "output": "Blue."}\n'


@dataclass(frozen=True)
class Case:
    area: str
    argv: tuple[str, ...]
    expect: str  # in the error line: the key or file it names, and what was expected
    files: dict[str, str | bytes] = field(default_factory=dict)  # inputs written first
    dirs: tuple[str, ...] = ()  # folders made first
    unreadable: str = ""  # a file of ``files`` made mode 000
    env: dict[str, str] = field(default_factory=dict)
    did: str = ""  # what the files hold, when their bytes do not show it

    @property
    def prefix(self) -> str:
        return TUNE_ERROR if self.argv[:1] == ("tune",) else ERROR


def c(area: str, *argv: str, expect: str, **kw) -> Case:
    return Case(area, argv, expect, **kw)


def cfg(area: str, *overrides: str, expect: str, command: str = "config", **kw) -> Case:
    """`tasft-ray COMMAND --config tiny --set ...`"""
    flags = [x for o in overrides for x in ("--set", o)]
    return Case(area, (command, *TINY, *flags), expect, **kw)


def yaml_file(text: str | bytes, expect: str, command: str = "config", **kw) -> Case:
    return Case("config file", (command, "--config", "run.yaml"), expect, {"run.yaml": text}, **kw)


# fmt: off
CASES: list[Case] = [
    # ------------------------------------------------------------------ the config file itself
    c("config file", "train", "--config", "configs/tiny.yml",
      expect="config file not found: configs/tiny.yml"),
    c("config file", "train", "--config", "myconfigs", dirs=("myconfigs",),
      expect="--config myconfigs: is a folder, expected a YAML file"),
    yaml_file("", "run.yaml: empty; expected a mapping of sections", command="train"),
    yaml_file("# TODO: settings\n", "run.yaml: empty; expected a mapping of sections"),
    yaml_file("- model: {name: tiny}\n- loss: {lam: 2}\n", "run.yaml: expected a mapping of "
              "sections"),
    yaml_file("tiny\n", "at the top level, not a string"),
    yaml_file("loss:\n\tlam: 2\n", "run.yaml: line 2 invalid YAML (found character '\\t'"),
    yaml_file("loss:\n  lam: 1\nloss:\n  method: nlcl\n",
              "run.yaml: line 3 invalid YAML (duplicate key 'loss')"),
    yaml_file("loss: {method: emd, lam: 1, lam: 4}\n", "invalid YAML (duplicate key 'lam')"),
    yaml_file("lora:\n  target_modules: [q_proj, v_proj\n", "run.yaml: line 3 invalid YAML"),
    yaml_file("loss:\n  lam:2\n", "run.yaml: loss: expected a mapping of keys"),
    yaml_file("model:\nloss: {lam: 2}\n", "run.yaml: model: empty; give its keys"),
    yaml_file("loss: emd\n", "run.yaml: loss: expected a mapping of keys (key: value), not a "
              "value (got 'emd')"),
    yaml_file(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8", "run.yaml: not a YAML file (not "
              "UTF-8", did="`run.yaml`: an image renamed .yaml"),
    yaml_file("# r\xe9glages\nloss: {lam: 2}\n".encode("latin-1"), "run.yaml: not a YAML file",
              did="`run.yaml` saved as Latin-1 (a `# réglages` comment)"),
    yaml_file("loss: {lam: 2}\n", "run.yaml: cannot read (Permission denied)", command="train",
              unreadable="run.yaml"),
    # ------------------------------------------------------------------ --set syntax
    cfg("--set", "loss.lam:2", expect="override 'loss.lam:2': expected key=value"),
    cfg("--set", "=2", expect="override '=2': expected key=value"),
    cfg("--set", "loss..lam=2", expect="override 'loss..lam=2': 'loss..lam' has an empty part"),
    cfg("--set", "lora.target_modules=[q_proj, v_proj", command="train",
        expect="override 'lora.target_modules=[q_proj, v_proj': invalid YAML"),
    c("--set", "train", *TINY, "--set", "loss.lam", "2",
      expect="unrecognized arguments: 2 (config values are --set KEY=VALUE"),
    cfg("--set", "train.lr.warmup=1", expect="'train.lr' is a value, not a section"),
    # ------------------------------------------------------------------ types and ranges
    cfg("types", "lora.r=eight", expect="lora.r: Input should be a valid integer"),
    cfg("types", "lora.r=8.5", expect="lora.r: Input should be a valid integer, got a number "
        "with a fractional part"),
    cfg("types", "train.max_steps=1e3", command="train",
        expect="train.max_steps: Input should be a valid integer, unable to parse string"),
    cfg("types", "loss.lam=.nan", expect="loss.lam: Input should be a finite number (got nan)"),
    cfg("types", "train.lr=.inf", command="train",
        expect="train.lr: Input should be a finite number (got inf)"),
    cfg("types", "loss.lam=nan", expect="loss.lam: Input should be a finite number"),
    cfg("types", "sweep.toxic_search={counts: [10, 50], target: .nan}",
        expect="sweep.toxic_search.target: Input should be a finite number"),
    cfg("types", "train.lr=-1e-4", expect="train.lr: Input should be greater than 0"),
    cfg("types", "loss.lam=[1, 4]", expect="loss.lam: Input should be a valid number (got [1, 4])"),
    cfg("types", "lora.target_modules=q_proj", expect="lora.target_modules: Input should be a "
        "valid list (got 'q_proj')"),
    cfg("types", "lora.target_modules=[]", expect="lora.target_modules: List should have at least"),
    cfg("types", "engine.use_gpu=maybe", expect="engine.use_gpu: Input should be a valid boolean"),
    cfg("types", "model.revision=1.0", expect="model.revision: Input should be a valid string "
        "(got 1.0: YAML reads that as a number; quote it)"),
    cfg("types", "train.lr=~", expect="train.lr: Input should be a valid number (got None)"),
    cfg("types", "train.micro_batch_size=0", expect="train.micro_batch_size: Input should be "
        "greater than or equal to 1"),
    cfg("types", "lora.dropout=1.0", expect="lora.dropout: Input should be less than 1"),
    cfg("types", "train.warmup_ratio=1.5", expect="train.warmup_ratio: Input should be less "
        "than or equal to 1"),
    cfg("types", "engine.zero_stage=4", expect="engine.zero_stage: Input should be less than or "
        "equal to 3"),
    cfg("types", "data.max_length=8", expect="data.max_length: Input should be greater than or "
        "equal to 16"),
    cfg("types", "generate.sampling.top_p=0", expect="generate.sampling.top_p: Input should be "
        "greater than 0"),
    cfg("types", 'tracking.experiment=""', expect="tracking.experiment: String should have at "
        "least 1 character"),
    cfg("types", "engine.max_failures=-2", expect="engine.max_failures: Input should be greater "
        "than or equal to -1"),
    # ------------------------------------------------------------------ unknown names
    cfg("unknown key", "train.learning_rate=1e-4",
        expect="train.learning_rate: unknown key (did you mean train.lr?)"),
    cfg("unknown key", "train.lam=2", expect="train.lam: unknown key (did you mean loss.lam?)"),
    cfg("unknown key", "modle.name=tiny", expect="modle: unknown key (did you mean model?)"),
    yaml_file("model: {name: tiny}\nlora: {rank: 4}\n",
              "run.yaml: lora.rank: unknown key (did you mean lora.r?)"),
    cfg("unknown value", "loss.method=EMD", expect="loss.method: Input should be 'sft', 'emd'"),
    cfg("unknown value", "model.dtype=fp16", expect="model.dtype: Input should be 'float32', "
        "'bfloat16' or 'float16' (got 'fp16')"),
    cfg("unknown value", "engine.precision=float16", expect="engine.precision: Input should be "
        "'fp32', 'bf16' or 'fp16'"),
    cfg("unknown value", "sweep.search=bayes", expect="sweep.search: Input should be 'grid', "
        "'random' or 'optuna'"),
    cfg("unknown value", "train.scheduler=cosine_with_restarts",
        expect="train.scheduler: Input should be 'cosine', 'linear' or 'constant'"),
    cfg("unknown value", "eval.checkpoints=every", expect="eval.checkpoints: Input should be "
        "'final' or 'all'"),
    cfg("unknown value", "data.safe={path: mine.jsonl, format: jsonl}", files={
        "mine.jsonl": ALPACA_ROW}, expect="data.safe.format: Input should be 'alpaca'"),
    cfg("unknown value", "eval.benchmarks=[advbench2]", command="evaluate",
        expect="eval.benchmarks: unknown ['advbench2']; known: ['advbench'"),
    cfg("unknown value", "eval.quality_tasks=[mmlu]", command="evaluate",
        expect="eval.quality_tasks: unknown ['mmlu']; known: ['piqa', 'boolq', 'openbookqa']"),
    cfg("unknown value", "eval.benchmarks=[{name: my set, path: p.csv, format: csv}]",
        files={"p.csv": "instruction\nx\n"},
        expect="eval.benchmarks.0.name: String should match pattern"),
    cfg("unknown value", "model.name=no-such/model", command="train",
        expect="model.name 'no-such/model': cannot load from a local directory or the hub"),
    cfg("unknown value", "model.name=gguf:/no/such.gguf", command="train",
        expect="model.name 'gguf:/no/such.gguf': no such GGUF file"),
    cfg("unknown value", "lora.target_modules=[query]", command="train",
        expect="lora.target_modules: ['query'] not in the model"),
    # ------------------------------------------------------------------ settings that contradict
    cfg("contradiction", "train.num_workers=4", "train.global_batch_size=16",
        expect="train.global_batch_size=16 but micro_batch_size x grad_accum x num_workers = 32"),
    cfg("contradiction", "eval.validation.every=3", expect="eval.validation.every=3 must be a "
        "multiple of train.checkpoint_every=5"),
    cfg("contradiction", "train.checkpoint_every=0", "eval.validation.every=4",
        expect="eval.validation.every=4 must be a multiple of train.checkpoint_every=0"),
    cfg("contradiction", "sweep.objective={minimize: val/harm_score}", command="tune",
        expect="sweep.objective needs validation during training"),
    cfg("contradiction", "sweep.toxic_search={counts: [10, 50], target: 0.05}", command="tune",
        expect="sweep.toxic_search needs sweep.objective"),
    cfg("contradiction", "sweep.search=optuna", "sweep.space={loss.lam: {grid: [0, 1]}}",
        command="tune", expect="sweep.search=optuna samples its values: use choice/uniform/"
        "loguniform in sweep.space, not grid or sweep.cases"),
    cfg("contradiction", "sweep.scheduler=asha", "sweep.space={loss.lam: {grid: [0, 4]}}",
        command="tune", expect="sweep.scheduler=asha ranks trials: set sweep.objective"),
    cfg("contradiction", "sweep.scheduler=asha", "sweep.metric=loss/total",
        "sweep.space={loss.lam: {grid: [0, 4]}}", command="tune",
        expect="sweep.metric=loss/total is a training loss"),
    cfg("unknown value", "eval.validation.every=5",
        "eval.validation.benchmarks=[advbench]", "sweep.objective={minimize: val/harm_score, "
        "constraints: {quality: {min: 0.5}}}", command="tune",
        expect="sweep.objective: unknown metric 'quality' (did you mean val/quality? validation "
        "reports val/harm_score"),
    cfg("unknown value", "eval.in_sweep=true", "eval.benchmarks=[harmfulqq]", command="tune",
        expect="eval.benchmarks: unknown ['harmfulqq']"),
    cfg("contradiction", "eval.validation.every=5", "eval.validation.benchmarks=[xstest_safe]",
        command="tune", expect="eval.validation.benchmarks: ['xstest_safe'] are not harm "
        "benchmarks"),
    cfg("contradiction", "sweep.objective={minimize: val/harm_score, maximize: val/quality}",
        expect="sweep.objective: give exactly one of minimize, maximize"),
    cfg("contradiction", "sweep.objective.constraints={val/quality: {min: 0.5, max: 0.9}}",
        expect="give exactly one of max, min, max_vs_sft, min_vs_sft"),
    cfg("contradiction", "loss.method=nlcl", "data.toxic_count=0", command="train",
        expect="loss.method=nlcl needs safety-related pairs but data.toxic_count is 0"),
    cfg("contradiction", "engine.kind=deepspeed", command="train",
        expect="engine.kind=deepspeed needs a distributed launch"),
    cfg("contradiction", "data.safe={name: alpaca_1k, path: mine.jsonl, format: alpaca}",
        files={"mine.jsonl": ALPACA_ROW},
        expect="data.safe: give exactly one of name, path, url, hf (got ['name', 'path'])"),
    cfg("contradiction", "data.harmful={name: jbb_jailbroken, fallback: {name: advbench}}",
        expect="data.harmful: 'fallback' only applies to a 'path' source"),
    cfg("contradiction", "eval.judges=[offline]", expect="eval.judges: offline listed twice"),
    cfg("contradiction", "eval.judges_options={deberta: {threshold: 0.4}}",
        expect="eval.judges_options: deberta not in eval.judges"),
    c("contradiction", "generate", *TINY, "--contrastive", "--set", "loss.method=sft", "--set",
      "data.toxic_count=0",
      expect="generate --contrastive takes the toxic words from the mixture's toxic prompts"),
    cfg("contradiction", "train.micro_batch_size=64", "data.safe_count=4", "data.toxic_count=2",
        command="train", expect="the mixture has 6 examples, fewer than train.micro_batch_size"),
    # ------------------------------------------------------------------ sweep values
    cfg("sweep", "sweep.space={loss.lam: [0, 1, 4]}", command="tune",
        expect="sweep.space.loss.lam: expected one of {grid: [...]}, {choice: [...]}"),
    cfg("sweep", "sweep.space={loss.lam: {grid: []}}", expect="sweep.space.loss.lam: grid is "
        "empty"),
    cfg("sweep", "sweep.space={train.lr: {loguniform: [0, 0.01]}}", command="tune",
        expect="sweep.space.train.lr: loguniform: LOW must be above 0 (got 0.0)"),
    cfg("sweep", "sweep.space={loss.lam: {uniform: [8, 1]}}", expect="sweep.space.loss.lam: "
        "uniform: LOW must be below HIGH (got [8.0, 1.0])"),
    cfg("sweep", "sweep.space={data.toxic_count: {uniform: [10, 100]}}", command="tune",
        expect="sweep.space data.toxic_count: changes the data the driver prepares"),
    cfg("sweep", "sweep.space={lora.r: {grid: [8, 0]}}", command="tune",
        expect="sweep trial with lora.r=0: lora.r: Input should be greater than or equal to 1"),
    cfg("sweep", "sweep.cases=[{loss.lamda: 2}]", expect="sweep.cases[0] key 'loss.lamda' is "
        "not a config key"),
    # ------------------------------------------------------------------ data files and sources
    yaml_file("data:\n  safe: alpaca_1k\n", "run.yaml: data.safe: expected a source: {name: "
              "alpaca_1k} for a registered data set", command="train"),
    cfg("data", "data.safe={path: my_alpaca.json, format: alpaca}", command="train",
        expect="data.safe: file not found: my_alpaca.json"),
    cfg("data", "data.safe={path: alpaca_dir, format: alpaca}", command="train",
        dirs=("alpaca_dir",), expect="data.safe: alpaca_dir: is a folder, expected a file"),
    cfg("data", "data.harmful={path: harmful.jsonl, format: generated}", command="train",
        files={"harmful.jsonl": ""}, expect="data.harmful (path 'harmful.jsonl'): no records"),
    cfg("data", "data.safe={path: mine.jsonl, format: alpaca}", command="train",
        files={"mine.jsonl": ALPACA_ROW + '{"instruction": "Add 2 and 2", "output": 4\n'},
        expect="data.safe: mine.jsonl:2: invalid JSON"),
    cfg("data", "data.safe={path: mine.jsonl, format: alpaca}", command="train",
        files={"mine.jsonl": '{"prompt": "Name a colour.", "response": "Blue."}\n'},
        expect="data.safe: mine.jsonl:1: missing field 'instruction'"),
    cfg("data", "data.safe={path: mine.json, format: alpaca}", command="train",
        files={"mine.json": '["Name a colour.", "Blue."]\n'},
        expect="data.safe: mine.json: record 0: expected a JSON object (got str)"),
    cfg("data", "data.safe={path: mine.json, format: alpaca}", command="train",
        files={"mine.json": b'[{"instruction": "caf\xe9", "output": "x"}]'},
        expect="data.safe: mine.json: not UTF-8 text",
        did="`mine.json` saved as Latin-1 (`café`)"),
    cfg("data", "data.safe={path: mine.json, format: alpaca}", command="train",
        files={"mine.json": "[" + ALPACA_ROW + "]"}, unreadable="mine.json",
        expect="data.safe: mine.json: cannot read (Permission denied)"),
    cfg("data", "data.safe={name: alpaca_52k}", command="train",
        expect="data.safe: unknown dataset 'alpaca_52k' (known: advbench"),
    cfg("data", "data.safe={name: alpaca_1k, format: csv}", command="train",
        expect="data.safe: dataset 'alpaca_1k': format 'csv' does not match its registered"),
    cfg("data", "data.harmful={name: jbb_jailbroken, options: {jailbroken: maybe}}",
        command="train", expect="data.harmful: $TASFT_DATA_DIR/jailbreakbench_artifacts/attack-"
        "artifacts: option 'jailbroken' must be one of True, False, None (got 'maybe')"),
    cfg("data", "data.harmful={name: jbb_jailbroken, options: {category: Malware}}",
        command="tune", expect="data.harmful: $TASFT_DATA_DIR/jailbreakbench_artifacts/attack-"
        "artifacts: format 'jbb' has no option ['category']"),
    cfg("data", "data.safe={url: http://127.0.0.1:9/alpaca.json, format: alpaca}",
        command="train", expect="data.safe: url source http://127.0.0.1:9/alpaca.json: download "
        "failed"),
    cfg("data", "data.safe={hf: tatsu-lab/alpaca, format: alpaca}", command="train",
        env={"HF_HUB_OFFLINE": "1"},
        expect="data.safe: hf dataset 'tatsu-lab/alpaca' split 'train': could not load"),
    cfg("data", "data.safe_count=5000", command="tune",
        expect="data.safe_count=5000 but data.safe (name 'alpaca_1k') has only 1000 usable pairs"),
    cfg("data", "eval.benchmarks=[{name: mine, path: prompts.csv, format: csv}]",
        command="evaluate", files={"prompts.csv": "id,goal\n1,Say hello\n"},
        expect="eval.benchmarks (mine): prompts.csv:1: missing column 'instruction' (columns: "
        "id, goal)"),
    cfg("data", "generate.prompts=[{path: prompts.jsonl, format: alpaca}]", command="generate",
        files={"prompts.jsonl": ALPACA_ROW + '{"instruction": oops, "output": ""}\n'},
        expect="generate.prompts[0]: prompts.jsonl:2: invalid JSON"),
    cfg("data", "eval.likelihood={harmful: {path: held_out.jsonl, format: generated}}",
        command="evaluate", expect="eval.likelihood.harmful: file not found: held_out.jsonl"),
    # ------------------------------------------------------------------ flags of each command
    c("flags", expect="the following arguments are required: command (see tasft-ray --help)"),
    c("flags", "trian", *TINY, expect="argument command: invalid choice: 'trian'"),
    c("flags", "train", *TINY, "--lr", "1e-4", expect="unrecognized arguments: --lr 1e-4 (config "
      "values are --set KEY=VALUE; see tasft-ray train --help)"),
    c("flags", "train", *TINY, "--resume", expect="--resume: no checkpoint under runs/tiny/"
      "checkpoints"),
    c("flags", "evaluate", *TINY, "--limit", "ten",
      expect="argument --limit: invalid int value: 'ten' (see tasft-ray evaluate --help)"),
    c("flags", "evaluate", *TINY, "--limit", "-1",
      expect="eval.max_prompts: Input should be greater than or equal to 1"),
    c("flags", "generate", *TINY, "--target", "many",
      expect="argument --target: invalid int value: 'many'"),
    c("flags", "generate", *TINY, "--output", "generated", dirs=("generated",),
      expect="generate.output generated: is a folder, expected a file"),
    c("flags", "evaluate", *TINY, "--adapter", "adapter_model.safetensors",
      files={"adapter_model.safetensors": b"\x00" * 16}, did="a weights file",
      expect="eval.adapter: adapter_model.safetensors is a file; expected an adapter folder"),
    c("flags", "evaluate", *TINY, "--adapter", "mlflow:",
      expect="eval.adapter: mlflow:: expected mlflow:RUN_ID"),
    c("flags", "evaluate", *TINY, "--adapter", "mlflow:0a1b2c3d",
      expect="eval.adapter: mlflow:0a1b2c3d: no such MLflow run at sqlite:///$PWD/mlflow.db"),
    c("flags", "report", expect="one of the arguments --parent-run --experiment is required"),
    c("flags", "report", "--parent-run", "0a1b2c3d", "--experiment", "tasft-ray",
      expect="argument --experiment: not allowed with argument --parent-run"),
    c("flags", "report", "--parent-run", "0a1b2c3d", expect="tracking.uri sqlite:///$PWD/"
      "mlflow.db: no MLflow store there (nothing was tracked there)"),
    c("flags", "tune", *TINY, "--resume", expect="argument --resume: expected one argument"),
    c("flags", "tune", "--resume", "runs/ray", dirs=("runs/ray",),
      expect="--resume runs/ray: not a tasft-ray sweep folder (no sweep_config.yaml)"),
    c("flags", "tune", *TINY, "--resume", "runs/ray/sweep",
      expect="--resume uses the sweep's saved config; drop --config"),
    # ------------------------------------------------------------------ services and outputs
    cfg("services", "tracking.uri=localhost:5000", command="generate",
        expect="tracking.uri localhost:5000: no scheme; an MLflow server is http://localhost:5000"),
    c("services", "evaluate", *TINY, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
      expect="tracking.uri http://127.0.0.1:9: MLflow server unreachable"),
    cfg("services", "tracking.uri=https://", command="evaluate",
        expect="tracking.uri https://: MLflow server unreachable (no host given)"),
    cfg("services", "tracking.uri=sqlite:///notes.txt", command="evaluate", files={
        "notes.txt": "my notes\n"}, expect="tracking.uri sqlite:///$PWD/notes.txt: "
        "$PWD/notes.txt is not an SQLite database"),
    cfg("services", "tracking.uri=sqlite:///mlruns", command="generate", dirs=("mlruns",),
        expect="tracking.uri $PWD/mlruns: is a folder, expected a file"),
    cfg("services", "eval.output_dir=results.json", command="evaluate",
        files={"results.json": "{}\n"}, expect="eval.output_dir results.json: is a file, "
        "expected a folder"),
    cfg("services", "train.output_dir=notes.txt/run1", command="train",
        files={"notes.txt": "my notes\n"}, expect="train.output_dir notes.txt/run1: $PWD/"
        "notes.txt is a file, so nothing can be created below it"),
    cfg("services", "sweep.storage=notes.txt/sweeps", command="tune",
        files={"notes.txt": "my notes\n"}, expect="sweep.storage $PWD/notes.txt/sweeps: $PWD/"
        "notes.txt is a file"),
    cfg("services", "sweep.storage=s3://my-bucket/sweeps", command="tune", env={
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret", "AWS_DEFAULT_REGION": "us-east-1"},
        expect="sweep.storage s3://my-bucket/sweeps: cannot write there"),
    cfg("services", "sweep.storage=foo://bucket/sweeps", command="tune",
        expect="sweep.storage foo://bucket/sweeps: not a storage URI pyarrow can open"),
    # ------------------------------------------------------------------ judges
    cfg("judges", "eval.judge=llama_guard", command="evaluate",
        expect="eval.judge: Input should be 'offline', 'deberta', 'openai-moderation', "
        "'llama-guard'"),
    cfg("judges", "eval.judges=[openai-moderation]", command="evaluate",
        expect="eval.judges (openai-moderation): openai-moderation judge needs the "
        "OPENAI_API_KEY environment variable"),
    cfg("judges", "generate.judge=openai-moderation", command="generate",
        expect="generate.judge: openai-moderation judge needs the OPENAI_API_KEY"),
    cfg("judges", "eval.alpaca_eval.judge_model=gpt-4o-mini", command="evaluate",
        expect="eval.alpaca_eval.judge_model needs the OPENAI_API_KEY environment variable"),
    cfg("judges", "generate.judge_options={treshold: 0.5}", command="generate",
        expect="generate.judge: judge 'offline': unknown option(s) treshold"),
    cfg("judges", "eval.judge_options={threshold: 50}", command="evaluate",
        expect="eval.judge: judge 'offline': threshold must be a number in [0, 1] (got 50)"),
    cfg("judges", "generate.judge_options={threshold: high}", command="generate",
        expect="generate.judge: judge 'offline': threshold must be a number in [0, 1] (got "
        "'high')"),
]
# fmt: on


# ----------------------------------------------------------------------------- running a case


def _setup(case: Case, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in case.dirs:
        (root / d).mkdir(parents=True)
    for name, content in case.files.items():
        path = root / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.unreadable:
        os.chmod(root / case.unreadable, 0)
        if os.access(root / case.unreadable, os.R_OK):  # root: mode bits do not stop reads
            _emulate_mode_bits(monkeypatch)


def _emulate_mode_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the kernel does for any user but root: a file without read permission cannot be
    read (the product reads files through ``Path.read_text``)."""
    read_text = pathlib.Path.read_text

    def guarded(self, *args, **kwargs):
        if self.is_file() and not stat.S_IMODE(self.stat().st_mode) & 0o444:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", guarded)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _shown(line: str, root: Path) -> str:
    """The line as the doc shows it: this test's folder as $PWD, the data root, the repo."""
    line = line.replace(str(root), "$PWD").replace(REPO + "/", "")
    data = os.environ["TASFT_DATA_DIR"]  # as given, and resolved (a link in CI's layout)
    for form in sorted({str(Path(data).resolve()), str(Path(data).absolute())}, key=len)[::-1]:
        line = line.replace(form, "$TASFT_DATA_DIR")
    return line


RESULTS: dict[int, str] = {}


@pytest.mark.parametrize("n", range(len(CASES)), ids=[f"{i + 1}" for i in range(len(CASES))])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(n, cli_main, tmp_path, monkeypatch):
    import ray

    case = CASES[n]
    _setup(case, tmp_path, monkeypatch)
    before = _tree(tmp_path)
    line = cli_main(*case.argv, prefix=case.prefix)  # exit code 2, one line, no traceback
    shown = _shown(line, tmp_path)
    assert case.expect in shown, shown
    assert _tree(tmp_path) == before, sorted(_tree(tmp_path) - before)  # nothing written
    for name, content in case.files.items():  # and no input changed
        path = tmp_path / name
        os.chmod(path, 0o644)
        assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())
    assert not ray.is_initialized()  # failed before any work
    RESULTS[n] = shown
    if not WRITE:
        assert _row(n + 1, case, shown) in _doc(), (
            f"docs/reliability.md has no row for case {n + 1} as it runs now: {shown!r}; "
            "regenerate it (see this file's docstring)"
        )


def test_doc_table_is_the_case_list():
    """Every row of the doc is a case of this file (none stale); with TASFT_WRITE_RELIABILITY
    set and every case run, the table is rewritten from this run."""
    if WRITE:
        if len(RESULTS) < len(CASES):
            pytest.skip("run the whole file to regenerate the table")
        table = "\n".join([HEADER, *(_row(n + 1, CASES[n], RESULTS[n]) for n in sorted(RESULTS))])
        text = _doc()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(f"{text[:start]}\n{table}\n{text[end:]}")
    rows = [r for r in _doc()[_doc().index(BEGIN) : _doc().index(END)].splitlines()
            if re.match(r"^\| \d+ \|", r)]  # fmt: skip
    assert len(rows) == len(CASES) >= 60


def test_an_objective_may_name_exactly_what_validation_reports():
    """The config's list of validation metrics (an objective naming another is rejected) is
    what a validation reports."""
    from tasft_ray.evaluation.validation import SAFE_SOURCE, summarize_validation
    from tasft_ray.objective import VALIDATION_METRICS

    row = {"harmful": False, "score": 0.1, "refused": False, "response": "Blue."}
    rows = [dict(row, source="val/advbench"), dict(row, source=SAFE_SOURCE)]
    reported = summarize_validation(rows, {"piqa": [1.0, 2.0]}) | {"val/seconds": 1.0}
    assert set(reported) == set(VALIDATION_METRICS)


# ----------------------------------------------------------------------------- the doc's table

HEADER = (
    "| # | area | what the user did | the one line they get (stderr) | exit |\n"
    "|---|---|---|---|---|"
)


def _doc() -> str:
    return DOC.read_text()


def _code(text: str) -> str:
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _did(case: Case) -> str:
    env = " ".join(f"{k}={v}" for k, v in case.env.items())
    command = " ".join(x for x in (env, "tasft-ray", shlex.join(case.argv)) if x)
    parts = [_code(command)] + ([case.did] if case.did else [])
    for name, content in {} if case.did else case.files.items():
        shown = content if isinstance(content, str) else content.decode("latin-1")
        shown = shown.replace("\t", "\\t").replace("\n", "\\n")
        parts.append(f"{_code(name)}: {_code(shown) if shown else 'empty'}")
    parts += [f"{_code(d)} a folder" for d in case.dirs]
    parts += [f"{_code(case.unreadable)} mode 000"] if case.unreadable else []
    return "; ".join(parts)


def _row(number: int, case: Case, line: str) -> str:
    return f"| {number} | {case.area} | {_did(case)} | {_code(case.prefix + line)} | 2 |"
