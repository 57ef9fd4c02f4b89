# One image for web, worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md manage.py ./
COPY worker ./worker
COPY chronicles ./chronicles
COPY maintenance ./maintenance
RUN pip install . \
    && DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 app

USER app
EXPOSE 8000
CMD ["gunicorn", "worker.wsgi:application", "--preload", "--bind", "0.0.0.0:8000"]
