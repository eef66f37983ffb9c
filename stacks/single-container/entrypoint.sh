#!/bin/sh
# Runs under tini (PID 1, which forwards signals and reaps zombies). Validates the allow-list
# before anything listens, then becomes the uWSGI master (the command), which runs the
# workers and nginx (uwsgi.ini).
set -eu

# ALLOWED is seed 001's name for the list; ALLOWED_IPS (the compose stacks' name) works too.
# An invalid entry stops the container here, with a message naming it.
ALLOWED_IPS="${ALLOWED_IPS:-${ALLOWED:-}}" ALLOWED_IPS_CONF=/etc/nginx/generated/allowed-ips.conf \
    allowed-ips

# HTTPS when TLS=on (a certificate in /etc/nginx/certs; the overlay compose.tls.yaml), else off
TLS_CONF=/etc/nginx/generated/tls.conf tls

exec "$@"
