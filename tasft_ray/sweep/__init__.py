"""Sweeps: Ray Tune over Ray Train trials — the search space (space), one trial (trial), one
Tune run (tuner), the driver with its MLflow parent run and resume (driver), and what the
driver leans on: paths, interrupt, outcome, reference, summary, the prepared data (prepared)."""
