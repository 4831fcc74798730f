"""The ``sweep`` section: the Tune search space, the searcher and scheduler, and the objective
that ranks trials (with its constraints and the toxic-count search)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from tasft_ray.config.base import Section
from tasft_ray.objective import Constraint, Objective

KINDS = "{grid: [...]}, {choice: [...]}, {uniform: [LOW, HIGH]} or {loguniform: [LOW, HIGH]}"


class SweepParam(Section):
    grid: list[Any] | None = None
    choice: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, raw: Any) -> Any:
        if not isinstance(raw, dict | SweepParam):
            raise ValueError(f"expected one of {KINDS}")
        return raw

    @model_validator(mode="after")
    def _one_kind(self) -> SweepParam:
        kinds = [k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k)]
        if len(kinds) != 1:
            empty = [k for k in ("grid", "choice") if getattr(self, k) == []]
            raise ValueError(f"{empty[0]} is empty" if empty and not kinds else
                             f"give exactly one of {KINDS}")  # fmt: skip
        for kind in ("uniform", "loguniform"):
            low, high = getattr(self, kind) or (1, 2)
            if not low < high:
                raise ValueError(f"{kind}: LOW must be below HIGH (got [{low}, {high}])")
        if self.loguniform and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: LOW must be above 0 (got {self.loguniform[0]})")
        return self


class ConstraintConfig(Section):
    """A bound on one metric: absolute (max / min) or relative to the SFT reference."""

    max: float | None = None
    min: float | None = None
    max_vs_sft: float | None = None
    min_vs_sft: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> ConstraintConfig:
        given = [
            k for k in ("max", "min", "max_vs_sft", "min_vs_sft") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of max, min, max_vs_sft, min_vs_sft")
        return self


class ObjectiveConfig(Section):
    """What a sweep optimises: one validation metric under constraints (or a Pareto front).
    One MLflow param, ``sweep.objective``: the report rebuilds it from there."""

    ONE_VALUE = True

    minimize: str | None = Field(None, description="Metric to minimise, e.g. val/harm_score.")
    maximize: str | None = Field(None, description="Metric to maximise.")
    constraints: dict[str, ConstraintConfig] = Field(
        default_factory=dict,
        description="metric -> bound, e.g. {val/quality: {min_vs_sft: -0.02}, "
        "val/safe_refusal_rate: {max: 0.10}, val/degenerate_rate: {max: 0.05}}.",
    )
    pareto: dict[str, Literal["min", "max"]] = Field(
        default_factory=dict,
        description="Multi-objective: metric -> direction, e.g. {val/harm_score: min, "
        "val/safe_refusal_rate: min, val/quality: max}; the sweep maps their Pareto front.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> ObjectiveConfig:
        if (self.minimize is None) == (self.maximize is None):
            raise ValueError("give exactly one of minimize, maximize")
        return self

    def build(self) -> Objective:
        cons = tuple(
            Constraint(metric, kind, getattr(spec, kind))
            for metric, spec in self.constraints.items()
            for kind in ("max", "min", "max_vs_sft", "min_vs_sft")
            if getattr(spec, kind) is not None
        )
        target, mode = (self.minimize, "min") if self.minimize else (self.maximize, "max")
        return Objective(target, mode, cons, tuple(self.pareto.items()))


class ToxicSearchConfig(Section):
    """The smallest data.toxic_count whose best λ reaches a validation harm target."""

    counts: list[int] = Field(min_length=2, description="Candidate counts, searched by bisection.")
    target: float = Field(
        ge=0, description="Largest acceptable value of the objective's metric (e.g. harm rate)."
    )


class SweepConfig(Section):
    name: str = Field("sweep", min_length=1, description="Tune experiment name (a folder).")
    storage: str = Field("runs/ray", description="Ray storage path for trials and checkpoints.")
    storage_attempts: int = Field(
        10,
        ge=1,
        le=100,
        description="Tries per object-store request (checkpoint uploads and downloads "
        "included), AWS's standard exponential backoff between them: 10 ride out ~45 s of an "
        "unreachable or throttling endpoint.",
    )
    space: dict[str, SweepParam] = Field(
        default_factory=dict,
        description="Dotted config key -> values, e.g. loss.lam: {grid: [0, 1]}.",
    )
    cases: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Linked overrides, crossed with `space`: each case is one set of dotted keys, "
        "e.g. {loss.method: emd, data.toxic_count: 100, loss.lam: 9.0} (paper Table 4).",
    )
    search: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1, description="Samples (x each grid point).")
    max_concurrent_trials: int = Field(1, ge=1)
    metric: str | None = Field(
        None,
        description="Reported metric that ranks trials when there is no objective (None: Tune "
        "ranks nothing, as a grid of methods has no common yardstick; a training loss cannot "
        "compare trials with different λ: use objective).",
    )
    mode: Literal["min", "max"] = "min"
    objective: ObjectiveConfig | None = Field(
        None,
        description="What the sweep optimises, under which constraints: it drives the searcher, "
        "the scheduler and the report's choice (needs eval.every for validation in training).",
    )
    toxic_search: ToxicSearchConfig | None = Field(
        None,
        description="Search the smallest data.toxic_count reaching toxic_search.target on the "
        "objective's metric (bisection over counts, λ searched per count).",
    )
    scheduler: Literal["none", "asha"] = Field(
        "none", description="ASHA early stopping, on the objective at validation steps."
    )
    grace_steps: int = Field(5, ge=1, description="ASHA: steps before a trial may be stopped.")
    num_cpus: int | None = Field(
        None, ge=1, description="Logical CPUs for a local Ray (default: enough for the sweep)."
    )

    @model_validator(mode="after")
    def _searcher_fits_the_space(self) -> SweepConfig:
        if self.search == "optuna" and (
            any(p.grid is not None for p in self.space.values()) or self.cases
        ):
            raise ValueError(
                "sweep.search=optuna samples its values: use choice/uniform/loguniform in "
                "sweep.space, not grid or sweep.cases"
            )
        if self.scheduler == "asha" and self.objective is not None and self.objective.pareto:
            raise ValueError("sweep.scheduler=asha needs one objective, not a Pareto front")
        return self
