# nginx from Debian's package as the example's load balancer (docker-compose.scale.yml); `image: nginx:stable`
# with deploy/nginx.conf mounted at /etc/nginx/nginx.conf does the same.
FROM python:3.11-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
    && rm -rf /var/lib/apt/lists/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
COPY nginx.conf /etc/nginx/nginx.conf
EXPOSE 8080
CMD ["nginx", "-g", "daemon off;"]
