"""The MLflow UI as users open it: a real `mlflow server`, written to over HTTP by `tasft-ray
generate` and a sweep that trains on the generated file, then read in headless Chromium
(Debian's `chromium`, driven by Playwright).

Set TASFT_UI_SCREENSHOT=PATH to keep the runs page's screenshot (docs/mlflow-ui/runs.png is
made that way; the README's command)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import check_png, cli_env, run_cli, sets

from tasft_ray import tracking

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TRIALS = ("emd λ=1 n=6 seed=0", "sft n=6 seed=0")
EXPERIMENT = "ui"  # its own: the session's server may hold other tests' runs
# The runs table is an ag-grid: the pinned Run Name cells and the other cells of a row are
# separate row elements, in no particular DOM order; row-index joins them.
ROWS_JS = """() => {
  const rows = [...document.querySelectorAll('[role="row"][row-index]')];
  const link = (r) => r.querySelector('[col-id*="Run Name"] a');
  const rest = (i) => rows.filter((r) => r.getAttribute('row-index') === i && !link(r))
    .map((r) => r.innerText).join(' ');
  return rows.filter(link).map((r) => {
    const i = r.getAttribute('row-index');
    return [Number(i), link(r).innerText, rest(i)];
  });
}"""


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_url, ray_head):
    """The session's server holding one generate run and a 2-trial sweep trained on its
    output, both run on the session's Ray head; yields its URL and the generated file."""
    folder = tmp_path_factory.mktemp("ui")
    env = cli_env(folder, ray_head.address)
    gen = folder / "gen.jsonl"
    where = [f"tracking.uri={mlflow_url}", f"tracking.experiment={EXPERIMENT}"]
    generate = [*where, "generate.prompts=[{name: harmfulq}]",
                "generate.max_prompts=6", "generate.batch_size=6",
                "generate.sampling.max_new_tokens=6", f"generate.output={gen}",
                "generate.judge_options={threshold: 0.0}"]  # fmt: skip
    run_cli(["tasft_ray", "generate", "--config", "tiny", *sets(*generate)], folder, env, ok=True)
    sweep = [*where, f"sweep.storage={folder / 'ray'}", "train.max_steps=2",
             "train.checkpoint_every=2", f"data.harmful={{path: {gen}, format: generated}}",
             "data.toxic_count=6", "sweep.max_concurrent_trials=2",
             "sweep.cases=[{loss.method: sft, loss.lam: 0}, {loss.lam: 1}]"]  # fmt: skip
    run_cli(["tasft_ray.tune", "--config", "tiny", *sets(*sweep)], folder, env, ok=True)
    yield mlflow_url, gen


def test_generated_data_carries_one_digest_from_generate_to_training(store):
    url, gen = store
    c = tracking.client(url)
    exp = c.get_experiment_by_name(EXPERIMENT)
    assert exp.tags[tracking.KIND_TAG] == tracking.TRAINING_KIND
    runs = {r.info.run_name: r for r in c.search_runs([exp.experiment_id])}
    digest = hashlib.sha256(gen.read_bytes()).hexdigest()[:16]

    def inputs(name: str) -> dict[str, tuple[str, str, str]]:
        got = c.get_run(runs[name].info.run_id).inputs.dataset_inputs
        return {
            t[tracking.CONTEXT_TAG]: (i.dataset.name, i.dataset.digest, t[tracking.ROWS_TAG])
            for i in got
            for t in [{x.key: x.value for x in i.tags}]
        }

    assert inputs("generate") == {"generated": ("gen.jsonl", digest, "6")}
    emd = inputs(TRIALS[0])
    assert emd["harmful"] == ("gen.jsonl", digest, "6")  # the same content, by digest
    assert emd["safe"][0] == "alpaca_1k" and emd["safe"][2] == "64"
    assert set(inputs(TRIALS[1])) == {"safe"}  # SFT trains on no harmful rows
    assert inputs("sweep") == emd  # the parent: its trials' data
    for name in TRIALS:  # grouped by these in the UI
        tags = runs[name].data.tags
        assert tags[tracking.PARENT_TAG] == runs["sweep"].info.run_id
        assert {"tasft.method", "tasft.toxic_count", "tasft.lam"} <= set(tags)


def test_runs_page_in_a_browser_lists_trials_by_setting_under_their_sweep(store, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "no chromium on PATH: apt-get install chromium (as .ci/run does)"
    url, gen = store
    exp = tracking.client(url).get_experiment_by_name(EXPERIMENT).experiment_id
    shot = Path(os.environ.get("TASFT_UI_SCREENSHOT") or tmp_path / "runs.png")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 620})
        page.goto(f"{url}/#/experiments/{exp}/runs")
        parent = page.get_by_role("link", name="sweep", exact=True)
        parent.wait_for(timeout=90_000)  # the runs table, not the GenAI overview
        assert page.get_by_text("Training runs").count()
        page.locator('[role="row"]', has=parent).locator("button").first.click()  # expand
        for name in TRIALS:
            page.get_by_role("link", name=name, exact=True).wait_for(timeout=30_000)
        table = page.evaluate(ROWS_JS)  # [[row index, run name, the row's other cells]]
        names = [name for _, name, _ in sorted(table)]
        assert names[0] == "sweep" and set(names[1:3]) == set(TRIALS)  # children under it
        assert "generate" in names[3:]
        cells = {name: text for _, name, text in table}
        digest = hashlib.sha256(gen.read_bytes()).hexdigest()[:16]
        for name in (TRIALS[0], "generate"):  # the Dataset column: the same file on both
            assert f"gen.jsonl ({digest})" in cells[name], cells
        assert "alpaca_1k (" in cells[TRIALS[1]]
        close = page.get_by_role("button", name="Close")  # MLflow's assistant panel
        if close.count():
            close.first.click()
        page.screenshot(path=str(shot))
        browser.close()
    check_png(shot)
