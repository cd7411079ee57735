#!/usr/bin/env bash
# The local stack: a Prefect server, the process work pool with its deployments and worker(s), MLflow, and
# optuna-dashboard on the sweep storage.
#   bash scripts/stack.sh up               SQLite (the default): Prefect server (SQLite, 127.0.0.1:4200), one
#                                          worker running flows in this checkout, the MLflow UI on the project's
#                                          store (127.0.0.1:5000), optuna-dashboard on mlflow/optuna.db (:8080)
#   bash scripts/stack.sh up --postgres [--workers N]
#                                          a PostgreSQL cluster in .stack/pg (127.0.0.1, a free port) holding
#                                          the Prefect, MLflow and Optuna databases; the Prefect server on it, an
#                                          MLflow tracking server on it serving the artifacts (.stack/artifacts),
#                                          N workers (default 1) each in its own folder .stack/workers/worker-I
#                                          (as on separate machines), optuna-dashboard on the Optuna database
#   bash scripts/stack.sh down             stop everything (the PostgreSQL data stays in .stack/pg)
#   bash scripts/stack.sh status           what is running
# `up --only PARTS` starts some parts only (comma-separated: prefect, workers, mlflow, dashboard; PostgreSQL always
# starts with --postgres); the tests use it. After `up`, `source .stack/env` gives a shell (or another machine) the three URLs a worker needs.
# Ports: PREFECT_PORT, MLFLOW_PORT, DASHBOARD_PORT; GALAXY_STACK_DIR moves .stack elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=${GALAXY_STACK_DIR:-$ROOT/.stack}
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
DASHBOARD_PORT=${DASHBOARD_PORT:-8080}
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
export PATH=$ROOT/.venv/bin:$PATH
mkdir -p "$STATE"

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

wait_for() {  # url, seconds, name of the process (its pid and log in $STATE)
  for _ in $(seq "$2"); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen('$1', timeout=2)" 2>/dev/null && return 0
    alive "$3" || { echo "error: $3 exited; its log $STATE/$3.log ends: $(tail -n 1 "$STATE/$3.log")" >&2; return 1; }
    sleep 1
  done
  echo "error: $1 did not answer within $2 s (log: $STATE/$3.log)" >&2
  return 1
}

