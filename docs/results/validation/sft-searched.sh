#!/usr/bin/env bash
# The SFT search's best feasible setting (sft-optimization.sh), trained as full.sh trains with
# its learning rate, steps and gradient accumulation, at seeds 0 and 1, evaluated on all 518
# prompts and all 250 XSTest-safe prompts (report in sft-searched/). One warm-up step as the
# search had (configs/sft-optimization.yaml): validation.yaml's warmup_ratio 0.03 rounds to none
# at 16 steps. The sweep is named by the setting, so that each best the search finds keeps its
# own folder (the first, lr 1.83162e-4 / 16 / 2, ran as validation-cpu-full-sft-searched).
#   bash docs/results/validation/sft-searched.sh LR STEPS GRAD_ACCUM
set -euo pipefail
lr=$1 steps=$2 accum=$3
shift 3
bash "$(dirname "$0")/full.sh" --set "sweep.name=validation-cpu-full-sft-searched-$lr-$steps-$accum" \
  --set train.warmup_steps=1 \
  --set "sweep.cases=[{loss.method: sft, train.lr: $lr, train.max_steps: $steps, train.grad_accum: $accum, train.seed: 0}, \
{loss.method: sft, train.lr: $lr, train.max_steps: $steps, train.grad_accum: $accum, train.seed: 1}]" "$@"
