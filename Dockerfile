# mockglot as a container: the Kallglot API emulator on port 8080.
#   docker build -t mockglot .                                   # with espeak-ng speech (EXTRAS=tts)
#   docker build --build-arg EXTRAS=vosk,tts -t mockglot:vosk .  # plus Vosk and its Korean model
#   docker run --rm -p 8080:8080 mockglot
# Every setting is a MOCKGLOT_* environment variable (-e MOCKGLOT_PORT=9000 ...); the CMD passes no flags, so
# nothing overrides them. Vosk models mounted at /models are found.

# The package alone (no dependencies), installed into /package; only what it installs reaches the image.
FROM python:3.11-slim AS package
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mockglot ./mockglot
RUN pip install --no-deps --target /package . && mv /package/bin /scripts

FROM python:3.11-slim
ARG EXTRAS=tts
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MOCKGLOT_HOST=0.0.0.0 \
    MOCKGLOT_PORT=8080

RUN useradd --create-home --uid 10001 mockglot && mkdir -p /models

# The dependencies, from pyproject.toml alone: a code change does not reinstall them (with EXTRAS=vosk that is
# a 250 MB model).
COPY pyproject.toml /tmp/build/pyproject.toml
RUN python -c "import sys, tomllib; project = tomllib.load(open(sys.argv[1], 'rb'))['project']; \
extras = [e for e in sys.argv[2].split(',') if e]; \
print('\n'.join(project['dependencies'] + [d for e in extras for d in project['optional-dependencies'][e]]))" \
    /tmp/build/pyproject.toml "$EXTRAS" > /tmp/build/requirements.txt \
    && pip install -r /tmp/build/requirements.txt

# The code: a change rebuilds only these two small layers.
COPY --from=package /package/ /usr/local/lib/python3.11/site-packages/
COPY --from=package /scripts/ /usr/local/bin/

USER mockglot
WORKDIR /home/mockglot

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['MOCKGLOT_PORT']}/_mockglot/health\", timeout=2)"]
CMD ["mockglot", "serve"]
