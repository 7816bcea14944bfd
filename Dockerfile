# Production image of aicache-healing: one image, three roles (web, worker, beat), chosen by the command.
# compose.yaml runs it with PostgreSQL and Redis; any number of workers may run on any number of machines
# as long as they share the database, the broker and HEALING_VAR_DIR (quarantine, artifacts, keys).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALING_VAR_DIR=/var/lib/aicache-healing \
    HEALING_STATIC_ROOT=/app/staticfiles \
    HEALING_BIND=0.0.0.0:8000 \
    HEALING_DEMO=0 \
    HEALING_REGISTER_HOME_CACHE=0

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin healing \
 && mkdir -p /var/lib/aicache-healing && chown healing /var/lib/aicache-healing
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY --chown=healing . .
# static files go into the image, not the var volume; the key only exists for this one command
RUN HEALING_SECRET_KEY=collectstatic-only HEALING_VAR_DIR=/tmp/build-var python manage.py collectstatic --noinput -v0 && rm -rf /tmp/build-var

USER healing
VOLUME ["/var/lib/aicache-healing"]
EXPOSE 8000
ENTRYPOINT ["scripts/container-entrypoint"]
CMD ["web"]
