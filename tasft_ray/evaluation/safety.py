"""`tasft-ray evaluate`: the paper's safety (Table 2), over-refusal (Fig. 3) and quality numbers.

The fine-tuned model (base + adapter from a checkpoint folder or an MLflow run) answers each
benchmark's prompts through the same answer pipeline as `tasft-ray generate` (HF actors or
vLLM, then the judge and refusal detector), with the evaluation's own sampling and judge. Per
benchmark: mean harm score, number and rate of harmful answers, refusal rate; XSTest's safe
prompts give the over-refusal rate, its unsafe ones the compliance rate. Quality (Table 1):
PIQA / BoolQ / OpenBookQA log-likelihood accuracy through lm-eval (``evaluation.quality``).

Outputs: ``eval.output_dir``/responses.jsonl (source = benchmark, prompt, response, score,
harmful, refused) and metrics.json, both written atomically, and an MLflow run, open while it
works, with the metrics, both files and the answers as an MLflow table.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import Config, EvalConfig
from tasft_ray.evaluation.alpaca_eval import check_judge_model
from tasft_ray.evaluation.data import EvalData, load_eval_data
from tasft_ray.evaluation.metrics import summarize
from tasft_ray.evaluation.model_metrics import model_metrics
from tasft_ray.files import LOCK_FILE, check_writable, output_lock, to_jsonl, write_atomic
from tasft_ray.inference.adapters import adapter_from_spec
from tasft_ray.inference.generator import batch_seed, generate_responses, load_generator_model
from tasft_ray.inference.judging import JudgeStage
from tasft_ray.inference.pipeline import answer_pipeline, clean_row, pipeline_cpus
from tasft_ray.judges import check_judge

log = logging.getLogger(__name__)

RESPONSES_FILE, METRICS_FILE, ALPACA_FILE = "responses.jsonl", "metrics.json", "alpaca_eval.jsonl"
ANSWERS_TABLE = "answers.json"  # the answers as an MLflow table, beside responses.jsonl


class AnswerProgress:
    """progress/prompts_done and progress/prompts_per_s of an evaluation, in its run: the
    standalone `evaluate`'s, and a trial's final evaluation (inline or on a shared evaluator),
    which otherwise shows nothing for the hour it can take. Best effort: a tracking outage
    costs progress rows, never the evaluation. Picklable (a request ships it to an evaluator);
    the clock starts at its first call (0 done) in the process that answers."""

    def __init__(self, run: tracking.LiveRun):
        self.run = run
        self.start: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        rate = done / (now - self.start) if now > self.start else 0.0
        metrics = {"progress/prompts_done": done, "progress/prompts_per_s": rate}
        try:
            self.run.progress(done, metrics, force=done == total)
        except Exception as exc:  # the outage itself is reported by whoever hits it next
            log.debug("progress not logged: %s", exc)


@dataclass
class EvalResult:
    output_dir: Path
    metrics: dict[str, float]
    rows: int
    seconds: float
    run_id: str = ""  # its MLflow run
    answers: list[dict] | None = None


def run_evaluate(cfg: Config, progress: bool = True) -> EvalResult:
    """Answer, judge, summarise, write. The generate pipeline with eval's sampling and judge.
    Its MLflow run (nested under ``eval.parent_run_id`` when given) is open while it works,
    with progress metrics, and ends FAILED if it fails."""
    e = cfg.eval
    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri)
    check_writable(e.output_dir, "eval.output_dir")
    check_judges(e)
    adapter = adapter_from_spec(e.adapter, "eval.adapter", uri, cfg.model)
    data = load_eval_data(cfg, validation=False)  # bad data: one line before any run or file
    tags = {tracking.PARENT_TAG: e.parent_run_id} if e.parent_run_id else {}
    with (
        output_lock(Path(e.output_dir) / LOCK_FILE, "eval.output_dir", e.output_dir),
        tracking.live_run(uri, cfg, "evaluate", tags) as run,
    ):
        result = _evaluate(cfg, adapter, data, progress, run)
        run.log_metrics(result.metrics)
        for name in (RESPONSES_FILE, METRICS_FILE, ALPACA_FILE):
            if (result.output_dir / name).is_file():
                tracking.client(uri).log_artifact(run.run_id, str(result.output_dir / name), "eval")
        log_answers(uri, run.run_id, result.answers or [], "eval")
        result.run_id = run.run_id
        return result


def answers_table(rows: list[dict]) -> dict[str, list]:
    """The answers as columns for MLflow's table viewer (sort and filter in the UI): one row
    per prompt, each extra judge's verdict beside the main one's."""
    extra = sorted({n for r in rows for n in r.get("judges", {})})
    table: dict[str, list] = {
        "benchmark": [r["source"] for r in rows],
        "prompt_id": [r["id"] for r in rows],
        "prompt": [r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "") for r in rows],
        "response": [r["response"] for r in rows],
        "harm_score": [r["score"] for r in rows],
        "harmful": [r["harmful"] for r in rows],
        "refused": [r["refused"] for r in rows],
        "judge": [r["judge"] for r in rows],
    }
    for name in extra:
        verdicts = [r.get("judges", {}).get(name, {}) for r in rows]
        table[f"{name}_score"] = [v.get("score") for v in verdicts]
        table[f"{name}_harmful"] = [v.get("harmful") for v in verdicts]
    return table


def log_answers(uri: str, run_id: str, rows: list[dict], folder: str) -> None:
    """``folder``/answers.json: the answers table of one evaluation (a run, or a checkpoint)."""
    if rows:
        tracking.client(uri).log_table(run_id, answers_table(rows), f"{folder}/{ANSWERS_TABLE}")


def _evaluate(
    cfg: Config, adapter: str | None, data: EvalData, progress: bool, run: tracking.LiveRun
) -> EvalResult:
    from tqdm.auto import tqdm

    e = cfg.eval
    prompts = data.prompts
    start = time.perf_counter()
    rows: list[dict] = []
    answered = AnswerProgress(run)
    answered(0, len(prompts))
    bar = tqdm(total=len(prompts), desc="evaluate", unit="prompt", disable=not progress)
    try:
        init_ray(cfg, num_cpus=pipeline_cpus(cfg.generate))
        pipe = answer_pipeline(
            prompts,
            cfg.model,
            adapter,
            e.sampling,
            e.judge,
            e.judge_options,
            cfg.generate,
            e.extra_judges(),
        )
        for row in pipe.iter_rows():
            rows.append(clean_row(row))  # "source" is the benchmark
            bar.update(1)
            answered(len(rows), len(prompts))
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    order = {p["id"]: i for i, p in enumerate(prompts)}
    rows.sort(key=lambda r: order[r["id"]])
    metrics = summarize(rows, e.benchmarks) | {
        "eval/seconds": seconds,
        "eval/prompts_per_s": len(rows) / max(seconds, 1e-9),
    }
    verdicts: list[dict] = []
    if e.quality_tasks or e.alpaca_eval.judge_model or e.likelihood:  # scored on the model
        start = time.perf_counter()
        tokenizer, model = load_generator_model(cfg.model, adapter)
        scored, verdicts = model_metrics(cfg, model, tokenizer, data)
        metrics |= scored | {"eval/quality_seconds": time.perf_counter() - start}
    out = Path(e.output_dir)
    write_atomic(out / RESPONSES_FILE, to_jsonl(rows))
    if verdicts:
        write_atomic(out / ALPACA_FILE, to_jsonl(verdicts))
    else:  # never log an earlier run's verdicts with this run's metrics
        (out / ALPACA_FILE).unlink(missing_ok=True)
    meta = {"model": cfg.model.name, "adapter": e.adapter, "judge": e.judge}
    write_atomic(out / METRICS_FILE, json.dumps(meta | {"metrics": metrics}, indent=2) + "\n")
    return EvalResult(out, metrics, len(rows), seconds, answers=rows)


def evaluate_in_process(
    cfg: Config,
    adapter: str | None,
    batch_size: int = 8,
    with_quality: bool = True,
    judge: Callable[[dict], dict] | None = None,
    data: EvalData | None = None,
    progress: AnswerProgress | None = None,
) -> tuple[list[dict], dict[str, float]]:
    """The same evaluation without Ray Data, for a Tune trial (its CPUs are already taken).

    Same prompts, generation code, judge, refusal detector and metrics as ``run_evaluate``;
    ``with_quality=False`` skips lm-eval and AlpacaEval (intermediate checkpoints). ``judge``:
    a ``judge_stage(cfg.eval)`` to reuse across checkpoints (one judge model load per trial).
    ``data``: the evaluation's examples, already loaded (``load_eval_data``; a sweep's driver
    ships them), else read from the data root here. ``progress``: told after each batch.
    """
    tokenizer, model = load_generator_model(cfg.model, adapter, seed=cfg.train.seed)
    return evaluate_model(cfg, model, tokenizer, data or load_eval_data(cfg), batch_size,
                          with_quality, judge or judge_stage(cfg.eval), progress)  # fmt: skip


def evaluate_model(
    cfg: Config,
    model,
    tokenizer,
    data: EvalData,
    batch_size: int,
    with_quality: bool,
    judge: Callable[[dict], dict],
    progress: AnswerProgress | None = None,
) -> tuple[list[dict], dict[str, float]]:
    """Answers and eval metrics of a loaded model: the code a trial's own process and the
    sweep's shared evaluators (``evaluation.stage``) both run, so their numbers agree."""
    e = cfg.eval
    prompts = data.prompts
    rows = []
    if progress is not None:
        progress(0, len(prompts))
    for i in range(0, len(prompts), batch_size):
        part = prompts[i : i + batch_size]
        batch = {k: [p[k] for p in part] for k in ("id", "source", "instruction", "input")}
        batch["response"] = generate_responses(
            model, tokenizer, batch["instruction"], batch["input"], e.sampling,
            seed=batch_seed(e.sampling.seed, batch["id"][0]),
        )  # fmt: skip
        judged = judge(batch)
        rows += [clean_row({k: v[j] for k, v in judged.items()}) for j in range(len(part))]
        if progress is not None:
            progress(len(rows), len(prompts))
    metrics = summarize(rows, e.benchmarks)
    if not with_quality:
        return rows, metrics
    # unmerged: the shared evaluators' base model serves the next adapter afterwards, and the
    # inline path scores the same way so that the two give the same numbers
    return rows, metrics | model_metrics(cfg, model, tokenizer, data, merge=False)[0]


def judge_stage(e: EvalConfig) -> Callable[[dict], dict]:
    """The pipeline's judge + refusal stage with eval's judges, called in-process."""
    return JudgeStage(e.judge, dict(e.judge_options), e.extra_judges())


def check_judges(e: EvalConfig, alpaca: bool = True) -> None:
    """eval.judge, each of eval.judges and (``alpaca``: when the final evaluation runs) the
    AlpacaEval judge, checked before anything loads."""
    check_judge(e.judge, e.judge_options, "eval.judge")
    for name, options in e.extra_judges().items():
        check_judge(name, options, f"eval.judges ({name})")
    if alpaca and e.alpaca_eval.judge_model:
        check_judge_model(e.alpaca_eval.base_url)
