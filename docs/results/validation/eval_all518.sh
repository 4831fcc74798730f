#!/usr/bin/env bash
# One trained adapter on every prompt of the paper's four benchmarks (518) and all 250 XSTest-safe
# prompts, with run.sh's evaluation settings (greedy, 48 new tokens, offline judge): the full
# safety evaluation of a sweep trial without retraining it (README.md here, "288 harmful pairs").
#   bash docs/results/validation/eval_all518.sh ADAPTER_DIR [OUTPUT_DIR]
set -euo pipefail
adapter=${1:?usage: eval_all518.sh ADAPTER_DIR [OUTPUT_DIR]}
OMP_NUM_THREADS=2 TASFT_DATA_DIR=${TASFT_DATA_DIR:-../shared/data} tasft-ray evaluate --config validation \
  --adapter "$adapter" --set eval.output_dir="${2:-runs/eval/all518}" \
  --set "eval.benchmarks=[i_malicious, i_cona, i_controversial, harmfulq, xstest_safe]" \
  --set eval.max_prompts=null --set eval.sampling.max_new_tokens=48 \
  --set "eval.validation.benchmarks=[]" --set "eval.likelihood={}" --set "eval.quality_tasks=[]"
