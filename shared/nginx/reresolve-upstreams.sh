#!/bin/sh
# nginx resolves the host names of its upstreams (`server app1:3031`, `uwsgi_pass app:3031`) once,
# when it loads its config; `docker compose up --force-recreate app` brings the app back on a new
# address. This watcher re-resolves those names every UPSTREAM_RECHECK_SECONDS (default 2) and
# reloads nginx when an address changed: a graceful reload, keeping the upstream blocks'
# keepalive pools and failover settings. nginx >= 1.27.3 could re-resolve by itself
# (`server ... resolve`), but the stacks also run on 1.26 (Debian trixie's nginx).
# While a name does not resolve (its container is stopped), nginx keeps the addresses it has.
# Run by the nginx image's entrypoint from /docker-entrypoint.d/ (POSIX sh: any nginx image).
set -eu

interval="${UPSTREAM_RECHECK_SECONDS:-2}"
case $interval in
    '' | *[!0-9]* | 0*)
        echo "reresolve-upstreams: ERROR: UPSTREAM_RECHECK_SECONDS='$interval' is not a whole" \
            "number of seconds above 0; fix it (e.g. UPSTREAM_RECHECK_SECONDS=2)." >&2
        exit 1
        ;;
esac

# host names (not literal addresses, not unix sockets) after server / uwsgi_pass / proxy_pass,
# comments dropped (a commented-out name that never resolves would stop every reload)
hosts=$(nginx -T 2>/dev/null | sed 's/#.*//' \
    | grep -oE '(^|[[:space:]{;])(server|uwsgi_pass|proxy_pass)[[:space:]]+([a-z]+://)?[A-Za-z0-9.-]+:[0-9]+' \
    | sed -E 's/.*[[:space:]]([a-z]+:\/\/)?//; s/:[0-9]+$//' | grep -E '[A-Za-z-]' \
    | sort -u | tr '\n' ' ')
[ -n "$hosts" ] || exit 0

addresses() {  # one "host addr..." line per host; fails while any host does not resolve
    for host in $hosts; do
        found=$(getent ahosts "$host" | awk '{ print $1 }' | sort -u | tr '\n' ' ')
        [ -n "$found" ] || return 1
        echo "$host $found"
    done
}

echo "reresolve-upstreams: watching ${hosts}every ${interval} s" >&2
(
    last=$(addresses) || last=
    while sleep "$interval"; do
        now=$(addresses) || continue
        [ "$now" != "$last" ] || continue
        echo "reresolve-upstreams: addresses changed, reloading nginx: $(echo "$now" | tr '\n' ';')" >&2
        # a reload whose config fails to load (a name nginx cannot resolve at that moment) keeps
        # the old addresses without a word to us: reload once `nginx -t` passes, else next round
        nginx -t -q && nginx -s reload && last=$now
    done
) &
