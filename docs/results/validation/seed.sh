#!/usr/bin/env bash
# A second seed for the 288-pair comparison (README.md here, "A second seed at 288 pairs"):
# counts_all.sh's training of EMD λ 16 and token NLCL λ 4 (the λ chosen there) with another
# train.seed (LoRA init, data order, dropout), evaluated as full.sh does (all 518 prompts, 250
# XSTest-safe, PIQA/BoolQ/OpenBookQA). Needs counts_all.sh's data/generated/harmful_all.jsonl.
#   bash docs/results/validation/seed.sh [SEED [--set KEY=VALUE ...]]      # default seed 1
set -euo pipefail
seed=${1:-1}
shift $(( $# > 0 ? 1 : 0 ))
bash "$(dirname "$0")/counts_all.sh" --set sweep.name=validation-cpu-all-seed$seed \
  --set train.seed=$seed --set eval.max_prompts=null \
  --set "eval.quality_tasks=[piqa, boolq, openbookqa]" \
  --set "sweep.cases=[{loss.method: emd, loss.lam: 16.0}, \
{loss.method: nlcl, loss.nlcl_variant: token, loss.lam: 4.0}]" "$@"
