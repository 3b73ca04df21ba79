#!/usr/bin/env bash
# A Docker engine for building and testing the images, on a machine that may have none.
#
#   eval "$(docker/engine.sh start)"   # prints DOCKER_HOST=... (and DOCKER=...) for this shell; starts one if needed
#   docker/engine.sh stop              # stops the engine `start` started, and nothing else
#
# An engine that already answers (`docker info`) is used as it is. Otherwise Debian's docker.io is installed if
# missing and dockerd is started with flags that work in a sandbox without network privileges: no bridge, no
# iptables (containers and builds then use --network host), overlay2 storage (vfs where overlay cannot mount), its
# socket and state under $ENGINE_DIR. The data root stays there between runs, so base layers and build caches are
# reused by the next run on the same machine.
#
# The client: builds need BuildKit (the per-Dockerfile .dockerignore files keep the build context small). A client
# without it (Docker >= 23 without the buildx plugin) is replaced by Debian's, which has BuildKit built in.
set -euo pipefail

ENGINE_DIR=${ENGINE_DIR:-/var/tmp/seq2seq-docker}
SOCKET=unix://$ENGINE_DIR/docker.sock

log() { echo "engine: $*" >&2; }

# The first client that can build with BuildKit: the one on PATH (with buildx, or <= 20.10), else Debian's
buildkit_client() {
  local candidate version
  for candidate in "$(command -v docker || true)" /usr/bin/docker; do
    [ -x "$candidate" ] || continue
    if "$candidate" buildx version >/dev/null 2>&1; then echo "$candidate"; return; fi
    version=$("$candidate" version -f '{{.Client.Version}}' 2>/dev/null || true)
    case "$version" in 1[0-9].*|20.*) echo "$candidate"; return ;; esac
  done
  return 1
}

install_engine() {
  command -v dockerd >/dev/null && [ -x /usr/bin/docker ] && return
  log "installing Debian's docker.io"
  apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >&2
}

start_dockerd() {
  local driver=$1 stale
  mkdir -p "$ENGINE_DIR"
  # a dockerd killed with its session leaves its pid file and socket behind: clear them unless it still runs
  stale=$(cat "$ENGINE_DIR/dockerd.pid" 2>/dev/null || true)
  if [ -z "$stale" ] || ! kill -0 "$stale" 2>/dev/null; then rm -f "$ENGINE_DIR/dockerd.pid" "$ENGINE_DIR/docker.sock"; fi
  nohup dockerd --host "$SOCKET" --data-root "$ENGINE_DIR/data" --exec-root "$ENGINE_DIR/exec" \
    --pidfile "$ENGINE_DIR/dockerd.pid" --storage-driver "$driver" \
    --bridge=none --iptables=false --ip6tables=false >"$ENGINE_DIR/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do
    DOCKER_HOST=$SOCKET /usr/bin/docker info >/dev/null 2>&1 && return 0
    kill -0 $! 2>/dev/null || return 1
    sleep 1
  done
  return 1
}

start() {
  local client
  if docker info >/dev/null 2>&1; then           # an engine of the machine's own (or DOCKER_HOST's)
    client=$(buildkit_client) || { log "no client with BuildKit: install docker-buildx"; exit 1; }
    echo "export DOCKER=$client"
    return
  fi
  install_engine
  if ! DOCKER_HOST=$SOCKET /usr/bin/docker info >/dev/null 2>&1; then
    start_dockerd overlay2 || { log "overlay2 failed, trying vfs (slower, copies every layer)";
                                stop_dockerd; start_dockerd vfs; } ||
      { log "dockerd did not start: see $ENGINE_DIR/dockerd.log"; tail -5 "$ENGINE_DIR/dockerd.log" >&2; exit 1; }
    touch "$ENGINE_DIR/started-by-us"
    log "dockerd started ($ENGINE_DIR, $(DOCKER_HOST=$SOCKET /usr/bin/docker info -f '{{.Driver}}'))"
  fi
  echo "export DOCKER_HOST=$SOCKET"
  echo "export DOCKER=$(DOCKER_HOST=$SOCKET buildkit_client)"
}

stop_dockerd() {
  local pid
  pid=$(cat "$ENGINE_DIR/dockerd.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  [ -f "$ENGINE_DIR/started-by-us" ] || return 0
  DOCKER_HOST=$SOCKET /usr/bin/docker ps -q | xargs -r env DOCKER_HOST="$SOCKET" /usr/bin/docker rm -f >/dev/null
  stop_dockerd
  rm -f "$ENGINE_DIR/started-by-us"
  log "dockerd stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
