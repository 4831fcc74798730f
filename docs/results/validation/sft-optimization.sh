#!/usr/bin/env bash
# Issue 33's optimisation-only control, as run on the 2-core CPU box: configs/sft-optimization.yaml
# (plain SFT; Tune's Optuna search over learning rate, steps and effective batch under
# configs/search.yaml's objective, ASHA at step 16, an SFT reference trial first for the quality
# bound), validation only (its best setting is then trained and evaluated on all 518 prompts at
# two seeds by sft-searched.sh). Then: python docs/results/validation/methods.py export-search \
#   --parent-run <the sweep's parent run id>   (its trials into sft-optimization/search.json)
set -euo pipefail
OMP_NUM_THREADS=2 TASFT_DATA_DIR=${TASFT_DATA_DIR:-../shared/data} python -m tasft_ray.tune \
  --config configs/sft-optimization.yaml --set eval.in_sweep=false --set sweep.num_samples=6 "$@"
