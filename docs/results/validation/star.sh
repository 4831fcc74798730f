#!/usr/bin/env bash
# STAR-DSS (issue 33) beside full.sh's five methods: the same training (run.sh: 300 Alpaca + the
# 100 self-generated harmful pairs, 32 steps, seed 0) and the same evaluation (all 518 prompts of
# the paper's four benchmarks, all 250 XSTest-safe, PIQA/BoolQ/OpenBookQA 50 docs each). SFT
# again first: its numbers equal to full.sh's say the data and the setting are the same.
set -euo pipefail
bash "$(dirname "$0")/full.sh" --set sweep.name=validation-cpu-full-star \
  --set "sweep.cases=[{loss.method: sft}, {loss.method: star}]" "$@"
