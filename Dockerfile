# lstm-serve: FastAPI + Keras 3 (TensorFlow CPU) + ONNX Runtime prediction service, and its job worker.
# Build: docker build -t lstm-serve .
# Run:   docker run -p 8000:8000 -v lstm-models:/data/models lstm-serve          (the API, `python -m service`)
#        docker run ... -e JOB_QUEUE=redis://... lstm-serve lstm-serve worker     (a training worker)
#
# Two stages. `build` installs the pinned dependencies into /opt/venv in a layer that depends only on
# pyproject.toml and constraints.txt, then builds the project's wheel from its code; a code change rebuilds
# only that wheel and the final install (seconds). The final stage copies the virtualenv and installs the
# wheel from a bind mount, so no compiler, pip cache, wheel or source tree is left in the image.

FROM python:3.11-slim AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies only: the runtime list from pyproject.toml, each pinned by constraints.txt (what the tests
# passed with). This layer is rebuilt only when one of these two files changes.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt -r requirements.txt

# The project itself, as a wheel (no dependencies: they are installed above).
COPY README.md ./
COPY service ./service
COPY models ./models
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# An unprivileged user owns the model volume; the code stays root-owned and read-only to it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /data/models \
    && chown -R app:app /data

COPY --from=build /opt/venv /opt/venv
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/lstm_serve-*.whl

# Same names as service.config.Settings fields (read by `python -m service` and `lstm-serve worker`).
ENV MODEL_DIR=/data/models \
    HOST=0.0.0.0 \
    PORT=8000

VOLUME ["/data"]
EXPOSE 8000 8001

USER 10001:10001
WORKDIR /home/app

# Ready only once the model store is loaded (and, without JOB_QUEUE, the demo model trained at first start).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/ready\", timeout=4).status == 200 else 1)"]

CMD ["python", "-m", "service"]
