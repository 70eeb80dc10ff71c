#!/usr/bin/env bash
# pg.sh: a private PostgreSQL on 127.0.0.1 for Spillway's tests.
#
#   pg.sh start          install Debian's postgresql when it is missing (as
#                        root, with apt-get), create a cluster in the run
#                        folder, start it, create the test role and database,
#                        print the DSN
#   pg.sh stop [--clean] stop it (pg_ctl stop -m fast); --clean removes the
#                        run folder
#   pg.sh env            print "export SPILLWAY_TEST_POSTGRES=<dsn>"
#   pg.sh dsn            print the DSN
#
# The cluster is the tests' own (initdb into the run folder), never the
# system's: local connections over its socket trust the OS user, TCP
# connections need the password (scram-sha-256).
#
# Environment (defaults in brackets):
#   SPILLWAY_PG_RUN   run folder: data, socket, log [/tmp/spillway-pg]
#   SPILLWAY_PG_PORT  TCP port on 127.0.0.1 [25432]; below Linux's ephemeral
#                     range (32768+), where an outgoing connection can hold it
#   SPILLWAY_PG_USER, SPILLWAY_PG_PASSWORD, SPILLWAY_PG_DB  [spillway each]
set -euo pipefail

run=${SPILLWAY_PG_RUN:-/tmp/spillway-pg}
port=${SPILLWAY_PG_PORT:-25432}
user=${SPILLWAY_PG_USER:-spillway}
password=${SPILLWAY_PG_PASSWORD:-spillway}
db=${SPILLWAY_PG_DB:-spillway}
dsn="postgres://$user:$password@127.0.0.1:$port/$db?sslmode=disable"

log() { echo "pg.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# bindir prints the folder of the newest installed server binaries.
bindir() {
  local d
  d=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [[ -n $d && -x $d/initdb ]]; then
    echo "$d"
  elif command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(command -v pg_ctl)"
  else
    return 1
  fi
}

install() {
  bindir >/dev/null && return
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "PostgreSQL is not installed; install it (Debian: sudo apt-get install -y postgresql) or set SPILLWAY_TEST_POSTGRES to a server of your own"
  fi
  log "installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q postgresql; } >"/tmp/spillway-pg-install.log" 2>&1 ||
    { tail -n 30 /tmp/spillway-pg-install.log >&2; die "apt-get install postgresql FAILED (log: /tmp/spillway-pg-install.log)"; }
  bindir >/dev/null || die "postgresql installed but no initdb/pg_ctl found"
}

# as_owner runs a command as the owner of the cluster: the postgres user
# when we are root (the server refuses to run as root), else ourselves.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# check_run_dir refuses to empty a folder pg.sh did not create.
check_run_dir() {
  if [[ -d $run && ! -f $run/data/PG_VERSION && ! -f $run/initdb.log && -n $(ls -A "$run") ]]; then
    die "refusing to empty $run: it is not a pg.sh run folder (set SPILLWAY_PG_RUN)"
  fi
}

running() {
  [[ -f $run/data/postmaster.pid ]] && as_owner "$(bindir)/pg_ctl" -D "$run/data" status >/dev/null 2>&1
}

cmd_start() {
  install
  local bin
  bin=$(bindir)
  if running; then
    log "already running in $run"
    echo "$dsn"
    return
  fi
  if [[ ! -f $run/data/PG_VERSION ]]; then
    check_run_dir
    rm -rf "$run"
    mkdir -p "$run"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$run"
    log "creating a cluster in $run/data ($("$bin/postgres" --version))"
    as_owner "$bin/initdb" -D "$run/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$run/initdb.log" 2>&1 ||
      { cat "$run/initdb.log" >&2; die "initdb failed"; }
  fi
  as_owner "$bin/pg_ctl" -D "$run/data" -l "$run/server.log" -w -t 60 \
    -o "-p $port -k $run -c listen_addresses=127.0.0.1" start >/dev/null ||
    { tail -n 30 "$run/server.log" >&2; die "PostgreSQL did not start on 127.0.0.1:$port (log: $run/server.log)"; }
  as_owner "$bin/psql" -h "$run" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q >/dev/null <<EOF
SELECT 'CREATE ROLE $user LOGIN PASSWORD ''$password'''
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') \gexec
SELECT 'CREATE DATABASE $db OWNER $user'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \gexec
EOF
  log "PostgreSQL answers on 127.0.0.1:$port (data and log in $run)"
  echo "$dsn"
}

cmd_stop() {
  if bindir >/dev/null && running; then
    as_owner "$(bindir)/pg_ctl" -D "$run/data" -m fast -w stop >/dev/null
    log "stopped the PostgreSQL of $run"
  else
    log "no PostgreSQL runs from $run"
  fi
  if [[ ${1:-} == --clean ]]; then
    check_run_dir
    rm -rf "$run"
  fi
}

cmd=${1:-}
shift || true
case $cmd in
  start) cmd_start ;;
  stop) cmd_stop "$@" ;;
  env) echo "export SPILLWAY_TEST_POSTGRES='$dsn'" ;;
  dsn) echo "$dsn" ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
