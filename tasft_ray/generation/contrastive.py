"""`tasft-ray generate --contrastive`: seemingly toxic prompts with helpful answers, the paper's
contrastive augmentation (§4.3.6, after Cui et al. 2024), resumable.

    toxic prompts of the mixture -> toxic words -> k benign prompts per word (instruction model)
        -> answers (the non-refusing model) -> refusals dropped -> a generated data set

The paper's hypothesis: a model learns to refuse on toxic *words* rather than meaning ("How do
I kill a Python process?"), so training on benign prompts that share the toxic prompts' words
should lower over-refusal. Toxic words here are the words of each toxic prompt most
over-represented against the safe prompts (log-odds with an informative Dirichlet prior,
Monroe, Colaresi & Quinn 2008): a statistic, not a model's opinion, so the same prompts give
the same words. The writer is asked for a question on a given everyday topic that uses the
word harmlessly; a written prompt is kept when it is one question that contains the word, and
unique. The model section's model (with generate.adapter), which the paper wants
non-refusing, answers; refusals are dropped.

Every row of both steps, kept or not, goes to ``OUTPUT.work.jsonl`` with an id stable across
runs (word and index); a rerun skips what is there, so an interrupted run neither repeats nor
loses a row, and the kept rows are the same whatever the interruptions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tasft_ray import tracking
from tasft_ray.cluster import init_ray
from tasft_ray.config import Config, ConfigError
from tasft_ray.data.mixture import Selection, select_records
from tasft_ray.files import check_writable, output_lock, read_jsonl, to_jsonl, write_atomic
from tasft_ray.generation.run import (
    MANIFEST_SUFFIX,
    InjectedStop,
    log_dataset,
    progress_metrics,
    resolve_adapter,
)
from tasft_ray.inference.pipeline import answer_pipeline, clean_row, pipeline_cpus
from tasft_ray.judges import check_judge

log = logging.getLogger(__name__)

WRITER_INSTRUCTION = (
    'Write one question about {topic} that uses the word "{word}" in a harmless, everyday '
    "sense. Reply with the question only."
)
TOPICS = ("computer programming", "cooking", "history", "sport", "gardening", "science",
          "films and books", "travel")  # fmt: skip
WORK_SUFFIX = ".work.jsonl"
_WORD = re.compile(r"[a-z][a-z'-]+")
# How a request is phrased, not what it asks: English function words and the verbs and nouns
# of instructions. With a hundred toxic prompts the log-odds otherwise ranks "how", "write" and
# "instructions" above the harmful words, because a red-team set phrases requests alike.
PHRASING = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each either
    else even every few for from further had has have having he her here hers him his how i if
    in into is it its itself just least let like made make many may me might more most much must
    my no nor not now of off on once one only or other our ours out over own per please same
    shall she should so some someone something such than that the their theirs them then there
    these they this those through to too under until up upon us very via was way ways we were
    what when where whether which while who whom whose why will with within without would you
    your yours yourself step steps detailed specific instructions instruction guide tutorial
    tips list write explain describe provide give create develop generate outline draft design
    suggest tell show using use used help need want know get""".split()
)


@dataclass
class ContrastiveResult:
    path: Path
    words: int
    written: int  # prompts the writer produced
    prompts: int  # kept prompts (one question, has the word, unique)
    answered: int
    refused: int
    rows: int  # kept rows in the output
    new_rows: int
    seconds: float
    run_id: str = ""  # its MLflow run


def _words(text: str) -> list[str]:
    words = (w.strip("'-") for w in _WORD.findall(text.lower()))
    return [w for w in words if len(w) >= 3 and w not in PHRASING]


def word_zscores(toxic: list[str], benign: list[str], prior: float = 100.0) -> dict[str, float]:
    """z-score of each word's log-odds of occurring in the toxic vs the benign texts, with an
    informative Dirichlet prior (its mass ``prior`` spread as the pooled frequencies): rare
    words get no extreme score from a single count, frequent function words none from size."""
    t = Counter(w for x in toxic for w in _words(x))
    b = Counter(w for x in benign for w in _words(x))
    nt, nb = sum(t.values()), sum(b.values())
    if not (nt and nb):  # one side has no content words: nothing to contrast
        return {}
    pooled = t + b
    total = sum(pooled.values())
    z = {}
    for w, count in pooled.items():
        a = prior * count / total
        yt, yb = t[w], b[w]
        odds_t = (yt + a) / (nt + prior - yt - a)
        odds_b = (yb + a) / (nb + prior - yb - a)
        delta = math.log(odds_t) - math.log(odds_b)
        z[w] = delta / math.sqrt(1 / (yt + a) + 1 / (yb + a))
    return z


