FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY membot ./membot
RUN pip install --no-cache-dir .
# Memory (SQLite + Milvus Lite) lives in a volume so it outlives the container.
ENV MEMBOT_HOME=/data
VOLUME ["/data"]
CMD ["membot", "serve"]
