"""What a trial trained: method, λ, toxic count (and seed), named one way everywhere.

The sweep names its MLflow child runs with :attr:`Setting.label`, the console summary and the
report label their rows with it, and the report groups and orders trials by it; one home keeps
``emd λ=4 n=100 seed=0`` from being spelled two ways, and "which methods have a λ" from being
listed twice. Pure: no config objects, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Method = Literal["sft", "emd", "nlcl", "kto", "stl", "star"]
# Report and summary order: the baseline first, the paper's penalties, then the other baselines.
METHOD_ORDER: tuple[str, ...] = ("sft", "emd", "nlcl", "stl", "kto", "star")
USES_LAMBDA: tuple[str, ...] = ("emd", "nlcl")  # the only methods whose loss has a λ
# Methods whose loss needs the safety-related rows: without them they would silently be SFT.
# (star, STAR-DSS, is given no labels but is only a defence against the harmful rows it is fed.)
NEEDS_RELATED: tuple[str, ...] = ("emd", "nlcl", "kto", "stl", "star")


def method_rank(method: str) -> int:
    """Where ``method`` goes in tables (METHOD_ORDER; unknown ones last)."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


@dataclass(frozen=True)
class Setting:
    """One trained setting; ``seed`` None when it stands for all seeds of the setting."""

    method: str
    lam: float
    toxic_count: int
    seed: int | None = None
    # what else sets the run apart, "key=value" each (a sweep's other swept keys, a data
    # augmentation): in the label only, never in grouping or order
    extras: tuple[str, ...] = ()

    @property
    def uses_lambda(self) -> bool:
        return self.method in USES_LAMBDA

    @property
    def lam_text(self) -> str:
        """λ as a table cell: '–' where the method has none."""
        return f"{self.lam:g}" if self.uses_lambda else "–"

    @property
    def label(self) -> str:
        """``emd λ=4 n=100 seed=0`` (λ only where it acts, seed only where one is meant), then
        the extras: ``emd λ=4 n=100 seed=0 train.lr=0.001 contrastive=c.jsonl``."""
        lam = f" λ={self.lam:g}" if self.uses_lambda else ""
        seed = f" seed={self.seed}" if self.seed is not None else ""
        extras = "".join(f" {x}" for x in self.extras)
        return f"{self.method}{lam} n={self.toxic_count}{seed}{extras}"

    def without_seed(self) -> Setting:
        """The setting over its seeds; a λ that does not act is 0, so such trials group."""
        return Setting(self.method, self.lam if self.uses_lambda else 0.0, self.toxic_count)

    def sort_key(self) -> tuple:
        seed = -1 if self.seed is None else self.seed
        return (method_rank(self.method), self.toxic_count, self.lam, seed)
