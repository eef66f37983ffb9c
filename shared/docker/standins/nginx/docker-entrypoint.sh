#!/bin/sh
# Like the official image: when the command is nginx, run the set-up scripts in
# /docker-entrypoint.d/ in order (*.envsh sourced, *.sh executed; a failing one stops the
# start), then exec the command.
set -e

if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
    for f in $(find /docker-entrypoint.d/ -follow -type f \( -name '*.sh' -o -name '*.envsh' \) | sort -V); do
        if [ -x "$f" ]; then
            [ -n "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ] || echo "$0: running $f"
            # shellcheck disable=SC1090  # the scripts are whatever the image or user put there
            case "$f" in
                *.envsh) . "$f" ;;
                *) "$f" ;;
            esac
        fi
    done
fi

exec "$@"
