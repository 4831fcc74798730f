"""The SFT reference trial that an objective's ``*_vs_sft`` constraints compare with: the
sweep's base settings with method sft, one trial, run before the search (reused on resume)."""

from __future__ import annotations

import logging

from tasft_ray.config import Config, ConfigError
from tasft_ray.storage import Location
from tasft_ray.sweep import interrupt
from tasft_ray.sweep.tuner import fit

log = logging.getLogger(__name__)

REFERENCE = "reference"  # its folder in the sweep's, and its trials' tasft.role tag


def reference_config(cfg: Config) -> Config:
    """The sweep's base settings with method sft, as a one-trial sweep."""
    return cfg.with_overrides(
        {"loss.method": "sft", "sweep.space": {}, "sweep.cases": [], "sweep.search": "grid",
         "sweep.scheduler": "none", "sweep.num_samples": 1, "sweep.objective": None,
         "sweep.toxic_search": None, "sweep.metric": None},
    )  # fmt: skip


def run_reference(
    ref: Config, sweep: Location, uri: str, parent: str, prepared
) -> dict[str, float]:
    """Run (or, resumed, reuse) the SFT reference; its last validation's metrics."""
    where = sweep.child(REFERENCE)
    results = fit(ref, where, uri, parent, prepared, restore=True, search={"role": REFERENCE})
    if interrupt.stopped() or not len(results) or results[0].error:
        raise ConfigError(
            f"the SFT reference of the objective did not finish ({where.uri}); resume the sweep"
        )
    val = {k: v for k, v in (results[0].metrics or {}).items() if k.startswith("val/")}
    log.info("SFT reference for the objective's constraints: %s", val)
    return val
