# shellcheck shell=bash
# A throwaway PostgreSQL server for the tests (tests/test_store.py), on a Unix socket only.
#
#   source .ci/postgres.sh          # what .ci/run does: exports PRESAFE_TEST_POSTGRES_URL
#   eval "$(.ci/postgres.sh)"       # the same in a developer's shell
#   .ci/postgres.sh stop            # stop the server
#
# Installs the Debian `postgresql` package when no initdb is found (root only), then
# runs its own cluster in $PRESAFE_PG_DIR (not Debian's `main` cluster, so no port 5432,
# no system config and no systemd are involved; `listen_addresses=''` means no TCP port can
# clash). Idempotent: a second run reuses the cluster, starts it if it is down, and creates
# the role and database only when missing. Trust auth is fine: the socket lives in a
# private folder, and the database holds test data only. The server is left running, so a
# second run costs ~1 s.

_presafe_pg() {
    local base="${PRESAFE_PG_DIR:-/var/tmp/presafe-test-postgres}"
    local data="$base/data" db=presafe_test bindir

    # The newest installed major version (Debian puts initdb off PATH, under this folder).
    _pg_bindir() { { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1; }
    bindir="$(_pg_bindir)"

    # initdb and postgres refuse to run as root: run them as the `postgres` user the
    # package creates; a developer runs them as themself.
    local -a as=()
    if [[ "$(id -u)" == 0 ]]; then as=(runuser -u postgres --); fi

    if [[ "${1:-}" == stop ]]; then
        if [[ -n "$bindir" && -f "$data/postmaster.pid" ]]; then
            "${as[@]}" "$bindir/pg_ctl" -D "$data" -m fast -w stop >&2
        fi
        return 0
    fi

    if [[ -z "$bindir" || ! -x "$bindir/initdb" ]]; then
        if [[ "$(id -u)" != 0 ]]; then
            echo "postgres.sh: PostgreSQL is not installed; run: sudo apt-get install -y postgresql" >&2
            return 1
        fi
        echo "postgres.sh: installing the postgresql Debian package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends postgresql >/dev/null
        bindir="$(_pg_bindir)"
    fi

    if [[ ! -f "$data/PG_VERSION" ]]; then
        rm -rf "$data"   # a half-made cluster from an interrupted run
        mkdir -p "$base"
        if [[ "$(id -u)" == 0 ]]; then chown postgres: "$base"; fi
        "${as[@]}" "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        # Socket in $base (reachable by the test process), no TCP; small and fast: the data
        # is disposable, so fsync off.
        cat >>"$data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$base'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
max_connections = 50
EOF
    fi
    if ! "${as[@]}" "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        "${as[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
    fi

    local psql=("${as[@]}" "$bindir/psql" -h "$base" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$db'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE ROLE $db LOGIN"
    fi
    if [[ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE DATABASE $db OWNER $db"
    fi
    export PRESAFE_TEST_POSTGRES_URL="postgresql+psycopg://$db@/$db?host=$base"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    # Executed, not sourced: print the export for `eval`.
    set -euo pipefail
    _presafe_pg "$@"
    [[ "${1:-}" == stop ]] || echo "export PRESAFE_TEST_POSTGRES_URL='$PRESAFE_TEST_POSTGRES_URL'"
else
    _presafe_pg
fi
