# kgworker container: `docker run --env-file .env kgworker` runs one worker node.
# Build stage: a wheel and its dependencies, so the runtime image carries no build tools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kgworker ./kgworker
COPY examples/novel ./examples/novel
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NODE_ROLE=worker
RUN useradd --create-home --uid 10001 kgworker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
USER 10001
WORKDIR /home/kgworker
EXPOSE 9108
# Liveness of the event loop through /healthz (the one route without a token). The slim
# image has no curl, so Python's urllib does the request. With the endpoint turned off
# (KG_API_ENABLED=false) there is nothing to ask and the check passes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; os.environ.get('KG_API_ENABLED', 'true').lower() in ('0', 'false', 'no', 'off') and sys.exit(0); u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('KG_API_PORT', '9108'), timeout=4)"]
ENTRYPOINT ["kgworker"]
CMD ["run"]
