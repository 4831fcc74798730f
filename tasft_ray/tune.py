"""`python -m tasft_ray.tune`: a Ray Tune sweep of TA-SFT trainings, tracked in MLflow.

    python -m tasft_ray.tune                                   # configs/quickstart.yaml, local Ray
    python -m tasft_ray.tune --config tiny --set "sweep.space={loss.lam: {grid: [0, 1]}}"
    python -m tasft_ray.tune --resume runs/ray/sweep       # finish an interrupted one, its config
    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m tasft_ray.tune --config configs/paper/llama7b.yaml

The same command as `tasft-ray tune` (``tasft_ray.cli``); the sweep itself is
``tasft_ray.sweep``.
"""

from __future__ import annotations

import sys

from tasft_ray.cli import main as _cli_main


def main(argv: list[str] | None = None) -> int:
    return _cli_main(["tune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
