# The relman worker (and CLI). Build: docker build -t relman .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RELMAN_DATA_DIR=/data \
    RELMAN_CATALOG=/app/examples/catalog.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY relman ./relman
COPY examples ./examples
COPY worker.py starter.py ./
# pytest runs the example service's test suites inside the worker.
RUN pip install . pytest \
    && useradd --create-home --uid 10001 relman \
    && mkdir -p /data \
    && chown relman /data

USER relman
VOLUME ["/data"]
EXPOSE 9464
CMD ["relman", "worker"]
