#!/bin/sh
# Runs under tini (PID 1, which forwards signals and reaps zombies). Runs what the overlays
# mount before anything listens, then the uWSGI master (the command), which runs the workers and
# nginx (uwsgi.ini), and stays its parent only to order the stop (below).
set -eu

# An allow-list this image cannot apply is refused rather than ignored: ignored, it would leave
# the container open to everyone. ALLOWED is an older name of the list; ALLOWED_IPS needs the
# allow-list overlay's script (compose.allow-list.yaml mounts it, as `docker run -v` can).
if [ -n "${ALLOWED:-}" ]; then
    echo "entrypoint: ERROR: ALLOWED is not read; name the allow-list ALLOWED_IPS (same format);" \
        "the container will not start." >&2
    exit 1
fi
if [ -n "${ALLOWED_IPS:-}" ] && [ ! -e /docker-entrypoint.d/40-allowed-ips.sh ]; then
    echo "entrypoint: ERROR: ALLOWED_IPS is set but /docker-entrypoint.d/40-allowed-ips.sh is not" \
        "mounted (compose.allow-list.yaml); the container will not start." >&2
    exit 1
fi
# the overlays' start scripts, as the nginx image runs them (an invalid entry stops the start)
for script in /docker-entrypoint.d/*.sh; do
    if [ -e "$script" ]; then sh "$script"; fi   # no match: the pattern itself, skipped
done

# docker stop's SIGTERM goes to nginx first: its graceful quit (SIGQUIT) closes the listener
# and finishes the requests it holds while every uWSGI worker still serves; once nginx has
# exited, the master (control=1) stops the workers gracefully and exits 0. uWSGI's own TERM
# (base.ini's gracefully_kill_them_all) retires the workers first and stops nginx last, so a
# request nginx took meanwhile found no worker: a 502 (test_your_app's graceful stop).
# Before nginx has written its pid file, TERM goes to the master. Other signals pass through.
# (sh starts a background job with SIGINT and SIGQUIT ignored, which uWSGI's workers would keep)
env --default-signal=INT,QUIT "$@" &
master=$!
trap 'kill -QUIT "$(cat /tmp/nginx.pid 2>/dev/null)" 2>/dev/null || kill -TERM "$master"' TERM
for signal in HUP INT QUIT USR1 USR2; do
    # shellcheck disable=SC2064 # expanded now on purpose: one trap per signal, to the master
    trap "kill -$signal $master" "$signal"
done
# wait returns early when a trapped signal arrives: wait again until the master has exited
while :; do
    status=0
    wait "$master" || status=$?
    kill -0 "$master" 2>/dev/null || exit "$status"
done
