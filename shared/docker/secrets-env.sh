#!/bin/sh
# Runs the command with the app's secrets. Every secret is a file, /run/secrets/<name> (Compose
# `secrets:`, from the git-ignored secrets/ folder): read it there, or via <NAME>_FILE. For an
# app that reads only its environment, each name in SECRETS_AS_ENV (the stacks set secret_key) is
# also exported as <NAME> (upper case) to this process tree only: it is in no image layer nor in
# `docker inspect`. A listed secret that is missing stops the start, naming the file.
set -eu

for name in ${SECRETS_AS_ENV:-}; do
    file="/run/secrets/$name"
    var=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
    if [ ! -r "$file" ]; then
        echo "secrets-env: secret '$name' is missing: no readable $file. Create secrets/$name" \
             "(make secrets makes secret_key), or take it out of SECRETS_AS_ENV." >&2
        exit 78  # EX_CONFIG
    fi
    value=$(cat "$file")
    export "$var=$value" "${var}_FILE=$file"
done

exec "$@"