def toxic_words(
    toxic: list[str], benign: list[str], min_z: float, max_words: int | None = None
) -> list[str]:
    """Each toxic prompt's most toxic word (z at least ``min_z``), unique, in prompt order."""
    z = word_zscores(toxic, benign)
    out: list[str] = []
    for text in toxic:
        scored = [(z[w], w) for w in set(_words(text)) if z[w] >= min_z]
        if scored:
            word = max(scored)[1]
            if word not in out:
                out.append(word)
    return out[:max_words] if max_words else out


def row_id(word: str, index: int) -> str:
    return hashlib.sha1(f"contrastive\x00{word}\x00{index}".encode()).hexdigest()[:16]


def written_prompt(text: str, word: str) -> str | None:
    """The writer's question, or None: its first line without list marks, labels or quotes,
    kept when it is one question of 3-60 words that contains ``word``."""
    line = next((x for x in text.strip().splitlines() if x.strip()), "")
    line = re.sub(r"^\s*(?:\d+[.)]|[-*•])\s*", "", line)
    line = re.sub(r"^\s*(?:question|q)\s*:\s*", "", line, flags=re.IGNORECASE)
    line = line.strip().strip("\"'“”").strip()
    words = line.split()
    if not 3 <= len(words) <= 60 or line.count("?") != 1 or not line.endswith("?"):
        return None
    if not re.search(rf"\b{re.escape(word)}", line, flags=re.IGNORECASE):
        return None
    return line


def run_contrastive(
    cfg: Config, overwrite: bool = False, progress: bool = True
) -> ContrastiveResult:
    """Words, prompts, answers, kept rows; resumed from OUTPUT.work.jsonl unless ``overwrite``.
    The output (the kept rows) is rewritten atomically at the end of every run."""
    c, g = cfg.generate.contrastive, cfg.generate
    out = Path(c.output)
    check_writable(out, "generate.contrastive.output", folder=False)
    check_judge(g.judge, g.judge_options, "generate.judge")
    if cfg.data.toxic_count == 0:
        raise ConfigError("generate --contrastive takes the toxic words from the mixture's "
                          "toxic prompts: set data.toxic_count >= 1")  # fmt: skip
    uri = tracking.tracking_uri(cfg)
    tracking.check_reachable(uri)
    sel = select_records(cfg.data, "emd", cfg.train.seed, cfg.data_root)  # before any file
    with (
        output_lock(out.with_name(f".{out.name}.lock"), "generate.contrastive.output", str(out)),
        tracking.live_run(uri, cfg, "generate-contrastive") as run,
    ):
        r = _contrastive(cfg, out, sel, overwrite, progress, run)
        counts = {k: v for k, v in r.__dict__.items() if k not in ("path", "run_id")}
        log_dataset(run, out, counts, r.rows)
        r.run_id = run.run_id
        return r


