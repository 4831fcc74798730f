#!/usr/bin/env bash
# Which pairs or how many? (README.md here, "100 pairs drawn from the 288"): run.sh's 100-pair
# training (32 steps) with the 100 pairs drawn at random (data.toxic_selection: seeded) from
# counts_all.sh's 288 instead of the quickstart's first 100; EMD λ 16 and 4, evaluated as full.sh
# does. Needs counts_all.sh's data/generated/harmful_all.jsonl.
set -euo pipefail
bash "$(dirname "$0")/counts_all.sh" --set sweep.name=validation-cpu-100of288 \
  --set data.toxic_count=100 --set train.max_steps=32 --set eval.max_prompts=null \
  --set "eval.quality_tasks=[piqa, boolq, openbookqa]" \
  --set "sweep.cases=[{loss.method: emd, loss.lam: 16.0}, {loss.method: emd, loss.lam: 4.0}]" "$@"