launch() {  # name, command...: in the background, its log and pid in $STATE (unless it runs already)
  local name=$1
  shift
  alive "$name" && return 0
  nohup "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

use_profile() {  # the prefect CLI and every flow run talk to this server (a profile, so plain `prefect ...` works)
  # written straight into profiles.toml (three `prefect profile` CLI starts took ~7 s); the previous one is kept
  python scripts/prefect_profile.py use galaxy-local "$STATE/previous_profile" PREFECT_API_URL="$PREFECT_API_URL" \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
}

prefect_up() {  # the server, the work pool and the deployments of prefect.yaml
  use_profile
  if [ "$MODE" = postgres ]; then
    PREFECT_API_DATABASE_CONNECTION_URL=$(bash scripts/pg.sh url "$STATE/pg" prefect asyncpg) \
      launch server prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
  else
    launch server prefect server start --host 127.0.0.1 --port "$PREFECT_PORT"
  fi
  wait_for "$PREFECT_API_URL/health" 180 server
  prefect work-pool create galaxy-process --type process --overwrite >/dev/null  # one CLI start (~3 s), not two
  # With SQLite the one worker runs flows in this checkout: GALAXY_HOME is fixed now. With PostgreSQL it is left
  # unset, so prefect.yaml's `{{ $GALAXY_HOME }}` is read by each flow run from its own worker's environment.
  if [ "$MODE" = postgres ]; then
    (unset GALAXY_HOME; prefect --no-prompt deploy --all) >"$STATE/deploy.log" 2>&1 || { cat "$STATE/deploy.log" >&2; exit 1; }
  else
    GALAXY_HOME=$ROOT prefect --no-prompt deploy --all >"$STATE/deploy.log" 2>&1 || { cat "$STATE/deploy.log" >&2; exit 1; }
  fi
}

workers_up() {
  if [ "$MODE" != postgres ]; then
    GALAXY_HOME=$ROOT launch worker prefect worker start --pool galaxy-process
    return
  fi
  # Each worker stands for a machine: its own folder (data, run folders, Prefect's result cache), the code by a
  # link (a clone there), and only the three URLs shared; models and artifacts go through the tracking server.
  local i dir
  for i in $(seq 0 $((WORKERS - 1))); do
    dir=$STATE/workers/worker-$i
    mkdir -p "$dir"
    ln -sfn "$ROOT/flows" "$dir/flows"  # the deployments' entrypoint, flows/pipeline.py, relative to GALAXY_HOME
    (
      cd "$dir"
      unset GALAXY_RUNS
      export GALAXY_HOME=$dir PREFECT_HOME=$dir/.prefect MLFLOW_TRACKING_URI=$MLFLOW_URI GALAXY_SWEEP_STORAGE=$SWEEP_STORAGE
      launch "worker-$i" prefect worker start --pool galaxy-process --name "worker-$i" --limit 1
    )
  done
}

mlflow_up() {
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false  # MLflow's job runner (GenAI jobs, 7 processes) is not used here
  if [ "$MODE" = postgres ]; then
    launch mlflow mlflow server \
      --backend-store-uri "$(bash scripts/pg.sh url "$STATE/pg" mlflow)" --serve-artifacts \
      --artifacts-destination "$STATE/artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1
  else
    mkdir -p mlflow
    launch mlflow mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db \
      --default-artifact-root "$ROOT/mlflow/artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT"
  fi
}

dashboard_up() {
  [ "$MODE" = postgres ] || mkdir -p mlflow
  # the dashboard reads a study storage, and a new database has no tables yet: Optuna makes them
  python -c "import sys; from tasks.sweep_study import open_rdb; open_rdb(sys.argv[1])" "$SWEEP_STORAGE"
  launch dashboard optuna-dashboard "$SWEEP_STORAGE" --host 127.0.0.1 --port "$DASHBOARD_PORT"
  wait_for "http://127.0.0.1:$DASHBOARD_PORT/api/studies" 120 dashboard
}

write_env() {  # what a shell or another machine needs to join this stack
  {
    echo "export PREFECT_API_URL=$PREFECT_API_URL"
    [ "$MODE" = postgres ] && echo "export MLFLOW_TRACKING_URI=$MLFLOW_URI"
    echo "export GALAXY_SWEEP_STORAGE=$SWEEP_STORAGE"
  } >"$STATE/env"
  chmod 600 "$STATE/env"
}

up() {
  MODE=sqlite WORKERS=1 PARTS=prefect,workers,mlflow,dashboard
  while [ $# -gt 0 ]; do
    case "$1" in
      --postgres) MODE=postgres ;;
      --workers) WORKERS=${2:?--workers needs a number}; shift ;;
      --only) PARTS=${2:?--only needs parts}; shift ;;
      *) echo "error: unknown option $1 (usage: up [--postgres] [--workers N] [--only PARTS])" >&2; exit 2 ;;
    esac
    shift
  done
  [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --workers: $WORKERS is not a positive number" >&2; exit 2; }
  if [ -f "$STATE/mode" ] && [ "$(cat "$STATE/mode")" != "$MODE" ] && alive server; then
    echo "error: the stack runs with $(cat "$STATE/mode"); run 'bash scripts/stack.sh down' first" >&2
    exit 2
  fi
  echo "$MODE" >"$STATE/mode"
  has() { [[ ",$PARTS," == *",$1,"* ]]; }
  MLFLOW_URI=http://127.0.0.1:$MLFLOW_PORT
  SWEEP_STORAGE=sqlite:///$ROOT/mlflow/optuna.db
  if [ "$MODE" = postgres ]; then
    bash scripts/pg.sh start "$STATE/pg" prefect mlflow optuna >/dev/null
    SWEEP_STORAGE=$(bash scripts/pg.sh url "$STATE/pg" optuna)
  fi
  write_env
  if has mlflow; then mlflow_up; fi  # it starts while the Prefect server starts
  if has prefect; then prefect_up; fi
  if has mlflow; then wait_for "http://127.0.0.1:$MLFLOW_PORT/health" 180 mlflow; fi
  if has workers; then workers_up; fi
  if has dashboard; then dashboard_up; fi
  if [ "$MODE" = postgres ]; then
    echo "PostgreSQL  127.0.0.1:$(cat "$STATE/pg/port")   (databases prefect, mlflow, optuna; data in $STATE/pg)"
  fi
  has prefect && echo "Prefect UI  http://127.0.0.1:$PREFECT_PORT   (API $PREFECT_API_URL, work pool galaxy-process)"
  has mlflow && echo "MLflow UI   http://127.0.0.1:$MLFLOW_PORT"
  has dashboard && echo "Optuna      http://127.0.0.1:$DASHBOARD_PORT   (optuna-dashboard on the sweep storage)"
  echo "Join it:    source $STATE/env   (the URLs a worker needs)"
  has prefect && echo "Run it:     prefect deployment run galaxy/full --watch"
  return 0
}

down() {
  local f name pid pids=()
  for f in "$STATE"/dashboard.pid "$STATE"/worker*.pid "$STATE"/mlflow.pid "$STATE"/server.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then  # all at once: each may take seconds to shut down
      pkill -TERM -P "$pid" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
      pids+=("$pid")
      echo "stopped $(basename "$f" .pid)"
    fi
    rm -f "$f"
  done
  for _ in $(seq 10); do  # 5 s, then SIGKILL
    name=
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && name=$pid; done
    [ -z "$name" ] && break
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [ -f "$STATE/pg/data/PG_VERSION" ]; then
    bash scripts/pg.sh status "$STATE/pg" >/dev/null 2>&1 && bash scripts/pg.sh stop "$STATE/pg" && echo "stopped pg"
  fi
  if [ -f "$STATE/previous_profile" ]; then  # give the shell back the Prefect profile it had before `up`
    python scripts/prefect_profile.py restore "$STATE/previous_profile" || true
    rm -f "$STATE/previous_profile"
  fi
  rm -f "$STATE/mode"
  return 0
}

status() {
  local f name
  for name in server mlflow dashboard; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
  for f in "$STATE"/worker*.pid; do
    [ -f "$f" ] || continue
    name=$(basename "$f" .pid)
    if alive "$name"; then echo "$name: running (pid $(cat "$f"))"; else echo "$name: stopped"; fi
  done
  if [ -f "$STATE/pg/data/PG_VERSION" ]; then echo "pg: $(bash scripts/pg.sh status "$STATE/pg" || true)"; fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: bash scripts/stack.sh up [--postgres] [--workers N] | down | status" >&2; exit 2 ;;
esac
