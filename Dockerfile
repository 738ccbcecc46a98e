# kgworker container: `docker run --env-file .env kgworker` runs one worker node.
#
# Build stage: a virtualenv in /opt/kgworker. Its dependency layer is built from
# pyproject.toml and the pinned constraints.txt alone, before any code is copied, so a code
# change rebuilds only the small kgworker wheel; jieba's source build happens once per
# constraints change. The runtime stage copies the finished virtualenv and nothing else.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/kgworker/bin:$PATH
RUN python -m venv /opt/kgworker
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY scripts/constraints.py ./scripts/
RUN python scripts/constraints.py runtime > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt -c constraints.txt
COPY README.md ./
COPY kgworker ./kgworker
COPY examples/novel ./examples/novel
# --no-deps: every dependency is in the layer above; pip check proves it.
RUN pip install --no-cache-dir --no-deps . && pip check

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/kgworker/bin:$PATH \
    NODE_ROLE=worker
RUN useradd --create-home --uid 10001 kgworker
COPY --from=build /opt/kgworker /opt/kgworker
USER 10001
WORKDIR /home/kgworker
EXPOSE 9108
# Liveness of the event loop through /healthz, asked where the node really listens: the
# node records its bound host:port in a file (KG_API_STATE_FILE; default
# /tmp/kgworker-10001/endpoint here), so --api-port, --config FILE or KG_API_PORT all work.
# Exit 0 when KG_API_ENABLED=false is set in the environment; with `run --no-api`, set
# that too (or run with --no-healthcheck).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["kgworker", "healthcheck", "--timeout", "4"]
ENTRYPOINT ["kgworker"]
CMD ["run"]
