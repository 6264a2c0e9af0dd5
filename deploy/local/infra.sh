#!/usr/bin/env bash
# Start, stop and inspect the local streaming infrastructure without Docker: Apache Kafka 4.1 (KRaft) and Redis.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: deploy/local/infra.sh COMMAND

  up           start Kafka and Redis; return once both answer (idempotent)
  down         stop both: SIGTERM, then SIGKILL after 30 s (idempotent)
  status       show what runs; exit 0 only if both answer
  kafka-start  kafka-stop  redis-start  redis-stop
               one component at a time (fault tests)

environment (defaults):
  RW_KAFKA_PORT=9092  RW_KAFKA_CONTROLLER_PORT=9093  RW_REDIS_PORT=6379
  RW_INFRA_DIR=<repo>/var/infra      data, logs and pid files
  RW_KAFKA_VERSION=4.1.1             RW_KAFKA_LIB=~/.cache/riskwatch/kafka-<version>/lib
  RW_KAFKA_HEAP=512m                 RW_INFRA_TIMEOUT=90 (seconds to wait in up/start)
EOF
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TEMPLATE_DIR="$REPO_ROOT/deploy/local/kafka"

KAFKA_PORT="${RW_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${RW_KAFKA_CONTROLLER_PORT:-9093}"
REDIS_PORT="${RW_REDIS_PORT:-6379}"
INFRA_DIR="${RW_INFRA_DIR:-$REPO_ROOT/var/infra}"
KAFKA_VERSION="${RW_KAFKA_VERSION:-4.1.1}"
KAFKA_LIB="${RW_KAFKA_LIB:-$HOME/.cache/riskwatch/kafka-$KAFKA_VERSION/lib}"
KAFKA_HEAP="${RW_KAFKA_HEAP:-512m}"
TIMEOUT="${RW_INFRA_TIMEOUT:-90}"
STOP_TIMEOUT=30

KAFKA_DIR="$INFRA_DIR/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_CONF="$KAFKA_DIR/server.properties"
CLUSTER_ID_FILE="$KAFKA_DIR/cluster-id"
REDIS_DIR="$INFRA_DIR/redis"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"

log() { printf 'infra: %s\n' "$*"; }
die() { printf 'infra: error: %s\n' "$*" >&2; exit 1; }

