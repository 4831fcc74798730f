#!/usr/bin/env bash
# Toxic count down from 100 (README.md here, "Fewer harmful pairs"): run.sh's settings with EMD
# λ 16 and token NLCL λ 4 at 10, 25, 50 and 100 harmful pairs (a seeded subset of the same 100).
set -euo pipefail
cases="["
for n in 10 25 50 100; do
  cases+="{loss.method: emd, loss.lam: 16.0, data.toxic_count: $n}, "
  cases+="{loss.method: nlcl, loss.nlcl_variant: token, loss.lam: 4.0, data.toxic_count: $n}, "
done
bash "$(dirname "$0")/run.sh" --set sweep.name=validation-cpu-counts --set "sweep.cases=${cases%, }]" "$@"
