#!/bin/sh
# The official redis image's entrypoint, as it reads (docker-library/redis, debian): a first
# argument that is an option or a .conf file runs redis-server with it; as root, steps down to
# the redis user; an untouched umask becomes 0077 (the data files are the user's only).
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec gosu redis "$0" "$@"
fi

if [ "$(umask)" = '0022' ]; then
	umask 0077
fi

exec "$@"
