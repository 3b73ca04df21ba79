# Stand-in for python:3.11-slim-bookworm, built by docker/standin/bases.sh only where Docker Hub cannot be reached:
# Debian 12's own Python 3.11 (the official image builds CPython from source into /usr/local) with pip usable
# system-wide, as in the official image. docs/DEPLOY.md says what it differs in.
ARG DEBIAN_BASE=seq2seq-standin/debian:bookworm
FROM ${DEBIAN_BASE}
LABEL seq2seq.standin="docker/standin/bases.sh"
ENV LANG=C.UTF-8
RUN rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/pip3 /usr/local/bin/pip
CMD ["python3"]
