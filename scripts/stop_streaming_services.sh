#!/usr/bin/env bash
# Stop the services started by scripts/start_streaming_services.sh: SIGTERM (they drain in-flight
# work, flush and commit), then SIGKILL whatever is still running after the timeout.
#
#   scripts/stop_streaming_services.sh                 task generator, LLM scheduler, aggregator
#   scripts/stop_streaming_services.sh --all           every service (also llmsim, detector, gateway)
#   scripts/stop_streaming_services.sh --timeout 60    wait up to 60 s (default 30) before SIGKILL
#   scripts/stop_streaming_services.sh gateway         just the named service(s)
#
# Services are found by their pid files in logs/streaming (RW_LOG_DIR); stopping what is not
# running is not an error.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOG_DIR="${RW_LOG_DIR:-logs/streaming}"
TIMEOUT=30

# Upstream first: a stage stops receiving new work before its consumers drain.
ALL=(gateway detector task_generator scheduler aggregator llmsim)
DEFAULT=(task_generator scheduler aggregator)

module_of() {
  case "$1" in
    llmsim) echo riskwatch_llmsim ;;
    aggregator) echo riskwatch_aggregator ;;
    scheduler | task_generator) echo riskwatch_scheduler ;;
    detector) echo riskwatch_detector ;;
    gateway) echo riskwatch_gateway ;;
    *) return 1 ;;
  esac
}

usage() {
  sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  echo "services: ${ALL[*]}"
}

selected=()
while (($#)); do
  case "$1" in
    --all) selected=("${ALL[@]}") ;;
    --timeout)
      [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "--timeout needs a whole number of seconds" >&2; exit 2; }
      TIMEOUT="$2"
      shift
      ;;
    --timeout=*)
      TIMEOUT="${1#--timeout=}"
      [[ "$TIMEOUT" =~ ^[0-9]+$ ]] || { echo "--timeout needs a whole number of seconds" >&2; exit 2; }
      ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    *)
      module_of "$1" >/dev/null || { echo "unknown service: $1 (services: ${ALL[*]})" >&2; exit 2; }
      selected+=("$1")
      ;;
  esac
  shift
done
((${#selected[@]})) || selected=("${DEFAULT[@]}")
# Keep the upstream-first order whatever order the names were given in.
ordered=()
for name in "${ALL[@]}"; do
  for want in "${selected[@]}"; do
    [[ "$name" == "$want" ]] && { ordered+=("$name"); break; }
  done
done

alive() {  # pid module
  kill -0 "$1" 2>/dev/null && ps -p "$1" -o args= 2>/dev/null | grep -q -- "$2"
}

stopping=()
for name in "${ordered[@]}"; do
  pidfile="$LOG_DIR/$name.pid"
  if [[ ! -f "$pidfile" ]]; then
    echo "· $name not running"
    continue
  fi
  pid="$(tr -dc '0-9' <"$pidfile")"
  module="$(module_of "$name")"
  if [[ -z "$pid" ]] || ! alive "$pid" "$module"; then
    echo "· $name not running (removed stale pid file)"
    rm -f "$pidfile"
    continue
  fi
  # uv forwards SIGTERM to the python process and exits when it does.
  kill -TERM "$pid" 2>/dev/null || true
  stopping+=("$name:$pid")
  echo "→ $name stopping (pid $pid, SIGTERM)"
done

((${#stopping[@]})) || exit 0

deadline=$((SECONDS + TIMEOUT))
while :; do
  remaining=()
  for item in "${stopping[@]}"; do
    name="${item%%:*}"
    pid="${item##*:}"
    if alive "$pid" "$(module_of "$name")"; then
      remaining+=("$item")
    else
      rm -f "$LOG_DIR/$name.pid"
      echo "✓ $name stopped"
    fi
  done
  stopping=("${remaining[@]+"${remaining[@]}"}")
  ((${#stopping[@]})) || break
  if ((SECONDS >= deadline)); then
    for item in "${stopping[@]}"; do
      name="${item%%:*}"
      pid="${item##*:}"
      echo "✗ $name still running after ${TIMEOUT} s; sending SIGKILL (pid $pid)" >&2
      # The start script gives each service its own process group: kill uv and python together.
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      rm -f "$LOG_DIR/$name.pid"
    done
    exit 0
  fi
  sleep 0.2
done
