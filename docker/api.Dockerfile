# prunebench API image: the FastAPI service only. No torch, no worker extra: the API never runs a model.
#
#   docker build -f docker/api.Dockerfile -t prunebench-api .                       # the API (last stage)
#   docker build -f docker/api.Dockerfile --target rq-dashboard -t prunebench-rq-dashboard .
#
# Needs BuildKit (the default builder since Docker 23) for RUN --mount.
# Base image pinned by tag; pin it by digest as well (python:3.11.14-slim-bookworm@sha256:...) in
# production if you want byte-for-byte reproducible rebuilds.

FROM python:3.11.14-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# One fixed non-root UID/GID shared by the API and worker images, so both can write the shared store.
RUN groupadd --system --gid 10001 prunebench \
    && useradd --system --no-log-init --uid 10001 --gid prunebench --create-home --home-dir /home/prunebench prunebench \
    && mkdir -p /store \
    && chown prunebench:prunebench /store

# The API's requirements, read from pyproject.toml alone, so source edits do not re-install them.
FROM base AS requirements
WORKDIR /src
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies']))" > requirements.txt

# prunebench itself as a wheel (pure Python, built here so the final image holds no source tree).
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY service ./service
COPY worker ./worker
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# Optional rq-dashboard (compose profile "dashboard"): kept out of the API image so Flask and friends
# do not ship with the API. --json: prunebench enqueues with rq's JSONSerializer.
FROM base AS rq-dashboard
RUN pip install --no-cache-dir rq-dashboard==0.9.0 rq==2.12.0
USER 10001:10001
WORKDIR /home/prunebench
EXPOSE 9181
CMD ["rq-dashboard", "--bind", "0.0.0.0", "--port", "9181", "--json"]

# The API (default target).
FROM base AS api
COPY --from=requirements /src/requirements.txt /src/constraints.txt /tmp/
RUN pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/constraints.txt
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    pip install --no-cache-dir --no-deps /dist/prunebench-*.whl \
    && pip check
ENV PRUNEBENCH_STORE_DIR=/store
USER 10001:10001
WORKDIR /home/prunebench
EXPOSE 8000
# Liveness only (/readyz also needs Redis); python's urllib, so the image needs no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["prunebench", "serve", "--host", "0.0.0.0", "--port", "8000"]
