#!/usr/bin/env bash
# The base images our Dockerfiles build FROM, where the real ones cannot be pulled:
#
#   docker/standin/bases.sh     # DOCKER=... (default docker), run from the repo root
#
# For each base (pytorch/torchserve:0.12.0-gpu, python:3.11-slim-bookworm): an image of that name already here is
# used; else `docker pull`; only where the pull fails is a stand-in built and tagged with the upstream name, so that
# docker/Dockerfile and docker/Dockerfile.kserve build unchanged. A stand-in starts from Debian (debootstrap from the
# mirror this machine's apt already uses, then `docker import`) and follows the upstream image's recipe
# (docker/standin/*.Dockerfile). Its Python packages come from PyPI through this machine's pip settings, into the
# wheel cache `make test-image-runtime` shares (IMAGE_WHEELS). Nothing here names a host: the mirror and pip's
# settings are read from the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."

DOCKER=${DOCKER:-docker}
TORCHSERVE_BASE=${TORCHSERVE_BASE:-pytorch/torchserve:0.12.0-gpu}
PYTHON_BASE=${PYTHON_BASE:-python:3.11-slim-bookworm}
IMAGE_WHEELS=${IMAGE_WHEELS:-$HOME/.cache/seq2seq-py39-wheels}
WORK=${STANDIN_WORK:-/var/tmp/seq2seq-standin}

log() { echo "bases: $*" >&2; }

# The Debian mirror apt uses here (deb822 .sources or a one-line sources.list)
debian_mirror() {
  local uri
  uri=$(grep -hs -m1 '^URIs:.*/debian/\?$' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | head -1)
  [ -n "$uri" ] || uri=$(grep -hs '^deb .*/debian/\? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                         awk '{print $2}' | head -1)
  [ -n "$uri" ] || { log "no Debian mirror found in /etc/apt: cannot build a stand-in"; exit 1; }
  echo "$uri"
}

# seq2seq-standin/debian:<suite> from debootstrap, with the packages the stand-in needs already in it
debian_image() {
  local suite=$1 include=$2 root="$WORK/rootfs-$1"
  "$DOCKER" image inspect "seq2seq-standin/debian:$suite" >/dev/null 2>&1 && return
  command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; } >&2
  log "debootstrap $suite ($include)"
  rm -rf "$root" && mkdir -p "$root"
  debootstrap --variant=minbase --include="$include" "$suite" "$root" "$(debian_mirror)" >"$WORK/debootstrap-$suite.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | "$DOCKER" import -c 'CMD ["bash"]' - "seq2seq-standin/debian:$suite" >/dev/null
  rm -rf "$root"
}

# The CPython 3.9 wheels of requirements-image.txt (shared with make test-image-runtime's cache)
image_wheels() {
  mkdir -p "$IMAGE_WHEELS"
  python3 -m pip download -q -d "$IMAGE_WHEELS" --only-binary=:all: --python-version 3.9 --implementation cp \
    --abi cp39 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 -r requirements-image.txt >&2
}

torchserve_standin() {
  local context="$WORK/context-torchserve"
  debian_image bullseye python3.9,python3-venv,openjdk-17-jdk-headless,ca-certificates,procps
  image_wheels
  rm -rf "$context" && mkdir -p "$context"
  cp -al "$IMAGE_WHEELS" "$context/wheels" 2>/dev/null || cp -a "$IMAGE_WHEELS" "$context/wheels"
  grep -vE '^(tokenizers)==' requirements-image.txt > "$context/base.txt"  # the stock image has no tokenizers
  cp docker/standin/dockerd-entrypoint.sh docker/standin/config.properties "$context/"
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host -q -f docker/standin/torchserve.Dockerfile \
    -t "$TORCHSERVE_BASE" "$context" >/dev/null
  rm -rf "$context"
}

python_standin() {
  debian_image bookworm python3,python3-pip,python3-venv,ca-certificates
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host -q -f docker/standin/python.Dockerfile \
    -t "$PYTHON_BASE" docker/standin >/dev/null
}

# base image name, the function that builds its stand-in
ensure() {
  local image=$1 build=$2 started=$SECONDS
  if "$DOCKER" image inspect "$image" >/dev/null 2>&1; then log "$image: present"; return; fi
  if timeout 60 "$DOCKER" pull -q "$image" >/dev/null 2>&1; then log "$image: pulled"; return; fi
  log "$image cannot be pulled here: building a stand-in (docker/standin/)"
  "$build"
  "$DOCKER" image inspect "$image" >/dev/null
  log "$image: stand-in built in $((SECONDS - started)) s"
}

mkdir -p "$WORK"
ensure "$TORCHSERVE_BASE" torchserve_standin
ensure "$PYTHON_BASE" python_standin
