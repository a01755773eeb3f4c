#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests and CI, on a unix socket in DIR (no TCP port).
#   scripts/pg_local.sh start DIR   -> prints the SQLAlchemy URL on stdout
#   scripts/pg_local.sh stop DIR
#   scripts/pg_local.sh restart DIR  -> starts a stopped cluster again
# Runs the server as a non-root user: as root it uses the `postgres` system user (Debian's
# package creates it), otherwise the current user. Binaries: PG_BIN, else pg_ctl on PATH,
# else the newest /usr/lib/postgresql/*/bin.
set -euo pipefail
cmd="${1:?usage: pg_local.sh start|restart|stop DIR}"
dir="${2:?usage: pg_local.sh start|restart|stop DIR}"
bin="${PG_BIN:-}"
if [ -z "$bin" ]; then
  if command -v pg_ctl >/dev/null 2>&1; then
    bin="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
  else
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  fi
fi
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "pg_local.sh: no PostgreSQL binaries found (apt-get install postgresql)" >&2
  exit 3
fi
as_user=()
if [ "$(id -u)" = 0 ]; then
  as_user=(runuser -u postgres --)
fi
case "$cmd" in
  start)
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    cd /  # the server user may not be allowed into the caller's working directory
    if [ "$(id -u)" = 0 ]; then
      chown postgres "$dir" && chmod 700 "$dir"
      # the server user must be able to traverse to DIR (temp dirs are often 0700)
      up="$(dirname "$dir")"
      while [ "$up" != "/" ] && ! runuser -u postgres -- test -x "$up"; do
        chmod a+x "$up"
        up="$(dirname "$up")"
      done
    fi
    "${as_user[@]}" "$bin/initdb" -D "$dir/data" -A trust -U tailwise --no-sync -E UTF8 >"$dir/initdb.log" 2>&1
    "${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-k $dir -c listen_addresses='' -c fsync=off -c max_connections=200" start >/dev/null
    "${as_user[@]}" "$bin/createdb" -h "$dir" -U tailwise tailwise
    echo "postgresql+psycopg2://tailwise@/tailwise?host=$dir"
    ;;
  restart)  # start an existing cluster again (after stop)
    dir="$(cd "$dir" && pwd)"
    cd /
    "${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-k $dir -c listen_addresses='' -c fsync=off -c max_connections=200" start >/dev/null
    ;;
  stop)
    dir="$(cd "$dir" && pwd)"
    cd /
    # fast shutdown (disconnects clients); immediate if that does not finish in time
    "${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 120 stop >/dev/null \
      || "${as_user[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null
    ;;
  *)
    echo "usage: pg_local.sh start|restart|stop DIR" >&2
    exit 2
    ;;
esac
