"""The ``testing`` section: faults the project's own tests inject into real runs. Not a setting
for users: a run with any of these set fails on purpose. A section rather than environment
variables, so a single trial of a sweep (one of ``sweep.cases``) can carry one to its Ray
workers on any node."""

from __future__ import annotations

from pydantic import Field

from tasft_ray.config.base import Section


class TestingConfig(Section):
    __test__ = False  # not a pytest test class, whatever its name

    fail_at_step: int | None = Field(
        None, ge=1, description="Training rank 0 raises once on reaching this step."
    )
    fail_after_rows: int | None = Field(
        None, ge=1, description="`generate` stops with an error after writing this many rows."
    )
