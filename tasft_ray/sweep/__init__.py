"""Sweeps: Ray Tune over Ray Train trials — search space (space), one trial (trial), the
driver with its MLflow parent run and resume (driver)."""
