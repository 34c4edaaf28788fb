# syntax=docker/dockerfile:1
#
# One image runs both processes of a deployment: the API (`molfusion serve`, the default command) and
# the recommendation worker (`molfusion worker`). docs/deploy.md explains how to build and run it.
#
#   docker build -t molfusion:gpu .                          # CUDA runtime base (the default)
#   docker build -t molfusion:cpu --build-arg VARIANT=cpu .  # plain Ubuntu base, CPU-only torch
#
# VARIANT picks both the base image and the lock file (requirements/${VARIANT}.txt). The lock holds the
# runtime dependencies only (no test or lint tools); requirements/lock.py regenerates it from pyproject.

ARG VARIANT=gpu
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
ARG CPU_IMAGE=ubuntu:24.04

# ---- base images: both Ubuntu 24.04 (Python 3.12), so one lock format serves both variants ----
FROM ${CUDA_IMAGE} AS os-gpu
FROM ${CPU_IMAGE} AS os-cpu

# ---- python: the interpreter and the shared libraries the wheels expect, plus the service user ----
# os-${VARIANT} is one of the two stages above (their tags are pinned there).
# hadolint ignore=DL3006
FROM os-${VARIANT} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# libgomp1: OpenMP for xgboost and scikit-learn; libxrender1/libxext6: RDKit's drawing code.
# Versions come from the pinned Ubuntu release of the base image (security updates still apply).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 libxrender1 libxext6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 molfusion \
 && useradd --system --uid 10001 --gid molfusion --create-home --home-dir /home/molfusion molfusion

# ---- builder: a virtual environment with the locked dependencies and the molfusion wheel ----
FROM python AS builder
ARG VARIANT
# Optional package sources for a build behind a mirror or without the internet, e.g.
#   --build-arg PIP_FIND_LINKS=http://host:8765/  (pip reads them as its own variables; unset = PyPI and
# the PyTorch CPU index named in the lock). They exist only in this stage, not in the final image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY requirements/${VARIANT}.txt requirements/
RUN pip install --no-cache-dir -r requirements/${VARIANT}.txt
COPY pyproject.toml README.md ./
COPY app app
COPY models models
COPY fusion fusion
COPY grouping grouping
# The package itself, without dependencies (they are all in the lock). Its package data carries the
# default encoder checkpoints (models/checkpoints) and property heads (fusion/default_heads).
RUN pip install --no-cache-dir --no-deps . \
 && rm -rf build ./*.egg-info
# Fail the build, not the first request, when the default models did not make it into the package.
RUN python -c "import importlib.util as u, pathlib as p, sys; \
m = p.Path(u.find_spec('models').origin).parent / 'checkpoints'; \
h = p.Path(u.find_spec('fusion').origin).parent / 'default_heads'; \
miss = [str(f) for f in (m / 'smiles' / 'molfusion.json', m / 'graph' / 'molfusion.json') if not f.is_file()]; \
miss += [] if h.is_dir() and any(h.iterdir()) else [str(h)]; \
sys.exit('default models missing from the molfusion package: ' + ', '.join(miss) if miss else 0)"
# /srv/molfusion holds the deployment's writable folders (catalog data, heads, the grouping feature
# cache). The heads folder starts as a copy of the default heads: Docker seeds an empty named volume
# mounted at /srv/molfusion/heads from it, and trained heads are added next to them.
RUN mkdir -p /srv/molfusion/catalog /srv/molfusion/heads /srv/molfusion/cache/grouping \
 && cp -a "$(python -c 'import fusion, pathlib; print(pathlib.Path(fusion.__file__).parent)')/default_heads/." \
    /srv/molfusion/heads/

# ---- runtime: the final image ----
FROM python AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="molfusion" \
      org.opencontainers.image.description="Molecular property prediction service and recommendation worker" \
      org.opencontainers.image.licenses="MIT" \
      io.molfusion.variant="${VARIANT}"
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=molfusion:molfusion /srv/molfusion /srv/molfusion
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    MPLBACKEND=Agg \
    MOLFUSION_HOST=0.0.0.0 \
    MOLFUSION_PORT=8000 \
    MOLFUSION_DATA_DIR=/srv/molfusion/catalog \
    MOLFUSION_HEADS_DIR=/srv/molfusion/heads \
    MOLFUSION_GROUPING_CACHE_DIR=/srv/molfusion/cache/grouping
WORKDIR /srv/molfusion
USER 10001:10001
EXPOSE 8000
# Liveness of the API on its own port, with the standard library only (no curl in the image); sends
# the API key when one is set. The worker has no HTTP port: docker-compose.yml turns this off for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as r; \
key = os.environ.get('MOLFUSION_API_KEY'); \
url = 'http://127.0.0.1:%s/v1/health/live' % os.environ.get('MOLFUSION_PORT', '8000'); \
r.urlopen(r.Request(url, headers={'X-API-Key': key} if key else {}), timeout=4)"]
CMD ["molfusion", "serve"]
