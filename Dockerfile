# membot's image: `membot serve` by default; deploy/compose.yaml runs it beside PostgreSQL and Milvus.
# 3.12+: aiohttp sends each request to the model at once there (a turn of the event loop later on 3.11).
FROM python:3.12-slim

# Logs reach `docker logs` as they are written; the non-root user could not write .pyc files anyway.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY membot ./membot
RUN pip install .

# A user of its own, so the bot (and the tools its agents run) cannot change the image or anything root owns.
# /data is created and owned here before VOLUME, so a new named volume starts with that owner.
RUN groupadd --system --gid 10001 membot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home membot \
    && mkdir /data \
    && chown 10001:10001 /data

# Memory (SQLite, Milvus Lite, sandboxes) lives in a volume so it outlives the container.
ENV MEMBOT_HOME=/data
VOLUME ["/data"]

# Slack's HTTP mode (events at /slack/events on MEMBOT_SLACK_PORT, 3000 by default).
ENV MEMBOT_SLACK_PORT=3000
EXPOSE 3000

# Numeric, so the runtime can tell it is not root without reading the image's /etc/passwd.
USER 10001:10001
CMD ["membot", "serve"]
