# syntax=docker/dockerfile:1
# Edge clients: camera gateway, reject gate, dataset sink, and the one-shot topic creation. No torch, no Faust:
# a few hundred MB instead of several GB, for the small boxes next to a line. Built from the repository root:
#   docker build -f deploy/docker/edge.Dockerfile -t defectstream/edge:dev .
# Everything is installed and byte-compiled here; the container runs `defectstream <command>` and builds nothing.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/docker/requirements-edge.txt deploy/docker/requirements-edge.txt
RUN pip install --no-cache-dir -r deploy/docker/requirements-edge.txt
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY models/ models/
COPY streams/ streams/
# --no-deps: the package's own dependency list includes torch and Faust, which the edge clients never import.
RUN pip install --no-cache-dir --no-deps . && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS edge
RUN groupadd --system --gid 10001 defectstream \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/cache/defectstream \
        --shell /usr/sbin/nologin defectstream \
    && mkdir -p /var/cache/defectstream /data \
    && chown 10001:10001 /var/cache/defectstream /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/cache/defectstream \
    DEFECTSTREAM_CACHE_DIR=/var/cache/defectstream
USER 10001:10001
# The camera and the dataset sink serve no HTTP; the gate's /metrics is probed by compose and Kubernetes instead.
HEALTHCHECK NONE
ENTRYPOINT ["defectstream"]
CMD ["--help"]
