#!/usr/bin/env bash
# Submit a sweep to a running Ray cluster (KubeRay port-forward, `ray dashboard`, or local).
#   jobs/submit.sh [CONFIG] [--set key=value ...]
#   RAY_ADDRESS=http://127.0.0.1:8265 MLFLOW_TRACKING_URI=http://HOST:5000 \
#     jobs/submit.sh configs/paper/llama7b.yaml --set sweep.storage=s3://BUCKET/sweeps
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/quickstart.yaml}
shift || true
address=${RAY_ADDRESS:-http://127.0.0.1:8265}
# The job's driver runs on the head: it needs the data, the tracking server and the storage's
# endpoint; these variables travel with the job when set here. Credentials do not: the nodes
# use their own (an instance role or service account, or the environment `ray start` ran in).
env_json=$(python3 - <<'PY'
import json, os
keys = ("TASFT_DATA_DIR", "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
env = {k: os.environ[k] for k in keys if os.environ.get(k)}
env["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", "disabled")
print(json.dumps({"env_vars": env}))
PY
)
exec ray job submit --address "$address" --working-dir . --runtime-env-json "$env_json" -- \
  python -m tasft_ray.tune --config "$config" "$@"
