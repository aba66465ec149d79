# Two images from one file:
#   docker build --target operator   -t torchrollout/operator:0.1.0 .
#   docker build --target torchserve -t torchrollout/torchserve:0.1.0 .
# The operator image runs `torchrollout operator` (no torch). The torchserve image is what
# each revision's pods run: its init container builds the archive with
# `torchrollout archive build`, its main container serves it with TorchServe.

FROM python:3.11-slim-bookworm AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/torchrollout
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install --no-cache-dir . && rm -rf /opt/torchrollout/operator
USER 65532:65532
ENTRYPOINT ["torchrollout"]
CMD ["operator", "--all-namespaces"]

FROM python:3.11-slim-bookworm AS torchserve
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TORCHROLLOUT_HANDLERS_DIR=/opt/torchrollout/model-handlers \
    HOME=/tmp TMPDIR=/tmp
# TorchServe's front end is Java.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless=17.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/torchrollout
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The CPU build of torch; every version is pinned in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu ".[serve]" \
    && rm -rf /opt/torchrollout/operator
COPY model-handlers/ /opt/torchrollout/model-handlers/
RUN groupadd --gid 1000 model && useradd --uid 1000 --gid 1000 --no-create-home model
USER 1000:1000
EXPOSE 8080 8082
ENTRYPOINT ["torchserve"]
