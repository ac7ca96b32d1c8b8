# The kfbatch image: every task of a compiled Kubeflow pipeline runs in it.
#   docker build -t ghcr.io/kfbatch/kfbatch:0.1.0 .                          # CPU torch (default)
#   docker build --build-arg TORCH=cuda -t ghcr.io/kfbatch/kfbatch:0.1.0-cuda .
#   make image [IMAGE=...] [TORCH=cuda]
# Point kubeflow.image at the tag you push. Pods run the compiled task commands
# (`sh -ec ... python3 -m kfp.dsl.executor_main ...`), so the image needs only sh, python3
# and the kfbatch wheel with its dependencies (kfp included): no pip step at run time.
ARG PYTHON_VERSION=3.11

# ---- build the wheel (the same wheel tests/pipelines/kubeflow/test_image.py installs and runs)
FROM python:${PYTHON_VERSION}-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY components ./components
COPY pipelines ./pipelines
COPY configs ./configs
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime
FROM python:${PYTHON_VERSION}-slim
# cpu: torch from the PyTorch CPU index (no CUDA libraries: a far smaller image);
# cuda: the normal PyPI build, which brings its CUDA runtime as nvidia-* wheels (the GPU
# driver comes from the node through the NVIDIA container toolkit).
ARG TORCH=cpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /tmp/wheels
# Every version from constraints.txt, the lock make and CI install; torch==X there accepts
# the X+cpu build taken from the PyTorch CPU index first.
COPY constraints.txt /tmp/constraints.txt
RUN set -eu; \
    torch=$(grep '^torch==' /tmp/constraints.txt); \
    case "$TORCH" in \
      cpu) pip install --index-url https://download.pytorch.org/whl/cpu "$torch" ;; \
      cuda) ;; \
      *) echo "TORCH must be cpu or cuda, got '$TORCH'" >&2; exit 2 ;; \
    esac; \
    wheel=$(ls /tmp/wheels/kfbatch-*.whl); \
    pip install -c /tmp/constraints.txt "${wheel}[postgres]"; \
    rm -rf /tmp/wheels /tmp/constraints.txt; \
    kfbatch --version
# Non-root. KFP's launcher stages artifacts under /gcs, /minio, /s3 and /oci, which a
# non-root user cannot create (kubeflow/pipelines#10397): create them, owned by the user and
# writable by group 0 for clusters that run pods under an arbitrary UID (OpenShift).
RUN set -eu; \
    useradd --create-home --uid 1000 --gid 0 kfbatch; \
    for d in /gcs /minio /s3 /oci; do mkdir -p "$d"; chown kfbatch:0 "$d"; chmod 0775 "$d"; done
USER 1000
WORKDIR /home/kfbatch
CMD ["kfbatch", "--help"]
