# The example's image: the library, the example app (examples/, celeryconfig.py) and Flower.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1
COPY pyproject.toml ./
COPY interactive_celery ./interactive_celery
RUN pip install --no-cache-dir . "flower>=2.0"
COPY celeryconfig.py ./
COPY examples ./examples
