# saga-tracker worker image: slim, non-root, RocksDB state on a volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tracker ./tracker
COPY topics ./topics
COPY tables ./tables
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent tracker \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /install /usr/local
# In a container the API must listen on all interfaces; everywhere else the default is loopback.
ENV SAGA_TRACKER_DATA_DIR=/data \
    SAGA_TRACKER_WEB_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 6066
USER 10001
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=2)"]
ENTRYPOINT ["saga-tracker"]
CMD ["worker"]
