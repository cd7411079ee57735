#!/usr/bin/env bash
# The local stack: Prefect server (SQLite, 127.0.0.1:4200), the process work pool with its deployments and
# a worker, and the MLflow UI on the project's store (127.0.0.1:5000).
#   bash scripts/stack.sh up      start everything (idempotent)
#   bash scripts/stack.sh down    stop everything
#   bash scripts/stack.sh status  what is running
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/.stack
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
export GALAXY_HOME=$ROOT
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
export PATH=$ROOT/.venv/bin:$PATH
mkdir -p "$STATE" mlflow

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

wait_for() {  # url, seconds
  for _ in $(seq "$2"); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('$1', timeout=2)" 2>/dev/null && return 0
    sleep 1
  done
  echo "error: $1 did not answer within $2 s (logs in $STATE/)" >&2
  return 1
}

up() {
  # the prefect CLI and every flow run talk to this server (a profile, so plain `prefect ...` works too)
  [ -f "$STATE/previous_profile" ] || python3 - >"$STATE/previous_profile" <<'PY' || true
import os, tomllib, pathlib
path = pathlib.Path(os.environ.get("PREFECT_HOME", pathlib.Path.home() / ".prefect")) / "profiles.toml"
print(tomllib.loads(path.read_text()).get("active", "ephemeral") if path.exists() else "ephemeral")
PY
  prefect profile create galaxy-local >/dev/null 2>&1 || true
  prefect --profile galaxy-local config set PREFECT_API_URL="$PREFECT_API_URL" PREFECT_SERVER_ANALYTICS_ENABLED=false >/dev/null
  prefect profile use galaxy-local >/dev/null 2>&1 || true  # it checks connectivity, which fails until the server is up
  if ! alive server; then
    nohup prefect server start --host 127.0.0.1 --port "$PREFECT_PORT" >"$STATE/server.log" 2>&1 &
    echo $! >"$STATE/server.pid"
  fi
  wait_for "$PREFECT_API_URL/health" 120
  prefect work-pool inspect galaxy-process >/dev/null 2>&1 || prefect work-pool create galaxy-process --type process >/dev/null
  prefect --no-prompt deploy --all >"$STATE/deploy.log" 2>&1 || { cat "$STATE/deploy.log" >&2; exit 1; }
  if ! alive worker; then
    nohup prefect worker start --pool galaxy-process >"$STATE/worker.log" 2>&1 &
    echo $! >"$STATE/worker.pid"
  fi
  if ! alive mlflow; then
    nohup mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --default-artifact-root "$ROOT/mlflow/artifacts" \
      --host 127.0.0.1 --port "$MLFLOW_PORT" >"$STATE/mlflow.log" 2>&1 &
    echo $! >"$STATE/mlflow.pid"
  fi
  wait_for "http://127.0.0.1:$MLFLOW_PORT/health" 120
  echo "Prefect UI  http://127.0.0.1:$PREFECT_PORT   (API $PREFECT_API_URL, work pool galaxy-process)"
  echo "MLflow UI   http://127.0.0.1:$MLFLOW_PORT   (store sqlite:///mlflow/mlflow.db)"
  echo "Run it:     prefect deployment run galaxy/full --watch"
}

down() {
  for name in worker mlflow server; do
    if alive "$name"; then
      pid=$(cat "$STATE/$name.pid")
      pkill -TERM -P "$pid" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -9 "$pid" 2>/dev/null || true
      echo "stopped $name"
    fi
    rm -f "$STATE/$name.pid"
  done
  if [ -f "$STATE/previous_profile" ]; then  # give the shell back the Prefect profile it had before `up`
    prefect profile use "$(cat "$STATE/previous_profile")" >/dev/null 2>&1 || true
    rm -f "$STATE/previous_profile"
  fi
}

status() {
  for name in server worker mlflow; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: bash scripts/stack.sh up|down|status" >&2; exit 2 ;;
esac
