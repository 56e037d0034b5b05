#!/bin/bash
# First start: initdb with the password from POSTGRES_PASSWORD_FILE, run the init scripts against a
# server listening on the Unix socket only, then start the real server (see Dockerfile).
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  install -d -m 0700 -o postgres -g postgres "$PGDATA"
  chown postgres:postgres "$PGDATA"; chmod 0700 "$PGDATA"
  install -d -m 3777 -o postgres -g postgres /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password=$(cat "${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE is not set}")
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
  initdb --username=postgres --pwfile=<(printf '%s\n' "$password") ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
  export PGPASSWORD=$password
  for f in /docker-entrypoint-initdb.d/*.sh; do
    [ -e "$f" ] || continue
    echo "running $f"
    if [ -x "$f" ]; then "$f"; else . "$f"; fi
  done
  unset PGPASSWORD
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "PostgreSQL init process complete; ready for start up."
fi
exec "$@" -c listen_addresses='*'
