#!/bin/sh
# HTTPS for nginx, mounted by the TLS overlay (shared/compose/tls.yaml) only: adds tls.conf
# (listen 8443 ssl, HTTP -> HTTPS) to the server block, through
# /etc/nginx/generated/server.d/tls.conf (snippets/server-defaults.conf includes it).
#   HTTPS_PORT=8443 (the public port in redirects; 443 drops it from URLs)
#   HSTS_MAX_AGE=<s>|''   CERT_RECHECK_SECONDS=60 (renewed certificates are picked up this fast)
# A watcher reloads nginx (gracefully: open connections finish on the old certificate) when
# /etc/nginx/certs/{fullchain,privkey}.pem change: certbot renewals, or a certificate you
# replace yourself. Bad values stop the start with what to fix.
# Run by the nginx image's entrypoint from /docker-entrypoint.d/ (POSIX sh: any nginx image).
set -eu

out="${TLS_CONF:-/etc/nginx/generated/server.d/tls.conf}"
certs="${TLS_CERTS_DIR:-/etc/nginx/certs}"

fail() {
    echo "tls: ERROR: $*; the container will not start." >&2
    exit 1
}
is_whole() { case $1 in '' | *[!0-9]* | 0?*) return 1 ;; esac; }

port="${HTTPS_PORT:-443}"
if ! is_whole "$port" || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    fail "HTTPS_PORT='$port' is not a port number (1-65535), e.g. HTTPS_PORT=443"
fi
hsts="${HSTS_MAX_AGE:-}"
[ -z "$hsts" ] || is_whole "$hsts" \
    || fail "HSTS_MAX_AGE='$hsts' is not a number of seconds (e.g. 63072000) or empty (no HSTS)"
interval="${CERT_RECHECK_SECONDS:-60}"
if ! is_whole "$interval" || [ "$interval" -lt 1 ]; then
    fail "CERT_RECHECK_SECONDS='$interval' is not a whole number of seconds above 0"
fi
for file in fullchain.pem privkey.pem; do
    [ -r "$certs/$file" ] || fail "TLS is on but $certs/$file is missing or not readable by uid $(id -u):" \
        "run 'make certs' (a local CA), mount your own (docs/https.md), or use the ACME overlay"
done

suffix=":$port"
[ "$port" != 443 ] || suffix=""
mkdir -p "$(dirname "$out")"
{
    echo "# written by tls.sh at start: HTTPS on 8443, HTTP redirected to it"
    echo "set \$https_port \"$suffix\";"
    echo "set \$hsts \"${hsts:+max-age=$hsts}\";"
    echo "include /etc/nginx/tls.conf;"
} >"$out"

fingerprint() { cat "$certs/fullchain.pem" "$certs/privkey.pem" 2>/dev/null | cksum; }

echo "tls: HTTPS on 8443 (public port $port), HSTS ${hsts:-off}; certificate checked every $interval s" >&2
(
    last=$(fingerprint)
    while sleep "$interval"; do
        now=$(fingerprint)
        [ "$now" != "$last" ] || continue
        # a half-written pair (the key replaced, the chain not yet) fails the test: try again later
        if nginx -t -q 2>/dev/null; then
            echo "tls: certificate changed, reloading nginx" >&2
            nginx -s reload && last=$now
        else
            echo "tls: certificate changed but does not load yet (nginx -t); keeping the current one" >&2
        fi
    done
) &
