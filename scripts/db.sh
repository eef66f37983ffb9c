#!/usr/bin/env bash
# `make backup` and `make restore FILE=...` (DB=postgres; docs/services.md): PostgreSQL's own
# tools, pg_dump and pg_restore, run in the stack's postgres container (their version is the
# server's), the dump streamed to and from a file on the host.
#
#   scripts/db.sh backup                [docker compose options: make passes -f and -p]
#   scripts/db.sh restore FILE [force]   [docker compose options]
# In an exported folder (make export DB=postgres) it is postgres/db.sh, run from that folder.
#
# A backup is one consistent snapshot (pg_dump reads the whole database in one transaction)
# in pg_dump's custom format, written to backups/ (git-ignored) under a temporary name, checked
# by pg_restore --list, then renamed: a file in backups/ is a whole dump. A restore loads a dump
# into a new, empty database, replacing the stack's, with the app servers and the worker
# stopped meanwhile; it refuses a database that holds tables unless FORCE=1, and then first
# backs that database up: nothing is lost by a restore.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,9p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
action=$1
shift
file="" force=""
if [ "$action" = restore ]; then
  [ $# -ge 1 ] && [ "${1:0:1}" != - ] && { file=$1; shift; }
  [ $# -ge 1 ] && [ "$1" = force ] && { force=1; shift; }
fi
compose=(docker compose "$@")
backups=backups

fail() { echo "error: $*" >&2; exit 2; }

# the overlay is on (DB=postgres added its service) and the database is running
services=$("${compose[@]}" config --services 2>&1) \
  || fail "docker compose cannot read the stack's files (its options: $*): $services"
project=$("${compose[@]}" config 2>/dev/null | sed -n 's/^name: //p')
if ! grep -qx postgres <<<"$services"; then
  fail "there is no PostgreSQL here: make $action needs DB=postgres, as make up had (e.g. make $action STACK=nginx-uwsgi-socket DB=postgres)"
fi
if ! "${compose[@]}" ps --status running --services 2>/dev/null | grep -qx postgres; then
  fail "${project:-the stack}'s PostgreSQL is not running: start it first (make up ... DB=postgres; in an export, docker compose up --wait); its data volume is kept while it is down"
fi
# the superuser, through the container's own unix socket (trusted there: no password)
psql() { "${compose[@]}" exec -T postgres psql -U postgres -v ON_ERROR_STOP=1 -X -q "$@"; }
# whether the file $1 is a whole dump: pg_restore reads its table of contents
dump_reads() { "${compose[@]}" exec -T postgres pg_restore --list < "$1" > /dev/null; }

backup() {  # $1: what the file name says after the project and the time
  mkdir -p "$backups"
  local stamp name
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  name="$backups/${project:-postgres}-$stamp${1:+-$1}.dump"
  # -Fc: compressed, and pg_restore can load it selectively and in one transaction
  if ! "${compose[@]}" exec -T postgres pg_dump -U postgres -d app -Fc > "$name.partial"; then
    rm -f "$name.partial"
    fail "pg_dump failed (above); no backup was written"
  fi
  if ! dump_reads "$name.partial"; then
    rm -f "$name.partial"
    fail "the dump pg_dump wrote does not read back (pg_restore --list, above); no backup was written"
  fi
  mv "$name.partial" "$name"
  echo "$name"
}

tables() {  # the user's tables, views and sequences in the app's database
  psql -d app -tA -c "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
}

case "$action" in
  backup)
    name=$(backup "")
    echo "backup: $name ($(du -h "$name" | cut -f1); make restore ... FILE=$name loads it, or in an export postgres/db.sh restore $name)"
    ;;
  restore)
    [ -n "$file" ] || fail "FILE is empty: make restore STACK=... DB=postgres FILE=backups/<name>.dump"
    [ -f "$file" ] || fail "FILE=$file: no such file"
    dump_reads "$file" 2>/dev/null \
      || fail "FILE=$file is not a dump pg_restore reads (make backup writes them: pg_dump -Fc)"
    count=$(tables)
    if [ "$count" != 0 ]; then
      [ -n "$force" ] || fail "${project:-the stack}'s database holds $count tables, views or sequences: \
a restore replaces them. FORCE=1 does it, after a backup of what is there now"
      saved=$(backup before-restore)
      echo "backup of the database being replaced: $saved"
    fi
    # nothing writes meanwhile: every service but the database stops (the app servers, the
    # worker, nginx: a maintenance window), and `up` below brings them back
    mapfile -t running < <("${compose[@]}" ps --status running --services | grep -vx postgres || true)
    [ ${#running[@]} = 0 ] || "${compose[@]}" stop "${running[@]}"
    # a new database, owned by the app's role, then the dump in one transaction as that role:
    # an error leaves it empty (and the one replaced is in the backup above), never half-loaded
    psql -d postgres -c 'DROP DATABASE IF EXISTS app WITH (FORCE)' -c 'CREATE DATABASE app OWNER app'
    if ! "${compose[@]}" exec -T postgres pg_restore -U postgres -d app --role=app --no-owner \
         --single-transaction --exit-on-error < "$file"; then
      echo "error: pg_restore failed (above): the database is empty${saved:+; what it held is in $saved}" >&2
      exit 1
    fi
    "${compose[@]}" up --detach --wait --wait-timeout 180
    echo "restored $file into ${project:-the stack}'s database"
    ;;
  *) usage ;;
esac
