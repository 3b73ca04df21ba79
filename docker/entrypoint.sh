#!/bin/bash
# PID 1 of our TorchServe images: TorchServe in the foreground, stopped gracefully on SIGTERM or SIGINT.
#
# `torchserve --foreground` as PID 1 ignores SIGTERM (the kernel sends PID 1 no signal it has no handler for), so
# `docker stop` waited 10 s and killed it (exit 137), and Kubernetes would wait out its whole grace period. Here a
# SIGTERM first drains (tools/drain.py: waits, up to DRAIN_TIMEOUT_S, until no request is queued or being decoded),
# then sends SIGTERM to Java (what `torchserve --stop` does, without its second of Python start-up: Java shuts its
# workers down in ~2 s) and exits with TorchServe's status. DRAIN_TIMEOUT_S + ~2.5 s in all: under docker stop's
# 10 s. In Kubernetes, set it below terminationGracePeriodSeconds minus the preStop pause.
#
# TS_BIND_ADDRESS (optional): listen on this address instead of the config's 0.0.0.0, for a container on the host's
# network (`docker run --network host -e TS_BIND_ADDRESS=127.0.0.1`), where -p cannot limit who reaches the ports.
set -u
CONFIG=${TS_CONFIG_FILE:-/home/model-server/config.properties}
DRAIN_TIMEOUT_S=${DRAIN_TIMEOUT_S:-1}
TMP=${TEMP:-/tmp}

if [ -n "${TS_BIND_ADDRESS:-}" ]; then
    sed "s#://0\.0\.0\.0:#://${TS_BIND_ADDRESS}:#" "$CONFIG" > "$TMP/bound-config.properties"
    CONFIG=$TMP/bound-config.properties
fi

stop() {
    trap '' TERM INT  # a second signal while stopping changes nothing
    echo "entrypoint: stopping: draining for at most ${DRAIN_TIMEOUT_S} s" >&2
    python /usr/local/bin/seq2seq-drain --config "$CONFIG" --timeout "$DRAIN_TIMEOUT_S" >&2
    kill -TERM "$(cat "$TMP/.model_server.pid" 2>/dev/null)" 2>/dev/null || torchserve --stop >&2
    wait "$server"
    exit $?
}
trap stop TERM INT

torchserve --start --foreground --ncs --ts-config "$CONFIG" "$@" &
server=$!
wait "$server"
status=$?
# wait returns early (above 128) when a signal arrives: the trap has run and exited by then
exit "$status"
