#!/usr/bin/env bash
# Start riskwatch's streaming services in the background, each as its own process.
#
#   scripts/start_streaming_services.sh            task generator, LLM scheduler, aggregator
#   scripts/start_streaming_services.sh --all      also the LLM simulator, the detector and the gateway
#   scripts/start_streaming_services.sh detector   just the named service(s)
#
# Needs Kafka and Redis (`make infra-up && make topics`). Each service runs as
#   ALGO_ENABLE_KAFKA_STREAMING=true ALGO_METRICS_PORT=<port> uv run --frozen python -m <module> [args]
# from the repository root, logging to logs/streaming/<service>.log with its pid in
# logs/streaming/<service>.pid. Running it again starts only what is not running. Other ALGO_*
# variables in the environment (e.g. ALGO_KAFKA_BOOTSTRAP_SERVERS) reach every service.
# A service counts as started once it listens on its ports; a port already taken by another
# program stops that service from being started. Stop with scripts/stop_streaming_services.sh.
#
# Environment: RW_LOG_DIR (default logs/streaming), RW_START_TIMEOUT_S (seconds a service may
# take to listen, default 60), RW_PORT_OFFSET (added to every port, for a second stack on one
# host; default 0), UV (the uv binary, default uv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOG_DIR="${RW_LOG_DIR:-logs/streaming}"
START_TIMEOUT="${RW_START_TIMEOUT_S:-60}"
OFFSET="${RW_PORT_OFFSET:-0}"
UV="${UV:-uv}"

ALL=(llmsim aggregator scheduler task_generator detector gateway)
DEFAULT=(task_generator scheduler aggregator)

usage() {
  sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo "services: ${ALL[*]}"
}

port() { echo $(($1 + OFFSET)); }

# The python -m arguments of a service.
command_of() {
  case "$1" in
    llmsim) echo "riskwatch_llmsim --port $(port 8400)" ;;
    aggregator) echo "riskwatch_aggregator" ;;
    scheduler) echo "riskwatch_scheduler llm-scheduler" ;;
    task_generator) echo "riskwatch_scheduler task-generator" ;;
    detector) echo "riskwatch_detector" ;;
    gateway) echo "riskwatch_gateway" ;;
    *) return 1 ;;
  esac
}

# Prometheus port (config/monitoring.yaml, deploy/prometheus/prometheus.yml); none for the simulator.
metrics_port_of() {
  case "$1" in
    gateway) port 9101 ;;
    detector) port 9102 ;;
    task_generator) port 9103 ;;
    scheduler) port 9104 ;;
    aggregator) port 9105 ;;
  esac
}

# Every port the service listens on once it is up.
ports_of() {
  local p
  p="$(metrics_port_of "$1")"
  case "$1" in
    llmsim) p="$(port 8400)" ;;
    detector) p="$p ${ALGO_GRPC_PORT:-$(port 50052)}" ;;
    gateway) p="$p ${ALGO_GATEWAY__GRPC_PORT:-$(port 50051)} ${ALGO_GATEWAY__HTTP_PORT:-$(port 8000)}" ;;
  esac
  echo "$p"
}

# Environment of the service: streaming on, its metrics port, and (with an offset) the moved ports.
env_of() {
  echo "ALGO_ENABLE_KAFKA_STREAMING=true"
  local metrics
  metrics="$(metrics_port_of "$1")"
  [[ -n "$metrics" ]] && echo "ALGO_METRICS_PORT=$metrics"
  ((OFFSET)) || return 0
  case "$1" in
    scheduler) echo "RW_LLM_BASE_URL=${RW_LLM_BASE_URL:-http://127.0.0.1:$(port 8400)/v1}" ;;
    detector) echo "ALGO_GRPC_PORT=${ALGO_GRPC_PORT:-$(port 50052)}" ;;
    gateway)
      echo "ALGO_GATEWAY__GRPC_PORT=${ALGO_GATEWAY__GRPC_PORT:-$(port 50051)}"
      echo "ALGO_GATEWAY__HTTP_PORT=${ALGO_GATEWAY__HTTP_PORT:-$(port 8000)}"
      echo "ALGO_GATEWAY__DETECTOR_ADDRESS=${ALGO_GATEWAY__DETECTOR_ADDRESS:-127.0.0.1:$(port 50052)}"
      ;;
  esac
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Prints the pid from $1's pid file when that process is alive and still runs module $2 (a pid
# can be reused after a reboot).
running_pid() {
  local pidfile="$1" module="$2" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(tr -dc '0-9' <"$pidfile")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  ps -p "$pid" -o args= 2>/dev/null | grep -q -- "$module" || return 1
  echo "$pid"
}

