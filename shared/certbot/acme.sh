#!/bin/sh
# The certbot service of the ACME overlay (shared/compose/acme.yaml): gets a certificate for
# ACME_DOMAINS with the http-01 challenge, answered by nginx from the shared webroot, then
# renews it. nginx reads the pair from /certs (its /etc/nginx/certs) and reloads by itself when
# it changes (tls.sh), so nothing here needs the Docker socket or nginx's process.
#   ACME_DOMAINS="example.com www.example.com"   the names, each resolving to this host's :80
#   ACME_EMAIL=ops@example.com                   expiry and account notices (recommended)
#   ACME_SERVER=<directory URL>                  default Let's Encrypt; its staging for trials
#   ACME_RENEW_CHECK_SECONDS=43200               `certbot renew` every 12 h, as certbot advises
set -eu

certs=/certs
lineage=/etc/letsencrypt/live/flask-stacks
nginx_gid=101   # the nginx user's group in the nginx image: it reads the key, nobody else

log() { echo "acme: $*"; }
fail() {
    echo "acme: ERROR: $*" >&2
    exit 1
}

# Copies a lineage's pair into /certs, each file replaced by a rename (never half-written).
install_pair() {
    cp "$1/privkey.pem" "$certs/.privkey.pem.new"
    chgrp "$nginx_gid" "$certs/.privkey.pem.new"
    chmod 0640 "$certs/.privkey.pem.new"
    cp "$1/fullchain.pem" "$certs/.fullchain.pem.new"
    chmod 0644 "$certs/.fullchain.pem.new"
    mv "$certs/.privkey.pem.new" "$certs/privkey.pem"
    mv "$certs/.fullchain.pem.new" "$certs/fullchain.pem"
    log "installed $(openssl x509 -in "$certs/fullchain.pem" -noout -serial -enddate | tr '\n' ' ')"
}

if [ "${1:-}" = deploy-hook ]; then   # certbot runs this after each issuance or renewal
    install_pair "$RENEWED_LINEAGE"
    exit 0
fi

domains=$(echo "${ACME_DOMAINS:-}" | tr ',' ' ')
[ -n "$domains" ] || fail "ACME_DOMAINS is empty; set the names to certify, e.g." \
    "ACME_DOMAINS=\"example.com www.example.com\" (each must resolve to this host, port 80 open)"
server="${ACME_SERVER:-https://acme-v02.api.letsencrypt.org/directory}"
interval="${ACME_RENEW_CHECK_SECONDS:-43200}"
case $interval in '' | *[!0-9]* | 0*) fail "ACME_RENEW_CHECK_SECONDS='$interval' is not a whole number above 0" ;; esac

set --
for domain in $domains; do set -- "$@" --domain "$domain"; done
if [ -n "${ACME_EMAIL:-}" ]; then
    set -- "$@" --email "$ACME_EMAIL"
else
    log "ACME_EMAIL is empty: registering without an address (no expiry warnings from the CA)"
    set -- "$@" --register-unsafely-without-email
fi

# nginx needs some pair to start (it serves the challenges we are about to ask for): a
# self-signed one for a day, replaced as soon as the CA answers
if [ ! -s "$certs/fullchain.pem" ]; then
    first=${domains%% *}
    placeholder=$(mktemp -d)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=$first" -addext "subjectAltName=DNS:$first" \
        -keyout "$placeholder/privkey.pem" -out "$placeholder/fullchain.pem" 2>/dev/null
    install_pair "$placeholder"
    rm -rf "$placeholder"
    log "placeholder certificate in place until the CA issues one"
fi

# Until nginx serves the webroot and the CA validates, retry with backoff (10 s doubling to
# 1 h): Let's Encrypt allows 5 failed validations per name per hour.
delay=10
until certbot certonly --webroot --webroot-path /var/www/acme --cert-name flask-stacks \
    --server "$server" --agree-tos --non-interactive --keep-until-expiring \
    --deploy-hook "sh $0 deploy-hook" "$@"; do
    log "no certificate yet; next try in $delay s"
    sleep "$delay"
    delay=$((delay * 2 > 3600 ? 3600 : delay * 2))
done
# a certificate kept from an earlier run ran no deploy hook: install it if /certs differs
cmp -s "$lineage/fullchain.pem" "$certs/fullchain.pem" || install_pair "$lineage"

log "renewal check every $interval s"
while sleep "$interval"; do
    certbot renew --non-interactive || log "renewal failed; next try in $interval s"
done
