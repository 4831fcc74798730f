#!/usr/bin/env bash
# Submit a sweep to a running Ray cluster (KubeRay port-forward, `ray dashboard`, or local).
#   jobs/submit.sh [CONFIG] [--set key=value ...]
#   RAY_ADDRESS=http://127.0.0.1:8265 jobs/submit.sh configs/paper/llama7b.yaml --set sweep.max_concurrent_trials=1
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/quickstart.yaml}
shift || true
address=${RAY_ADDRESS:-http://127.0.0.1:8265}
env_json=$(printf '{"env_vars": {"TASFT_DATA_DIR": "%s", "RAY_AUTH_MODE": "%s"}}' \
  "${TASFT_DATA_DIR:-}" "${RAY_AUTH_MODE:-disabled}")
exec ray job submit --address "$address" --working-dir . --runtime-env-json "$env_json" -- \
  python -m tasft_ray.tune --config "$config" "$@"
