# lstm-serve: FastAPI + Keras 3 (TensorFlow CPU) + ONNX Runtime prediction service.
# Build: docker build -t lstm-serve .    Run: docker run -p 8000:8000 -v lstm-models:/data/models lstm-serve
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user owns the model volume; the code stays root-owned and read-only to it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /data/models \
    && chown -R app:app /data

WORKDIR /app

# Dependencies are pinned in pyproject.toml and, transitively, in constraints.txt (what the tests passed with);
# install the project (not editable) from its sources.
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
COPY models ./models
RUN pip install --no-cache-dir -c constraints.txt .

# Same names as service.config.Settings fields (read by `python -m service`).
ENV MODEL_DIR=/data/models \
    HOST=0.0.0.0 \
    PORT=8000

VOLUME ["/data"]
EXPOSE 8000

USER 10001:10001
WORKDIR /home/app

# Ready only once the model store is loaded (and the demo model trained at first start).
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/ready\", timeout=4).status == 200 else 1)"]

CMD ["python", "-m", "service"]
