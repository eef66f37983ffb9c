#!/bin/sh
# Runs the command with your app's own settings (APP_ENV: KEY=VALUE lines, mounted read-only at
# /opt/flask-stacks/app.env; an empty file when there are none). Each line is exported as
# written: no quotes removed, no $ expanded, nothing evaluated (the values are data; docker run
# --env-file's rule); blank lines and # comments are skipped. Read here rather than through
# Compose's env_file, which made `docker compose up` recreate the app's containers each time
# (its config hash differs from what `config --hash` reports), and which shows every value in
# `docker inspect`. stackctl/apps.py checks the file before anything starts; a line that still
# cannot work, or a key the container already has (the stack's own settings), stops the start
# here, naming the line.
set -eu

file="${APP_ENV_FILE:-/opt/flask-stacks/app.env}"
[ -r "$file" ] || exec "$@"  # not mounted (an image run by hand): nothing to add

number=0
while IFS= read -r line || [ -n "$line" ]; do
    number=$((number + 1))
    case $line in '' | '#'*) continue ;; esac
    key=${line%%=*}
    case $key in
        "$line" | '' | [0-9]* | *[!A-Za-z0-9_]*)
            echo "app-env: line $number of APP_ENV is not KEY=VALUE; fix the file." >&2
            exit 78  # EX_CONFIG
            ;;
    esac
    if printenv "$key" >/dev/null; then
        echo "app-env: APP_ENV sets $key (line $number), which is set already (by the stack," \
             "or an earlier line); use the stack's make variable, or rename your setting." >&2
        exit 78
    fi
    export "$key=${line#*=}"
done <"$file"

exec "$@"
