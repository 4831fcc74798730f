#!/usr/bin/env bash
# The reduced validation run measured on the 2-core CPU box (README.md here): configs/validation.yaml
# with 6 trials at toxic count 100, 32 steps, evaluation subsets. Run from the repository root after
# `tasft-ray generate --config quickstart` (the 100 self-generated harmful pairs).
set -euo pipefail
OMP_NUM_THREADS=2 TASFT_DATA_DIR=${TASFT_DATA_DIR:-../shared/data} python -m tasft_ray.tune --config validation \
  --set sweep.name=validation-cpu \
  --set data.harmful.path=data/generated/quickstart_harmful.jsonl \
  --set data.safe_count=300 --set train.grad_accum=2 --set train.max_steps=32 \
  --set train.checkpoint_every=16 --set eval.checkpoints=final \
  --set eval.max_prompts=25 --set eval.validation.max_prompts=40 --set eval.likelihood_max=60 \
  --set "eval.benchmarks=[i_malicious, i_cona, i_controversial, harmfulq, xstest_safe]" \
  --set eval.sampling.max_new_tokens=48 --set "eval.quality_tasks=[piqa]" --set eval.quality_limit=50 \
  --set "sweep.cases=[{loss.method: sft}, {loss.method: emd, loss.lam: 4.0}, \
{loss.method: emd, loss.lam: 16.0}, {loss.method: nlcl, loss.nlcl_variant: token, loss.lam: 4.0}, \
{loss.method: stl}, {loss.method: kto}]" "$@"
