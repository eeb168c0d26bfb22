# One chat hub worker. docker-compose.yml runs three of them behind nginx with Redis.
#   docker build -t chat-hub .
#   docker run --rm -p 8080:8080 -e HUB_SECRET=... chat-hub     # alone, in-memory broker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 hub \
 && useradd --system --uid 10001 --gid hub --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin hub

WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY frontend ./frontend
# Editable, so the package stays in /app next to frontend/: hub/web/static.py serves the
# web client from ../../frontend relative to the package, which a regular install into
# site-packages would leave behind. The files stay root-owned: the hub only reads them.
RUN pip install -e .

USER hub
ENV HUB_HOST=0.0.0.0 \
    HUB_PORT=8080
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]

# SIGTERM drains: WebSockets are closed with 1012 and clients reconnect to another worker.
STOPSIGNAL SIGTERM
CMD ["hub", "serve"]
