# stacks/single-container's image: the app image (APP_IMAGE, built from shared/docker/Dockerfile
# by the stack's `release` service first) plus nginx and tini, and the stack's configs baked
# in, so that one `docker run` serves it. Build context: the repository root, or the folder
# `make export` wrote; its ignore file sends only what is copied here.
ARG APP_IMAGE=flask-stacks/app:latest
FROM ${APP_IMAGE} AS single-container

USER 0:0
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
        nginx \
        tini \
    ; \
    rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled /etc/nginx/sites-available; \
    # nginx opens its built-in log paths before reading nginx.conf: point them at the container's
    ln -sf /dev/stdout /var/log/nginx/access.log; \
    ln -sf /dev/stderr /var/log/nginx/error.log; \
    # the one place written at start (the log format's, TLS's, overlays' .conf); a tmpfs when the root is read-only
    install -d -o app -g app -m 0755 /etc/nginx/generated

# the same nginx files as the compose stacks: the socket stack's server block, shared snippets
COPY shared/nginx/nginx.conf /etc/nginx/nginx.conf
COPY shared/nginx/snippets/ /etc/nginx/snippets/
COPY stacks/nginx-uwsgi-socket/default.conf /etc/nginx/conf.d/default.conf
COPY shared/nginx/access-log.conf /etc/nginx/access-log.conf
COPY shared/uwsgi/base.ini /etc/uwsgi/base.ini
COPY stacks/single-container/uwsgi.ini /etc/uwsgi/uwsgi.ini
COPY stacks/single-container/entrypoint.sh /usr/local/bin/entrypoint
# the tools the compose stacks mount (shared/compose/services.yaml), at the same paths
COPY shared/docker/healthcheck.py /opt/flask-stacks/bin/healthcheck
COPY shared/docker/app-env.sh /opt/flask-stacks/bin/app-env
COPY shared/docker/secrets-env.sh /opt/flask-stacks/bin/secrets-env

# nginx serves the app's static folder as /static/: APP_STATIC, a folder of the project or of
# an installed package (shared/nginx/static-folder.py; empty: the app serves them itself)
COPY shared/nginx/static-folder.py /opt/flask-stacks/static-folder.py
ARG APP_STATIC=flask_stacks/static
RUN python /opt/flask-stacks/static-folder.py "${APP_STATIC}" /srv/www/static \
        /etc/nginx/static-files.conf

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=3 --start-period=30s \
    CMD ["healthcheck", "http://127.0.0.1:8080"]
# tini as PID 1: forwards docker stop's SIGTERM to uWSGI and reaps orphans
ENTRYPOINT ["tini", "--", "app-env", "secrets-env", "entrypoint"]
CMD ["uwsgi", "--ini", "/etc/uwsgi/uwsgi.ini"]
