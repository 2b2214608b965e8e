# syntax=docker/dockerfile:1
# One image for every taskhub process: web (gunicorn), writer (manage.py run_writer), the one-shot migrate,
# the scheduler (manage.py run_scheduler) and the node workers (python -m workers). docker-compose.yml picks
# the process with `command`.
FROM python:3.11-slim

# STATIC_ROOT: static files are collected into the image below and whitenoise serves them from there,
# so it needs no finders (WHITENOISE_USE_FINDERS=false: no scanning of app directories).
# TASKHUB_VAR_DIR: local state settings.py creates at import. Nothing durable lives there in production:
# the data is in PostgreSQL and Redis.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATIC_ROOT=/app/staticfiles \
    WHITENOISE_USE_FINDERS=false \
    TASKHUB_VAR_DIR=/app/var

WORKDIR /app

# Every wheel in requirements.txt is prebuilt for linux (psycopg[binary] brings its own libpq), so the slim
# image needs no compiler. Installed before the source is copied, so code edits reuse this layer.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# collectstatic only reads settings; the defaults (a throwaway SQLite path, the dev SECRET_KEY) are never
# used to serve anything. The collected files stay root-owned: the app only reads them.
# /data: a node worker's data directory (python -m workers <name> --data-dir /data). Docker fills a new, empty
# named volume mounted there with this directory's owner, so it must exist here, owned by the app user, or
# the node could not write to its own volume.
RUN python manage.py collectstatic --noinput -v0 \
    && groupadd --system --gid 10001 taskhub \
    && useradd --system --uid 10001 --gid taskhub --home-dir /app --no-create-home --shell /usr/sbin/nologin taskhub \
    && mkdir -p /app/var /data \
    && chown taskhub:taskhub /app/var /data

# Numeric, so orchestrators that insist on runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

EXPOSE 8000

# Bind address, workers, logs: gunicorn.conf.py (read from /app), overridable through the environment.
CMD ["gunicorn", "taskhub.wsgi:application"]
