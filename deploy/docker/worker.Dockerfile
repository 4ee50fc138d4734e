# syntax=docker/dockerfile:1
# The inspection worker (Faust app + inference engine). Two targets, built from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile --target worker-cpu  -t defectstream/worker:dev-cpu .
#   docker build -f deploy/docker/worker.Dockerfile --target worker-cuda -t defectstream/worker:dev-cuda .
# Bake a model in with --build-arg MODEL_DIR=artifacts/<name> (a directory inside the build context); otherwise
# mount one at /models (see deploy/README.md). Everything is installed and byte-compiled here: the container starts
# `defectstream worker` and builds nothing.

# Pinned base: the same Python minor as the project's venv. Pin by digest too where the registry is reachable.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# The versions the test suite ran with; the two targets take them from different wheel indexes.
ARG TORCH_VERSION=2.15.0
ARG TORCHVISION_VERSION=0.29.2
ARG MODEL_DIR=deploy/docker/no-model

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/docker/requirements-worker.txt deploy/docker/requirements-worker.txt
RUN pip install --no-cache-dir -r deploy/docker/requirements-worker.txt

# torch comes from a different wheel index per target, so it is the only layer the two targets do not share.
FROM deps AS torch-cpu
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
# The CPU wheel index: PyPI's Linux wheel carries ~4 GB of CUDA libraries a CPU node never loads.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

FROM deps AS torch-cuda
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
# PyPI's Linux wheels bundle the CUDA runtime, cuDNN and cuBLAS as nvidia-* packages, so the image needs no CUDA
# base image: only the host's driver, which the NVIDIA container runtime mounts in.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

FROM torch-cpu AS app-cpu
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY models/ models/
COPY streams/ streams/
RUN pip install --no-cache-dir --no-deps . && python -m compileall -q /opt/venv/lib

FROM torch-cuda AS app-cuda
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY models/ models/
COPY streams/ streams/
RUN pip install --no-cache-dir --no-deps . && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can verify a number, not a name.
RUN groupadd --system --gid 10001 defectstream \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/cache/defectstream \
        --shell /usr/sbin/nologin defectstream \
    && mkdir -p /var/cache/defectstream /models \
    && chown 10001:10001 /var/cache/defectstream
COPY deploy/docker/healthcheck.py /opt/defectstream/healthcheck.py
ARG MODEL_DIR
COPY ${MODEL_DIR} /models/current
# The root filesystem can be read-only: bytecode is compiled at build time, and the only writable place the worker
# needs (Faust's data dir under the cache dir) is a volume at /var/cache/defectstream.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/cache/defectstream \
    DEFECTSTREAM_CACHE_DIR=/var/cache/defectstream \
    DEFECTSTREAM_MODEL_PATH=/models/current \
    DEFECTSTREAM_WEB_PORT=6066
VOLUME ["/var/cache/defectstream"]
EXPOSE 6066
USER 10001:10001
# start-period covers the model load and the warm-up forward pass before the web server answers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/defectstream/healthcheck.py"]
ENTRYPOINT ["defectstream"]
CMD ["worker"]

FROM runtime AS worker-cpu
COPY --from=app-cpu /opt/venv /opt/venv

FROM runtime AS worker-cuda
# Read by the NVIDIA container runtime: expose the GPUs the orchestrator assigned, with compute libraries only.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=app-cuda /opt/venv /opt/venv
