#!/usr/bin/env bash
# Issue 33's second (and later) seeds: the six methods of full.sh + star.sh — SFT, EMD λ 16,
# token NLCL λ 4, STL, KTO, STAR-DSS — trained as run.sh does with another train.seed (LoRA
# init, data order, dropout) and evaluated as full.sh does (all 518 prompts, all 250 XSTest-safe,
# PIQA/BoolQ/OpenBookQA 50 docs each). After a stop, finish it with the sweep's saved config:
#   OMP_NUM_THREADS=2 TASFT_DATA_DIR=../shared/data python -m tasft_ray.tune --resume runs/ray/validation-cpu-full-seedN
#   bash docs/results/validation/seeds.sh [SEED [--set KEY=VALUE ...]]      # default seed 1
set -euo pipefail
seed=${1:-1}
shift $(( $# > 0 ? 1 : 0 ))
bash "$(dirname "$0")/full.sh" --set sweep.name=validation-cpu-full-seed$seed --set train.seed=$seed \
  --set "sweep.cases=[{loss.method: sft}, {loss.method: emd, loss.lam: 16.0}, \
{loss.method: nlcl, loss.nlcl_variant: token, loss.lam: 4.0}, {loss.method: stl}, {loss.method: kto}, \
{loss.method: star}]" "$@"
