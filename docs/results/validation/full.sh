#!/usr/bin/env bash
# The full safety evaluation (README.md here, "All 518 prompts"): run.sh's training, then every
# prompt of the paper's four benchmarks (518) and all 250 XSTest-safe prompts instead of the first
# 25 of each, PIQA/BoolQ/OpenBookQA (first 50 docs each); SFT, EMD λ 16, token NLCL λ 4, STL, KTO.
set -euo pipefail
bash "$(dirname "$0")/run.sh" --set sweep.name=validation-cpu-full --set eval.max_prompts=null \
  --set "eval.quality_tasks=[piqa, boolq, openbookqa]" \
  --set "sweep.cases=[{loss.method: sft}, {loss.method: emd, loss.lam: 16.0}, \
{loss.method: nlcl, loss.nlcl_variant: token, loss.lam: 4.0}, {loss.method: stl}, {loss.method: kto}]" "$@"
