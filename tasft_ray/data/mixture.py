"""Tokenise records and build the fine-tuning mixture D = D_safety-unrelated ∪ D_safety-related.

Every example keeps its kind (SAFE rows get the SFT loss, HARMFUL rows the penalty), prompts are
masked with -100 so only response tokens are scored, and each response ends with EOS: base models
such as Gemma 3 never stop on their own unless SFT teaches them to. STAR-DSS adds one STAR score
per label (``Mixture.safety``, filled by ``data.star``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tasft_ray.config import DataConfig, Method
from tasft_ray.data.lineage import DataInput
from tasft_ray.data.sources import DataError, Example, read_source
from tasft_ray.data.template import format_prompt
from tasft_ray.losses import HARMFUL, IGNORE_INDEX, SAFE

log = logging.getLogger(__name__)


@dataclass
class Mixture:
    """Tokenised examples, parallel lists (cheap to pickle into Ray's object store)."""

    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    inputs: list[DataInput] = field(default_factory=list)  # the sources it was built from
    # STAR-DSS only: per row, one STAR score per label position (0 where the label is ignored)
    safety: list[list[float]] | None = None

    def __len__(self) -> int:
        return len(self.kinds)

    def add(self, ids: list[int], labels: list[int], kind: int) -> None:
        self.input_ids.append(ids)
        self.labels.append(labels)
        self.kinds.append(kind)

    def extend(self, other: Mixture) -> None:
        if (self.safety is None) != (other.safety is None) and len(self) and len(other):
            raise ValueError("cannot join a mixture with STAR scores and one without")
        if other.safety is not None:
            self.safety = (self.safety or []) + other.safety
        self.input_ids += other.input_ids
        self.labels += other.labels
        self.kinds += other.kinds

    def counts(self) -> dict[str, int]:
        harmful = sum(k == HARMFUL for k in self.kinds)
        return {"safe": len(self) - harmful, "harmful": harmful}

    def subset(self, kind: int) -> Mixture:
        out = Mixture()
        keep = [i for i, k in enumerate(self.kinds) if k == kind]
        for i in keep:
            out.add(self.input_ids[i], self.labels[i], kind)
        if self.safety is not None:
            out.safety = [self.safety[i] for i in keep]
        return out


def encode_pair(
    tokenizer, prompt: str, response: str, max_length: int
) -> tuple[list[int], list[int]] | None:
    """Prompt + response + EOS as (input_ids, labels), prompt masked; None if nothing is left.

    Over budget, the response is cut first but keeps at least a quarter of the budget; the
    prompt then loses tokens from its *start*, so the "### Response:" cue right before the answer
    survives.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    response_ids = response_ids + [tokenizer.eos_token_id]
    return _fit(prompt_ids, response_ids, max_length)


def _fit(prompt_ids: list[int], response_ids: list[int], max_length: int):
    keep_resp = min(len(response_ids), max(max_length - len(prompt_ids), max_length // 4))
    keep_prompt = max_length - keep_resp
    prompt_ids = prompt_ids[-keep_prompt:] if keep_prompt < len(prompt_ids) else prompt_ids
    response_ids = response_ids[:keep_resp]
    if not response_ids:
        return None
    ids = prompt_ids + response_ids
    return ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids


def _pairs(examples: Sequence[Example], origin: str) -> list[Example]:
    pairs = [e for e in examples if e.output]
    if not examples:
        raise DataError(f"{origin}: no records (an empty file, or its options filter out all)")
    if not pairs:
        raise DataError(f"{origin}: no records with a non-empty response (is it prompt-only?)")
    return pairs


def _take(items: list[Example], count: int | None, rule: str, seed: int, key: str, origin: str):
    if count is None:
        return items
    if count > len(items):
        raise DataError(f"{key}={count} but {origin} has only {len(items)} usable pairs")
    if rule == "first":
        return items[:count]
    return random.Random(seed).sample(items, count)


@dataclass
class Selection:
    """The records a method trains on, and where each part came from (``lineage``)."""

    safe: list[Example]
    related: list[Example]
    related_kind: int
    inputs: list[DataInput] = field(default_factory=list)


def select_records(data: DataConfig, method: Method, seed: int, root: str | None) -> Selection:
    """Select the safe pairs and the safety-related pairs (harmful, or STL refusals) for a method.

    ``sft`` drops the safety-related data entirely; ``stl`` uses safe refusals to toxic prompts,
    trained like ordinary safe data.
    """
    loaded = read_source(data.safe, root, "data.safe")
    origin = f"data.safe ({data.safe.origin})"
    safe = _take(_pairs(loaded.examples, origin), data.safe_count, data.toxic_selection, seed,
                 "data.safe_count", origin)  # fmt: skip
    inputs = [loaded.describe("safe", len(safe))]
    if data.contrastive is not None:  # seemingly toxic prompts, helpful answers: safe pairs
        loaded = read_source(data.contrastive, root, "data.contrastive")
        extra = _pairs(loaded.examples, f"data.contrastive ({data.contrastive.origin})")
        safe = safe + extra
        inputs.append(loaded.describe("contrastive", len(extra)))
    if method == "sft" or data.toxic_count == 0:
        return Selection(safe, [], HARMFUL, inputs)
    role, kind = ("refusals", SAFE) if method == "stl" else ("harmful", HARMFUL)
    src = getattr(data, role)
    origin = f"data.{role} ({src.origin})"
    loaded = read_source(src, root, f"data.{role}")
    related = _take(_pairs(loaded.examples, origin), data.toxic_count, data.toxic_selection,
                    seed + 1, "data.toxic_count", origin)  # fmt: skip
    # first: the MLflow runs table shows a run's first input, and this one tells trials apart
    inputs.insert(0, loaded.describe(role, len(related)))
    return Selection(safe, related, kind, inputs)


def tokenize_examples(
    tokenizer, examples: Sequence[Example], kind: int, max_length: int, template: str = "alpaca"
) -> Mixture:
    out = Mixture()
    dropped = 0
    for ex in examples:
        encoded = encode_pair(
            tokenizer,
            format_prompt(ex.instruction, ex.input, template),
            ex.output or "",
            max_length,
        )
        if encoded is None:
            dropped += 1
            continue
        out.add(*encoded, kind)
    if dropped:
        log.warning("dropped %d examples with no response tokens left after truncation", dropped)
    return out


def build_mixture(
    data: DataConfig, method: Method, tokenizer, seed: int, root: str | None = None
) -> Mixture:
    """D = N safe pairs ∪ toxic_count safety-related pairs, deterministic under ``seed``."""
    s = select_records(data, method, seed, root if root else data.root)
    mixture = tokenize_examples(tokenizer, s.safe, SAFE, data.max_length, data.template)
    mixture.extend(tokenize_examples(tokenizer, s.related, s.related_kind, data.max_length,
                                     data.template))  # fmt: skip
    mixture.inputs = s.inputs
    log.info("mixture for %s: %s", method, mixture.counts())
    return mixture


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The uniform shuffle of epoch ``epoch``: a pure function, so a resumed run sees the same."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def group_by_length(
    order: list[int], lengths: Sequence[int], micro: int, window: int, seed: int, epoch: int
) -> list[int]:
    """``order`` with each window of ``window`` micro-batches sorted by length, then its
    micro-batches shuffled: neighbours in a micro-batch have similar lengths (less padding) while
    the window still mixes short and long batches. A pure function, like ``epoch_order``."""
    if window <= 1:
        return order
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7)
    out: list[int] = []
    span = window * micro
    for start in range(0, len(order), span):
        part = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches = [part[j : j + micro] for j in range(0, len(part), micro)]
        for b in torch.randperm(len(batches), generator=gen).tolist():
            out += batches[b]
    return out


def collate(mixture: Mixture, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch: input_ids/attention_mask/labels (B, T) and kinds (B,), and the
    STAR scores (B, T) float, 0 on padding, when the mixture has them."""
    width = max(len(mixture.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        n = len(mixture.input_ids[i])
        ids[row, :n] = torch.tensor(mixture.input_ids[i])
        labels[row, :n] = torch.tensor(mixture.labels[i])
        mask[row, :n] = 1
    kinds = torch.tensor([mixture.kinds[i] for i in indices], dtype=torch.long)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "kinds": kinds}
    if mixture.safety is not None:
        safety = torch.zeros((len(indices), width), dtype=torch.float32)
        for row, i in enumerate(indices):
            safety[row, : len(mixture.safety[i])] = torch.tensor(mixture.safety[i])
        batch["safety"] = safety
    return batch
