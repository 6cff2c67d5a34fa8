# icee: one image for the api (default entrypoint) and the operator
# (`icee-operator`). Users build it from the public slim bases; our offline
# machines pass locally made bases (cluster/images/base-*.recipe) instead:
#   --build-arg BASE=localhost/icee/base-python:3.11 --build-arg NODE_BASE=localhost/icee/base-node:20
ARG BASE=python:3.11-slim-bookworm
ARG NODE_BASE=node:20-bookworm-slim

# The browser UI, bundled by esbuild.
FROM ${NODE_BASE} AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY ui/ ./
RUN npm run build && rm -rf node_modules

# The Python packages, installed into a venv that the final stage copies whole.
FROM ${BASE} AS python
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/icee
WORKDIR /src
COPY pyproject.toml ./
COPY core/ core/
COPY api/ api/
COPY operator/ operator/
RUN /opt/icee/bin/pip install . \
 && find /opt/icee -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/icee/lib/python3*/site-packages/pip /opt/icee/bin/pip*

FROM ${BASE}
LABEL org.opencontainers.image.title="icee" \
      org.opencontainers.image.description="Kubernetes-native interactive code execution engine" \
      org.opencontainers.image.licenses="Apache-2.0"
# A named user: kopf and getpass look the uid up.
RUN groupadd --system --gid 10001 icee \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin icee
COPY --from=python /opt/icee /opt/icee
COPY --from=ui /src/ui/dist /opt/icee/ui
ENV PATH=/opt/icee/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    ICEE_UI_DIR=/opt/icee/ui
# Non-root, numeric so runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["icee-api"]
