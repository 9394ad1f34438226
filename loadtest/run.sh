#!/usr/bin/env bash
# Headless steady and burst scenarios against a running rtml (or, with --standalone, against
# rollout + inference started here in a fresh namespace with a freshly trained model).
# Locust's CSV stats land in loadtest/out/<scenario>_stats.csv; a one-line summary per scenario is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOCUST=${LOCUST:-.venv/bin/locust}
OUT=${RTML_LOADTEST_OUT:-loadtest/out}
mkdir -p "$OUT"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [[ "${1:-}" == "--standalone" ]]; then
  export RTML_NAMESPACE=${RTML_NAMESPACE:-lt_$(date +%s)}
  export RTML_ADMIN_TOKEN=${RTML_ADMIN_TOKEN:-loadtest-token}
  export RTML_ROLLOUT_HTTP_PORT=${RTML_ROLLOUT_HTTP_PORT:-18105} RTML_INFERENCE_HTTP_PORT=${RTML_INFERENCE_HTTP_PORT:-18103}
  export RTML_ROLLOUT_URL="http://127.0.0.1:${RTML_ROLLOUT_HTTP_PORT}"
  "$PY" -m services.rollout >"$OUT/rollout.log" 2>&1 & pids+=($!)
  "$PY" -m services.inference >"$OUT/inference.log" 2>&1 & pids+=($!)
  for _ in $(seq 60); do curl -fs "$RTML_ROLLOUT_URL/readyz" >/dev/null && break; sleep 0.5; done
  "$PY" -c "from pathlib import Path; from tests.train.export_factory import export_table, write; \
write(export_table(hours=8, seed=5), Path('$OUT/training.parquet'))"
  "$PY" -m rtml.train --export "$OUT/training.parquet" --kind mlp --rollout-url "$RTML_ROLLOUT_URL" | tail -1
  curl -fs -X POST -H "Authorization: Bearer $RTML_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d '{"version": 1}' "$RTML_ROLLOUT_URL/models/fraud/stable" >/dev/null
  sleep 3  # inference loads the version when it sees the routing policy
fi

for scenario in steady burst; do
  RTML_LOADTEST_SCENARIO=$scenario "$LOCUST" -f loadtest/locustfile.py --headless --only-summary \
    --csv "$OUT/$scenario" --csv-full-history >"$OUT/$scenario.log" 2>&1 || true
  "$PY" loadtest/summary.py "$scenario" "$OUT/${scenario}_stats.csv"
done
