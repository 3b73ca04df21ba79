#!/bin/bash
# The stand-in base's entrypoint, behaving as the upstream image's: `serve` starts TorchServe in the background with
# token authorization off, anything else is run as a command; then it idles so that the container stays up.
set -e
if [ "$1" = "serve" ]; then
    shift
    torchserve --start --ts-config /home/model-server/config.properties --disable-token-auth "$@"
else
    eval "$@"
fi
tail -f /dev/null
