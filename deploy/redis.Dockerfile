# Redis from Debian's package, on the same base as mockglot's image (docker-compose.scale.yml builds it, so the
# example needs no image but python:3.11-slim). With a registry at hand, `image: redis:7` or `valkey/valkey:8` in
# the compose file does the same.
FROM python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null \
    && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
# No persistence: the example's state lives as long as this container (add --appendonly yes and a volume to keep it).
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
