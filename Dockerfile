# syntax=docker/dockerfile:1
#
# The MagTape image: one image for `magtape serve` (the webhook), `magtape init`
# (the certificate init container) and `magtape check` (CI).
#
# - Build stage: builds the wheel with the locked build backend
#   (hack/lock/build.txt; the built-in policies are inside it as
#   magtape/builtin_policies), installs exactly the runtime set pinned with
#   hashes in hack/lock/runtime.txt (`make lock` writes both, from the same
#   resolution the development virtualenv is installed from) and then the wheel
#   into a virtualenv at /opt/magtape, and removes pip from it.
# - Final stage: the same Python base (which has every native library the
#   wheels need; the smoke test checks), that virtualenv and the smoke test;
#   no compiler, no pip, no sources. The venv is copied to the same path over the
#   same interpreter, so it works as is.
# - The last build step runs hack/image_smoke.py as the image's user: every
#   native library resolves, `magtape check` denies a sample, `magtape serve`
#   answers /readyz and a review. `make image-test` runs it again.
# - Runs as the fixed non-root UID/GID 10001 (the Deployment's runAsUser) and
#   writes nothing outside /tmp: no bytecode (PYTHONDONTWRITEBYTECODE), HOME
#   is /tmp. So `readOnlyRootFilesystem: true` works with an emptyDir on /tmp.
#
# Base: a Debian bookworm image with python3 and python3-venv (glibc 2.36;
# the native wheels need manylinux_2_34, so no Alpine/musl). PYTHON_IMAGE is
# python:3.12-slim-bookworm where a registry is reachable; hack/image.sh
# otherwise makes one from Debian packages with mmdebstrap (python3 3.11).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Optional: a CA bundle for pip behind a TLS-inspecting proxy (hack/image.sh
# mounts the host's during the build only; nothing of it reaches the image).
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (see .dockerignore).
COPY hack/lock/runtime.txt hack/lock/build.txt ./hack/lock/
COPY pyproject.toml README.md ./
COPY app ./app
COPY policies ./policies
# The wheel is built in a throw-away venv (Debian's python3 has no pip of its
# own); only the runtime venv /opt/magtape goes to the final stage.
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: \
      -r hack/lock/build.txt \
 && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && python3 -m venv /opt/magtape \
 && /opt/magtape/bin/pip install --require-hashes --no-deps --only-binary=:all: \
      -r hack/lock/runtime.txt \
 && /opt/magtape/bin/pip install --no-deps /wheels/magtape-*.whl \
 && /opt/magtape/bin/pip check \
 && /opt/magtape/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && find /opt/magtape -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="magtape" \
      org.opencontainers.image.description="Policy-as-Code admission webhook for Kubernetes" \
      org.opencontainers.image.source="https://github.com/tmobile/magtape" \
      org.opencontainers.image.licenses="Apache-2.0"
# Runtime libraries of the native wheels: today the base has all of them
# (regorus, cryptography, PyYAML need only glibc and libgcc_s). When the smoke
# test's library check names a missing one, install its Debian package here:
#   RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libfoo1 \
#    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY --from=build /opt/magtape /opt/magtape
COPY hack/image_smoke.py /usr/local/lib/magtape/smoke.py
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
RUN ["/opt/magtape/bin/python", "/usr/local/lib/magtape/smoke.py"]
ENTRYPOINT ["magtape"]
CMD ["serve"]
