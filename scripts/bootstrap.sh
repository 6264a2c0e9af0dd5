#!/usr/bin/env bash
# Install everything riskwatch needs from package registries only (apt, PyPI, Go proxy, Maven Central); idempotent.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/bootstrap.sh [--no-apt] [--no-uv] [--no-grpcurl] [--no-kafka] [--no-sync]

Each step is skipped quickly when its result is already present:
  apt      redis-server, prometheus (promtool), kcat, chromium, chromium-driver (+ maven, a JRE if missing)
  uv       pip install uv, if uv is missing
  grpcurl  go install .../grpcurl@v1.9.4 into ~/.cache/riskwatch/bin
  kafka    Kafka 4.1.1 + log4j2 jars from Maven Central into ~/.cache/riskwatch/kafka-4.1.1/lib
  sync     uv sync --all-packages (--frozen when uv.lock exists)
EOF
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="$HOME/.cache/riskwatch"
BIN_DIR="$CACHE_DIR/bin"
GRPCURL_VERSION="v1.9.4"
KAFKA_VERSION="${RW_KAFKA_VERSION:-4.1.1}"
KAFKA_LIB="$CACHE_DIR/kafka-$KAFKA_VERSION/lib"
APT_PACKAGES=(redis-server prometheus kcat chromium chromium-driver)

do_apt=1 do_uv=1 do_grpcurl=1 do_kafka=1 do_sync=1
for arg in "$@"; do
    case "$arg" in
        --no-apt) do_apt=0 ;;
        --no-uv) do_uv=0 ;;
        --no-grpcurl) do_grpcurl=0 ;;
        --no-kafka) do_kafka=0 ;;
        --no-sync) do_sync=0 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

step_started=$SECONDS
say() { printf 'bootstrap: %-8s %s (%ds)\n' "$1" "$2" "$((SECONDS - step_started))"; step_started=$SECONDS; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }
mkdir -p "$CACHE_DIR" "$BIN_DIR"
LOG="$CACHE_DIR/bootstrap.log"
: >"$LOG"
run_logged() {  # keep tool chatter out of the one-line-per-step output, show it on failure
    if ! "$@" >>"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        die "failed: $* (full log: $LOG)"
    fi
}

SUDO=()
if (( EUID != 0 )); then
    command -v sudo >/dev/null 2>&1 && SUDO=(sudo)
fi

# ---- apt ----
if (( do_apt )); then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    # Node.js may come from elsewhere (with npm bundled); Debian's packages only when the commands are absent.
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    if (( ${#missing[@]} == 0 )); then
        say apt "all packages present"
    else
        (( EUID == 0 || ${#SUDO[@]} > 0 )) || die "need root (or sudo) to apt-get install ${missing[*]}"
        run_logged "${SUDO[@]}" apt-get update
        run_logged "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
        say apt "installed ${missing[*]}"
        # Only the binaries are wanted: on a systemd host the packages also start system daemons, and the
        # system redis would hold 6379, which deploy/local/infra.sh needs. Stop only what this run installed.
        if [[ -d /run/systemd/system ]]; then
            for svc in redis-server prometheus; do
                [[ " ${missing[*]} " == *" $svc "* ]] || continue
                "${SUDO[@]}" systemctl disable --now "$svc" >>"$LOG" 2>&1 || true
                say apt "disabled the system $svc service (deploy/local/infra.sh runs its own)"
            done
        fi
    fi
else
    say apt "skipped (--no-apt)"
fi

# ---- uv ----
if (( do_uv )); then
    if command -v uv >/dev/null 2>&1; then
        say uv "present ($(uv --version))"
    else
        # Debian's system Python is "externally managed" (PEP 668); uv is a self-contained binary, so override.
        python3 -m pip install --quiet uv >>"$LOG" 2>&1 \
            || run_logged python3 -m pip install --quiet --break-system-packages uv
        hash -r
        command -v uv >/dev/null 2>&1 || die "uv installed but not on PATH (try ~/.local/bin)"
        say uv "installed ($(uv --version))"
    fi
else
    say uv "skipped (--no-uv)"
fi

# ---- grpcurl ----
if (( do_grpcurl )); then
    if [[ -x $BIN_DIR/grpcurl ]]; then
        say grpcurl "present ($BIN_DIR/grpcurl)"
    elif command -v go >/dev/null 2>&1; then
        run_logged env GOBIN="$BIN_DIR" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
        say grpcurl "built $GRPCURL_VERSION into $BIN_DIR"
    else
        say grpcurl "WARNING: go not found, grpcurl not built (needs Go >= 1.21 from go.dev)"
    fi
else
    say grpcurl "skipped (--no-grpcurl)"
fi

# ---- Kafka jars ----
if (( do_kafka )); then
    if [[ -f $KAFKA_LIB/.complete ]]; then
        say kafka "jars present ($KAFKA_LIB, $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars)"
    else
        command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven, or drop --no-apt)"
        tmp_lib="$KAFKA_LIB.tmp.$$"
        rm -rf "$tmp_lib"
        # Resolve into a temp dir and rename, so an interrupted run never leaves a half-filled lib/.
        run_logged mvn -q -B -f "$REPO_ROOT/deploy/local/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
            dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp_lib"
        [[ -f $tmp_lib/kafka_2.13-$KAFKA_VERSION.jar ]] || die "maven did not produce kafka_2.13-$KAFKA_VERSION.jar"
        touch "$tmp_lib/.complete"
        rm -rf "$KAFKA_LIB"
        mkdir -p "$(dirname "$KAFKA_LIB")"
        mv "$tmp_lib" "$KAFKA_LIB"
        say kafka "resolved kafka_2.13 $KAFKA_VERSION ($(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars) into $KAFKA_LIB"
    fi
else
    say kafka "skipped (--no-kafka)"
fi

# ---- Python workspace ----
if (( do_sync )); then
    command -v uv >/dev/null 2>&1 || die "uv not found (drop --no-uv)"
    cd "$REPO_ROOT"
    if [[ -f uv.lock ]]; then
        run_logged uv sync --all-packages --frozen
        say sync "uv sync --all-packages --frozen done (.venv)"
    else
        run_logged uv sync --all-packages
        say sync "uv sync --all-packages done (.venv, wrote uv.lock)"
    fi
else
    say sync "skipped (--no-sync)"
fi
