"""Config: YAML + dotted overrides -> one validated object; every bad input is one clear line."""

from __future__ import annotations

import pytest

from tasft_ray.cli import main
from tasft_ray.config import CONFIG_DIR, Config, ConfigError, flatten, load_config


def test_every_shipped_config_validates():
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        cfg = load_config(path)
        assert isinstance(cfg, Config)


def test_paper_defaults():
    cfg = Config()
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.05)
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert (cfg.train.lr, cfg.train.micro_batch_size, cfg.train.grad_accum) == (1e-4, 3, 32)


def test_bare_name_and_overrides_parse_as_yaml():
    cfg = load_config("tiny", ["loss.lam=2.5", "loss.method=nlcl", "lora.target_modules=[q_proj]"])
    assert cfg.loss.lam == 2.5 and cfg.loss.method == "nlcl"
    assert cfg.lora.target_modules == ["q_proj"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("loss.lam=-1", "loss.lam: Input should be greater than or equal to 0 (got -1)"),
        ("loss.lamda=1", "loss.lamda: unknown key"),
        ("modle.name=x", "modle: unknown key"),
        (
            "loss.method=dpo",
            "loss.method: Input should be 'sft', 'emd', 'nlcl', 'kto', 'stl' or 'star'",
        ),
        ("data.toxic_count=-3", "data.toxic_count: Input should be greater than or equal to 0"),
        ("eval.stage.mode=remote", "eval.stage.mode: Input should be 'inline' or 'shared'"),
        ("eval.stage.evaluators=0", "eval.stage.evaluators: Input should be greater than or"),
        (
            "data.safe={path: /no/such/file.json, format: alpaca}",
            "data.safe: file not found: /no/such/file.json",
        ),
        ("data.safe={path: /tmp}", "data.safe: 'format' is required with 'path'"),
        (
            "train.global_batch_size=96",
            "train.global_batch_size=96 but micro_batch_size x grad_accum x num_workers = 8",
        ),
        (
            "sweep.space={loss.lambda: {grid: [0, 1]}}",
            "sweep.space key 'loss.lambda' is not a config key",
        ),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override])
    msg = str(info.value)
    assert expected in msg, msg
    assert "\n" not in msg
    # blamed on the override that set the key (a rule across keys: the file with the override)
    tiny = CONFIG_DIR / "tiny.yaml"
    assert msg.startswith((f"override '{override}'", f"{tiny} with override '{override}'"))


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config("tiny", ["loss.lam"])
    with pytest.raises(ConfigError, match="'loss.lam' is a value, not a section"):
        load_config("tiny", ["loss.lam.x=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: nope"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: {lam: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ invalid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_global_batch_matches_paper():
    cfg = load_config(
        "tiny", ["train.micro_batch_size=3", "train.grad_accum=32", "train.global_batch_size=96"]
    )
    assert cfg.train.global_batch_size == 96


def test_with_overrides_revalidates():
    cfg = load_config("tiny")
    assert cfg.with_overrides({"loss.lam": 4.0}).loss.lam == 4.0
    with pytest.raises(ConfigError, match="loss.lam"):
        cfg.with_overrides({"loss.lam": -4.0})


def test_flatten_round_trip_keys():
    flat = flatten(Config())
    assert flat["loss.lam"] == 1.0 and flat["lora.r"] == 8
    assert "data.safe.name" in flat


def test_cli_prints_one_line_error(capsys):
    assert main(["config", "--config", "tiny", "--set", "loss.lam=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "loss.lam" in err and err.startswith("tasft-ray: error:")


def test_cli_config_prints_resolved_yaml(capsys):
    assert main(["config", "--config", "tiny", "--set", "loss.lam=0.5"]) == 0
    assert "lam: 0.5" in capsys.readouterr().out


def test_flat_validation_keys_of_older_configs_move_into_their_section(caplog):
    old = load_config(
        "tiny",
        ["train.checkpoint_every=2", "eval.every=4", "eval.validation=[advbench]",
         "eval.validation_max_prompts=3", "eval.validation_safe=2",
         "eval.validation_quality_limit=1"],
    )  # fmt: skip
    v = old.eval.validation
    assert (v.every, v.benchmarks, v.max_prompts, v.safe, v.quality_limit) == (
        4, ["advbench"], 3, 2, 1
    )  # fmt: skip
    assert "eval.every is now eval.validation.every" in caplog.text
    with pytest.raises(ConfigError, match="eval.every and eval.validation.every both set"):
        load_config("tiny", ["eval.every=4", "eval.validation.every=4"])


def test_test_hooks_live_in_their_own_section():
    assert "fail_at_step" not in Config().engine.model_dump()
    with pytest.raises(ConfigError, match="engine.fail_at_step: unknown key"):
        load_config("tiny", ["engine.fail_at_step=3"])
    assert load_config("tiny", ["testing.fail_at_step=3"]).testing.fail_at_step == 3


def test_a_relative_sqlite_store_is_the_one_in_the_folder_the_command_ran_in(
    tmp_path, monkeypatch
):
    """Ray workers run in other folders: the sweep's config carries the store's absolute path,
    so a trial logs to the driver's store, not to an empty one beside itself."""
    from tasft_ray.sweep.paths import resolve_paths
    from tasft_ray.tracking import tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mine = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = resolve_paths(load_config("tiny", ["tracking.uri=sqlite:///m.db"]))
    assert cfg.tracking.uri == mine
    assert resolve_paths(load_config("tiny")).tracking.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert tracking_uri(load_config("tiny")) == f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.chdir(tmp_path / "..")  # a worker's folder: the resolved store stays the same
    assert tracking_uri(cfg) == mine
    for kept in ("sqlite:////abs/m.db", "http://127.0.0.1:5000"):
        assert tracking_uri(load_config("tiny", [f"tracking.uri={kept}"])) == kept
