"""STAR scores of a tokenised mixture (Safety Trajectory Assessment of Response, STAR-DSS:
Peng et al., NeurIPS 2025, https://arxiv.org/abs/2505.17196): a guardrail reads each response
prefix by prefix, one segment of M tokens at a time, and every token of a segment gets the
probability that the response up to the segment's end is safe.

For a response y of n tokens (EOS included) cut into segments k = 1..⌈n/M⌉:

    s_t = 1 − harm(x, y_{1:min(kM, n)})   for (k−1)M < t ≤ kM

with ``harm`` the judge's score in [0, 1] (a guard model's P(unsafe), i.e. 1 − σ(z_safe −
z_unsafe); the offline judge's logistic probability). The judge reads the prompt and the
partial response as text, decoded from the very tokens the model trains on (the Alpaca
template is stripped by the judges themselves), so a segment boundary is a token boundary of the
trained model's tokenizer. Both safe and harmful rows are scored: STAR-DSS gives the loss no
row labels (``losses.star``).

Runs once per mixture, before training (the sweep driver's ``prepare``, and ``tasft-ray train``
through the same function, ``sweep.prepared.training_mixture``); its cost is one judge call per
segment of every response (identical (prompt, prefix) pairs are judged once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from tasft_ray.data.mixture import Mixture
from tasft_ray.losses import IGNORE_INDEX

log = logging.getLogger(__name__)


class PairJudge(Protocol):
    """What STAR needs of a judge (``tasft_ray.judges.HarmJudge`` is one)."""

    def score(self, prompts: list[str], responses: list[str]) -> list[float]: ...


def segment_ends(n: int, m: int) -> list[int]:
    """Exclusive ends of the segments of an ``n``-token response: m, 2m, …, n (12, 5 -> 5, 10,
    12); none for an empty response."""
    if m < 1:
        raise ValueError(f"segment length must be >= 1, got {m}")
    return [min(end, n) for end in range(m, n + m, m)] if n > 0 else []


def _decode(tokenizer, ids: Sequence[int]) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def star_scores(
    mixture: Mixture,
    tokenizer,
    judge: PairJudge,
    segment_tokens: int,
    batch_size: int = 256,
) -> list[list[float]]:
    """One STAR score per label position of every row (0 where the label is ignored).

    Args:
        mixture: Tokenised rows (``input_ids``, ``labels`` with the prompt masked).
        tokenizer: The tokenizer that made them (decodes prompt and partial responses).
        judge: Harm scores in [0, 1] for (prompt, response) pairs.
        segment_tokens: M, response tokens per segment.
        batch_size: Pairs per judge call.
    Returns:
        Per row a list as long as its labels.
    """
    start = time.perf_counter()
    pairs: dict[tuple[str, str], int] = {}  # (prompt, partial response) -> its index
    plans: list[tuple[list[int], list[tuple[int, int]]]] = []  # positions, (end, pair) per segment
    for ids, labels in zip(mixture.input_ids, mixture.labels, strict=True):
        positions = [p for p, label in enumerate(labels) if label != IGNORE_INDEX]
        segments = []
        if positions:
            prompt = _decode(tokenizer, ids[: positions[0]])
            response = [ids[p] for p in positions]
            for end in segment_ends(len(response), segment_tokens):
                key = (prompt, _decode(tokenizer, response[:end]))
                segments.append((end, pairs.setdefault(key, len(pairs))))
        plans.append((positions, segments))

    keys = list(pairs)
    # judged shortest first: a batch's texts are padded to its longest, and prefixes of one
    # response range from M tokens to all of it
    order = sorted(range(len(keys)), key=lambda i: len(keys[i][0]) + len(keys[i][1]))
    safe = [0.0] * len(keys)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        harm = judge.score([keys[j][0] for j in chunk], [keys[j][1] for j in chunk])
        for j, h in zip(chunk, harm, strict=True):
            safe[j] = min(1.0, max(0.0, 1.0 - float(h)))

    out = []
    for labels, (positions, segments) in zip(mixture.labels, plans, strict=True):
        row = [0.0] * len(labels)
        begin = 0
        for end, pair in segments:
            for j in range(begin, end):
                row[positions[j]] = safe[pair]
            begin = end
        out.append(row)
    log.info(
        "STAR scores: %d rows, %d partial responses judged (segments of %d tokens), %.1f s",
        len(out), len(keys), segment_tokens, time.perf_counter() - start,
    )  # fmt: skip
    return out
