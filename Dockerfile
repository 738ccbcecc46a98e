# kgworker container: `docker run --env-file .env kgworker` runs one worker node.
# Build stage: a wheel and its dependencies, so the runtime image carries no build tools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kgworker ./kgworker
RUN pip install --no-cache-dir --upgrade pip \
    && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NODE_ROLE=worker
RUN useradd --create-home --uid 10001 kgworker
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
USER kgworker
WORKDIR /home/kgworker
ENTRYPOINT ["kgworker"]
CMD ["run"]
