# syntax=docker/dockerfile:1
#
# The MagTape image: one image for `magtape serve` (the webhook), `magtape init`
# (the certificate init container) and `magtape check` (CI).
#
# - Build stage: builds the wheel (hatchling; the built-in policies are inside
#   it as magtape/builtin_policies) and installs it with its dependencies into
#   a virtualenv at /opt/magtape.
# - Final stage: the same slim Python base plus that virtualenv only: no
#   compiler, no pip cache, no sources. The venv is copied to the same path,
#   over the same interpreter (/usr/local/bin/python3.12), so it works as is.
# - Runs as the fixed non-root UID/GID 10001 (the Deployment's runAsUser) and
#   writes nothing outside /tmp: no bytecode (PYTHONDONTWRITEBYTECODE), HOME
#   is /tmp. So `readOnlyRootFilesystem: true` works with an emptyDir on /tmp.
#
# Base: Debian bookworm, glibc 2.36; regopy's wheels need manylinux_2_34, so
# an Alpine (musl) base would not do.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore).
COPY pyproject.toml README.md ./
COPY app ./app
COPY policies ./policies
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/magtape \
 && /opt/magtape/bin/pip install /wheels/magtape-*.whl \
 && /opt/magtape/bin/magtape --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="magtape" \
      org.opencontainers.image.description="Policy-as-Code admission webhook for Kubernetes" \
      org.opencontainers.image.source="https://github.com/tmobile/magtape" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/magtape /opt/magtape
ENV PATH=/opt/magtape/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
# The metrics/health listener (the admission listener stays on loopback,
# behind the nginx TLS sidecar).
EXPOSE 9090
USER 10001:10001
ENTRYPOINT ["magtape"]
CMD ["serve"]
