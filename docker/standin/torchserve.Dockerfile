# Stand-in for pytorch/torchserve:0.12.0-gpu, built by docker/standin/bases.sh only where Docker Hub cannot be
# reached. It follows the upstream image's production stage (pytorch/serve docker/Dockerfile at v0.12.0): Python 3.9
# in a venv at /home/venv, torch 2.4.0 and TorchServe 0.12.0 from PyPI, Java 17, the user model-server (uid 1000)
# in /home/model-server with TEMP=/home/model-server/tmp, and an entrypoint that runs `serve`. It differs in the OS
# (Debian 11 "bullseye", whose Python is 3.9, instead of Ubuntu with the deadsnakes PPA) and in CUDA (PyPI's torch
# 2.4.0 brings its nvidia-* wheels, but no CUDA base image: no GPU runs on it). docs/DEPLOY.md says more.
# The build context (made by bases.sh): wheels/ (the requirements-image.txt wheels for CPython 3.9), base.txt (the
# pins to install), dockerd-entrypoint.sh and config.properties.
ARG DEBIAN_BASE=seq2seq-standin/debian:bullseye
FROM ${DEBIAN_BASE}
LABEL seq2seq.standin="docker/standin/bases.sh"

ENV PYTHONUNBUFFERED=TRUE
# Java 17, Python 3.9 and its venv module came with the Debian base (debootstrap --include); the user and the venv
# as upstream's, the venv owned by model-server from the layer that fills it (a chown in a later layer would store
# its 5 GB twice)
RUN useradd -m -u 1000 model-server \
    && mkdir -p /home/model-server/tmp /home/model-server/model-store
ENV PATH="/home/venv/bin:$PATH"
RUN --mount=type=bind,source=.,target=/tmp/context \
    python3.9 -m venv /home/venv \
    && pip install --no-cache-dir --no-index --find-links /tmp/context/wheels -r /tmp/context/base.txt \
    && chown -R model-server /home/venv
COPY dockerd-entrypoint.sh /usr/local/bin/dockerd-entrypoint.sh
COPY config.properties /home/model-server/config.properties
RUN chmod +x /usr/local/bin/dockerd-entrypoint.sh \
    && chown -R model-server /home/model-server

EXPOSE 8080 8081 8082 7070 7071
USER model-server
WORKDIR /home/model-server
ENV TEMP=/home/model-server/tmp
ENTRYPOINT ["/usr/local/bin/dockerd-entrypoint.sh"]
CMD ["serve"]
