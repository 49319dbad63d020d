# mockglot as a container: the Kallglot API emulator on port 8080.
#   docker build -t mockglot .                                   # with espeak-ng speech (EXTRAS=tts)
#   docker build --build-arg EXTRAS=vosk,tts -t mockglot:vosk .  # plus Vosk and its Korean model
#   docker run --rm -p 8080:8080 mockglot
# Every setting is a MOCKGLOT_* environment variable (-e MOCKGLOT_PORT=9000 ...); the CMD passes no flags, so
# nothing overrides them. Vosk models mounted at /models are found.
FROM python:3.11-slim

ARG EXTRAS=tts
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MOCKGLOT_HOST=0.0.0.0 \
    MOCKGLOT_PORT=8080

RUN useradd --create-home --uid 10001 mockglot && mkdir -p /models

# 1. The dependencies, read from pyproject.toml alone: a code change does not reinstall them (with EXTRAS=vosk
#    that is a 250 MB model).
RUN --mount=type=bind,source=pyproject.toml,target=/tmp/pyproject.toml \
    python -c "import sys, tomllib; project = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
extras = [e for e in sys.argv[1].split(',') if e]; \
print('\n'.join(project['dependencies'] + [d for e in extras for d in project['optional-dependencies'][e]]))" \
    "$EXTRAS" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2. The package itself, from the build context mounted for this step only (no copy of the source stays behind).
RUN --mount=type=bind,source=.,target=/src,rw pip install --no-deps /src

USER mockglot
WORKDIR /home/mockglot

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['MOCKGLOT_PORT']}/_mockglot/health\", timeout=2)"]
CMD ["mockglot", "serve"]