show_log_tail() {
  echo "    last lines of $LOG_DIR/$1.log:" >&2
  tail -n 30 "$LOG_DIR/$1.log" | sed 's/^/    | /' >&2
}

selected=()
while (($#)); do
  case "$1" in
    --all) selected=("${ALL[@]}") ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    *)
      command_of "$1" >/dev/null || { echo "unknown service: $1 (services: ${ALL[*]})" >&2; exit 2; }
      selected+=("$1")
      ;;
  esac
  shift
done
((${#selected[@]})) || selected=("${DEFAULT[@]}")
[[ "$OFFSET" =~ ^[0-9]+$ ]] || { echo "RW_PORT_OFFSET must be a whole number" >&2; exit 2; }

if ! command -v "$UV" >/dev/null 2>&1; then
  echo "uv not found (run \`make install\`, or set UV=/path/to/uv)" >&2
  exit 1
fi
mkdir -p "$LOG_DIR"

failed=0
started=()
# Each background job gets its own process group, so the stop script can also reach the python
# process under `uv run` when it has to SIGKILL.
set -m
for name in "${selected[@]}"; do
  args="$(command_of "$name")"
  module="${args%% *}"
  pidfile="$LOG_DIR/$name.pid"
  log="$LOG_DIR/$name.log"
  if pid="$(running_pid "$pidfile" "$module")"; then
    echo "✓ $name already running (pid $pid)"
    continue
  fi
  rm -f "$pidfile"
  busy=""
  for p in $(ports_of "$name"); do
    listening "$p" && busy="$busy $p"
  done
  if [[ -n "$busy" ]]; then
    echo "✗ $name not started: port(s)$busy already in use by another program (\`make up\`? another stack? \`ss -ltnp\` shows which)" >&2
    failed=1
    continue
  fi
  env_vars=()
  while IFS= read -r line; do env_vars+=("$line"); done < <(env_of "$name")
  printf '===== %s starting: %s python -m %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "${env_vars[*]}" "$args" >>"$log"
  # shellcheck disable=SC2086  # $args is the module and its flags, split on purpose
  nohup env "${env_vars[@]}" "$UV" run --frozen python -m $args >>"$log" 2>&1 </dev/null &
  echo "$!" >"$pidfile"
  started+=("$name")
  echo "→ $name starting (pid $!, ports $(ports_of "$name"), log $log)"
done
set +m

if ((${#started[@]})); then
  # A service has started once it listens on all its ports; it has failed if it exits first.
  sleep 2
  deadline=$((SECONDS + START_TIMEOUT))
  for name in "${started[@]}"; do
    args="$(command_of "$name")"
    while :; do
      if ! pid="$(running_pid "$LOG_DIR/$name.pid" "${args%% *}")"; then
        echo "✗ $name exited during start-up" >&2
        show_log_tail "$name"
        rm -f "$LOG_DIR/$name.pid"
        failed=1
        break
      fi
      missing=""
      for p in $(ports_of "$name"); do
        listening "$p" || missing="$missing $p"
      done
      if [[ -z "$missing" ]]; then
        echo "✓ $name running (pid $pid)"
        break
      fi
      if ((SECONDS >= deadline)); then
        echo "✗ $name (pid $pid) is running but not listening on$missing after ${START_TIMEOUT} s" >&2
        show_log_tail "$name"
        failed=1
        break
      fi
      sleep 0.5
    done
  done
fi

if ((failed)); then
  echo "some services did not start; the others keep running (scripts/stop_streaming_services.sh stops them)" >&2
  exit 1
fi
((${#started[@]})) && echo "logs: tail -f $LOG_DIR/*.log"
exit 0
