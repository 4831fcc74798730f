#!/usr/bin/env bash
# Is it the pairs or the training? (README.md here, "Is it the pairs or the training?"): full.sh's
# evaluation (all 518 prompts, 250 XSTest-safe, PIQA/BoolQ/OpenBookQA) on run.sh's 100 pairs
# trained one whole epoch of the 400-row mixture (50 steps of 8, every harmful pair seen once)
# instead of 32 steps; SFT and EMD λ ∈ {16, 64}, λ chosen on the validation split.
set -euo pipefail
bash "$(dirname "$0")/full.sh" --set sweep.name=validation-cpu-epoch --set train.max_steps=50 \
  --set "sweep.cases=[{loss.method: sft}, {loss.method: emd, loss.lam: 16.0}, \
{loss.method: emd, loss.lam: 64.0}]" "$@"
