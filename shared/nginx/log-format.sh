#!/bin/sh
# LOG_FORMAT switch for nginx's access log: text (the default, log_format main) or json (one
# JSON object per line, log_format json), both in nginx.conf; written to
# /etc/nginx/generated/access-log.conf, which nginx.conf includes. ACCESS_LOG is where the
# lines go (single-container: its PID 1's stdout, as uWSGI may own this process's).
# Run by the nginx image's entrypoint from /docker-entrypoint.d/ (POSIX sh: any nginx image).
set -eu

out="${ACCESS_LOG_CONF:-/etc/nginx/generated/access-log.conf}"
case "${LOG_FORMAT:-text}" in
    text | '') format=main ;;
    json) format=json ;;
    *)
        echo "log-format: ERROR: LOG_FORMAT='${LOG_FORMAT}' must be text or json; the container will not start." >&2
        exit 1
        ;;
esac
# $loggable: not the container's own healthcheck (nginx.conf)
echo "access_log ${ACCESS_LOG:-/dev/stdout} $format buffer=64k flush=1s if=\$loggable;" >"$out"