port_open() {  # bash's /dev/tcp: no nc needed
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---- process bookkeeping: a pid counts only if it is still *our* process (pids get reused) ----

is_our_kafka() {
    local pid="$1"
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "kafka.Kafka $KAFKA_CONF"
}

is_our_redis() {
    local pid="$1"
    [[ -r /proc/$pid/comm ]] || return 1
    [[ "$(cat "/proc/$pid/comm")" == redis-server* ]] || return 1
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$REDIS_DIR" ]]
}

listener_pid() {  # pid listening on a local TCP port, if ss can tell
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}

# Prints the running pid of a component (pid file first, then whoever owns its port) or fails.
running_pid() {
    local kind="$1" pidfile port pid
    if [[ $kind == kafka ]]; then pidfile="$KAFKA_PID" port="$KAFKA_PORT"; else pidfile="$REDIS_PID" port="$REDIS_PORT"; fi
    for pid in "$(cat "$pidfile" 2>/dev/null || true)" "$(listener_pid "$port")"; do
        [[ -n $pid ]] && "is_our_$kind" "$pid" && { echo "$pid"; return 0; }
    done
    return 1
}

stop_pid() {
    local name="$1" pid="$2" waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if (( waited >= STOP_TIMEOUT * 10 )); then
            log "$name (pid $pid) still running after ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

# ---- Kafka ----

kafka_metadata_ok() {
    if command -v kcat >/dev/null 2>&1; then
        timeout 10 kcat -b "127.0.0.1:$KAFKA_PORT" -L -m 5 >/dev/null 2>&1
    elif [[ -x $REPO_ROOT/.venv/bin/python ]]; then
        timeout 15 "$REPO_ROOT/.venv/bin/python" - "127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1 <<'EOF'
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=5)
sys.exit(0 if md.brokers else 1)
EOF
    else
        port_open "$KAFKA_PORT"
    fi
}

KAFKA_LOG_MARK=0  # lines of server.log written before this start: show only what this start wrote

kafka_tail_logs() {
    local recent
    recent="$(tail -n "+$((KAFKA_LOG_MARK + 1))" "$KAFKA_LOGS/server.log" 2>/dev/null | tail -n 25)"
    if [[ -n $recent ]]; then
        printf -- '--- last lines of %s ---\n%s\n' "$KAFKA_LOGS/server.log" "$recent" >&2
    fi
    if [[ -s $KAFKA_LOGS/kafka.out ]]; then
        printf -- '--- %s (JVM output) ---\n' "$KAFKA_LOGS/kafka.out" >&2
        tail -n 25 "$KAFKA_LOGS/kafka.out" >&2
    fi
}

kafka_java() {  # short-lived tool JVMs (storage format, uuid)
    java -Xmx256m -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$TEMPLATE_DIR/log4j2.properties" \
        -Dkafka.logs.dir="$KAFKA_LOGS" "$@"
}

kafka_prepare() {
    compgen -G "$KAFKA_LIB/kafka_2.13-*.jar" >/dev/null \
        || die "Kafka jars not found in $KAFKA_LIB; run scripts/bootstrap.sh first"
    command -v java >/dev/null 2>&1 || die "java (17+) not found; run scripts/bootstrap.sh first"
    mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
    sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
        -e "s|@LOG_DIR@|$KAFKA_DATA|g" "$TEMPLATE_DIR/server.properties.template" >"$KAFKA_CONF"
    if [[ ! -s $CLUSTER_ID_FILE ]]; then
        kafka_java kafka.tools.StorageTool random-uuid | tail -n1 >"$CLUSTER_ID_FILE.tmp"
        mv "$CLUSTER_ID_FILE.tmp" "$CLUSTER_ID_FILE"
    fi
    if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
        log "formatting Kafka storage (cluster id $(cat "$CLUSTER_ID_FILE"))"
        kafka_java kafka.tools.StorageTool format -t "$(cat "$CLUSTER_ID_FILE")" -c "$KAFKA_CONF" \
            --ignore-formatted >>"$KAFKA_LOGS/format.log" 2>&1 \
            || { tail -n 20 "$KAFKA_LOGS/format.log" >&2; die "Kafka storage format failed"; }
    fi
}

kafka_start() {
    local pid started deadline
    if pid="$(running_pid kafka)"; then
        echo "$pid" >"$KAFKA_PID"
        kafka_metadata_ok || kafka_wait "$pid"
        log "kafka already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
        return 0
    fi
    rm -f "$KAFKA_PID"
    local port
    for port in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
        port_open "$port" && die "port $port is taken by another process (pid $(listener_pid "$port"));" \
            "stop it or choose other ports with RW_KAFKA_PORT / RW_KAFKA_CONTROLLER_PORT"
    done
    kafka_prepare
    started=$SECONDS
    KAFKA_LOG_MARK="$(wc -l <"$KAFKA_LOGS/server.log" 2>/dev/null || echo 0)"
    # setsid: the broker must outlive this shell and its process group; bash -c records the pid java will have.
    # shellcheck disable=SC2016  # $$ and $@ belong to the inner bash
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID" \
        java "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dkafka.logs.dir="$KAFKA_LOGS" -Dlog4j2.configurationFile="$TEMPLATE_DIR/log4j2.properties" \
        -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_CONF" \
        </dev/null >"$KAFKA_LOGS/kafka.out" 2>&1 9>&- &
    deadline=$((SECONDS + 5))
    until [[ -s $KAFKA_PID ]]; do
        (( SECONDS < deadline )) || die "kafka did not start (no pid file)"
        sleep 0.05
    done
    pid="$(cat "$KAFKA_PID")"
    kafka_wait "$pid"
    log "kafka up (pid $pid) on 127.0.0.1:$KAFKA_PORT in $((SECONDS - started))s"
}

kafka_wait() {
    local pid="$1" deadline=$((SECONDS + TIMEOUT))
    until port_open "$KAFKA_PORT" && kafka_metadata_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$KAFKA_PID"
            kafka_tail_logs
            die "kafka exited during start-up (logs: $KAFKA_LOGS)"
        fi
        if (( SECONDS >= deadline )); then
            kafka_tail_logs
            log "stopping the half-started broker (pid $pid)"
            stop_pid kafka "$pid"
            rm -f "$KAFKA_PID"
            die "kafka did not answer a metadata request on 127.0.0.1:$KAFKA_PORT within ${TIMEOUT}s"
        fi
        sleep 0.5
    done
}

kafka_stop() {
    local pid
    if pid="$(running_pid kafka)"; then
        log "stopping kafka (pid $pid)"
        stop_pid kafka "$pid"
        log "kafka stopped"
    else
        log "kafka not running"
    fi
    rm -f "$KAFKA_PID"
}

# ---- Redis ----

redis_ping() {
    [[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

redis_start() {
    local pid started deadline
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found; run scripts/bootstrap.sh first"
    if pid="$(running_pid redis)"; then
        log "redis already running (pid $pid) on 127.0.0.1:$REDIS_PORT"
        return 0
    fi
    if port_open "$REDIS_PORT"; then
        die "port $REDIS_PORT is taken by another process (pid $(listener_pid "$REDIS_PORT")); a system redis?" \
            "stop it (systemctl stop redis-server) or choose another port with RW_REDIS_PORT"
    fi
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_PID"
    started=$SECONDS
    # appendonly: every write survives a restart; daemonize detaches it from this shell.
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" \
        --appendonly yes --appendfsync everysec --daemonize yes \
        --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" >/dev/null 9>&-
    deadline=$((SECONDS + TIMEOUT))
    until redis_ping; do
        if (( SECONDS >= deadline )) || { [[ -s $REDIS_PID ]] && ! kill -0 "$(cat "$REDIS_PID")" 2>/dev/null; }; then
            [[ -s $REDIS_LOG ]] && { printf -- '--- last lines of %s ---\n' "$REDIS_LOG" >&2; tail -n 25 "$REDIS_LOG" >&2; }
            die "redis did not answer PING on 127.0.0.1:$REDIS_PORT"
        fi
        sleep 0.1
    done
    log "redis up (pid $(cat "$REDIS_PID")) on 127.0.0.1:$REDIS_PORT in $((SECONDS - started))s"
}

redis_stop() {
    local pid
    if pid="$(running_pid redis)"; then
        log "stopping redis (pid $pid)"
        stop_pid redis "$pid"   # SIGTERM makes redis fsync the AOF before exiting
        log "redis stopped"
    else
        log "redis not running"
    fi
    rm -f "$REDIS_PID"
}

# ---- status ----

status() {
    local pid rc=0
    if pid="$(running_pid kafka)"; then
        if kafka_metadata_ok; then
            log "kafka: running (pid $pid), 127.0.0.1:$KAFKA_PORT answers metadata, cluster $(cat "$CLUSTER_ID_FILE" 2>/dev/null)"
        else
            log "kafka: process $pid alive but 127.0.0.1:$KAFKA_PORT does not answer (starting or stuck?)"; rc=3
        fi
    else
        log "kafka: stopped"; rc=3
    fi
    if pid="$(running_pid redis)"; then
        if redis_ping; then
            log "redis: running (pid $pid), 127.0.0.1:$REDIS_PORT answers PONG, data in $REDIS_DIR"
        else
            log "redis: process $pid alive but 127.0.0.1:$REDIS_PORT does not answer"; rc=3
        fi
    else
        log "redis: stopped"; rc=3
    fi
    return "$rc"
}

# One infra.sh at a time per data directory (make -j, parallel test sessions); daemons do not inherit the lock.
if [[ ${1:-} =~ ^(up|down|kafka-start|kafka-stop|redis-start|redis-stop)$ ]]; then
    mkdir -p "$INFRA_DIR"
    exec 9>"$INFRA_DIR/.lock"
    flock -w $((TIMEOUT + STOP_TIMEOUT + 30)) 9 || die "another infra.sh holds $INFRA_DIR/.lock"
fi

case "${1:-}" in
    up)          redis_start; kafka_start ;;
    down)        kafka_stop; redis_stop ;;
    status)      status ;;
    kafka-start) kafka_start ;;
    kafka-stop)  kafka_stop ;;
    redis-start) redis_start ;;
    redis-stop)  redis_stop ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