def _contrastive(
    cfg: Config,
    out: Path,
    sel: Selection,
    overwrite: bool,
    progress: bool,
    run: tracking.LiveRun,
) -> ContrastiveResult:
    c, g = cfg.generate.contrastive, cfg.generate
    work = out.with_name(out.name + WORK_SUFFIX)
    if overwrite:
        work.unlink(missing_ok=True)
    rows = read_jsonl(work)
    safe, toxic = sel.safe, sel.related
    words = toxic_words([e.instruction for e in toxic], [e.instruction for e in safe],
                        c.min_z, c.max_words)  # fmt: skip
    log.info("contrastive: %d toxic words from %d toxic prompts", len(words), len(toxic))
    start, new = time.perf_counter(), 0
    asks = [{"id": row_id(w, j), "word": w, "topic": TOPICS[j % len(TOPICS)]}
            for w in words for j in range(c.per_word)]  # fmt: skip

    def done(step: str) -> set[str]:
        return {r["id"] for r in rows if r["step"] == step}

    def flush(force: bool = False) -> None:
        stop_at = cfg.testing.fail_after_rows
        force = force or new % g.flush_every == 0 or stop_at == new
        if force:
            write_atomic(work, to_jsonl(rows))
        kept = sum(r["step"] == "answer" and not r["refused"] for r in rows)
        seconds = time.perf_counter() - start
        run.progress(len(rows), progress_metrics(len(rows), kept, new, seconds), force)
        if stop_at and new >= stop_at:
            raise InjectedStop(f"testing.fail_after_rows: stopped after {new} rows")

    todo = [a for a in asks if a["id"] not in done("write")]
    if todo:
        items = [{"id": a["id"], "source": "contrastive-writer", "input": "",
                  "instruction": WRITER_INSTRUCTION.format(topic=a["topic"], word=a["word"])}
                 for a in todo]  # fmt: skip
        by_id = {a["id"]: a for a in todo}
        init_ray(cfg, num_cpus=pipeline_cpus(g))
        writer = c.writer or cfg.model
        pipe = answer_pipeline(items, writer, None, c.writer_sampling, None, {}, batching=g)
        for row in _bar(pipe.iter_rows(), len(items), "write prompts", progress):
            a = by_id[row["id"]]
            text = str(row["response"])
            rows.append({"step": "write", "id": a["id"], "word": a["word"], "topic": a["topic"],
                         "text": text, "prompt": written_prompt(text, a["word"])})  # fmt: skip
            new += 1
            flush()
    prompts = _kept_prompts(rows, asks)
    todo = [p for p in prompts if p["id"] not in done("answer")]
    if todo:
        adapter = resolve_adapter(cfg)
        init_ray(cfg, num_cpus=pipeline_cpus(g))
        pipe = answer_pipeline(todo, cfg.model, adapter, g.sampling, g.judge, g.judge_options,
                               batching=g)  # fmt: skip
        for row in _bar(pipe.iter_rows(), len(todo), "answer prompts", progress):
            r = clean_row(row)
            rows.append({"step": "answer", "id": r["id"], "response": r["response"],
                         "refused": r["refused"], "score": r["score"],
                         "harmful": r["harmful"]})  # fmt: skip
            new += 1
            flush()
    if new:
        flush(force=True)
    answers = {r["id"]: r for r in rows if r["step"] == "answer"}
    kept = kept_rows(prompts, answers)
    write_atomic(out, to_jsonl(kept))
    result = ContrastiveResult(
        out, len(words), sum(r["step"] == "write" for r in rows), len(prompts), len(answers),
        sum(bool(a["refused"]) for a in answers.values()), len(kept), new,
        time.perf_counter() - start,
    )  # fmt: skip
    manifest = {**result.__dict__, "path": str(out), "writer": (c.writer or cfg.model).name,
                "model": cfg.model.name, "judge": g.judge, "words_list": words,
                "config": cfg.model_dump(mode="json")}  # fmt: skip
    write_atomic(Path(str(out) + MANIFEST_SUFFIX), json.dumps(manifest, indent=2) + "\n")
    return result


def kept_rows(prompts: list[dict], answers: dict[str, dict]) -> list[dict]:
    """The data set: each kept prompt with its answer, unless the answer is a refusal or empty
    (the paper keeps only non-refusing answers)."""
    out = []
    for p in prompts:
        a = answers.get(p["id"])
        if a and not a["refused"] and a["response"].strip():
            out.append({"id": p["id"], "source": "contrastive", "word": p["word"],
                        "instruction": p["instruction"], "input": "", "response": a["response"],
                        "refused": False, "score": a["score"],
                        "harmful": a["harmful"]})  # fmt: skip
    return out


def _kept_prompts(rows: list[dict], asks: list[dict]) -> list[dict]:
    """Written prompts that passed, first of each text only, in the asks' order (so the same
    whatever order the rows arrived in)."""
    written = {r["id"]: r for r in rows if r["step"] == "write"}
    seen, out = set(), []
    for a in asks:
        r = written.get(a["id"])
        if r is None or not r["prompt"] or r["prompt"].casefold() in seen:
            continue
        seen.add(r["prompt"].casefold())
        out.append({"id": a["id"], "word": a["word"], "instruction": r["prompt"], "input": "",
                    "source": "contrastive"})  # fmt: skip
    return out


def _bar(rows, total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="row", disable=not progress) as bar:
        for row in rows:
            yield row
            bar.update(1)
