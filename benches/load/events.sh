#!/usr/bin/env bash
# Decision-event benchmark of the control plane: 4 senders post gzipped batches of 1,000 events
# (ingest rate), the store is seeded to TOTAL events, then the event list and summary queries
# are timed (p50/p99 of 21 runs each).
#
#   benches/load/events.sh [sqlite|postgres] [INGEST_EVENTS] [TOTAL]
#   SENDERS=8 PG_SYNC_COMMIT=off benches/load/events.sh postgres 400000 400000
#
# Needs the release binaries: cargo build --release -p palisade -p palisade-load-bench
# (and for postgres the postgresql package: initdb, postgres).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BACKEND=${1:-sqlite} INGEST=${2:-200000} TOTAL=${3:-5000000}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$(mktemp -d /tmp/palisade-events.XXXXXX)
chmod 755 "$OUT"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
# The store runs to gigabytes: remove it once the processes are stopped (KEEP=1 keeps it).
trap 'cleanup; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
export PALISADE_ADMIN_KEY=pal_bench_admin_key_0123456789
case "$BACKEND" in
  sqlite) DB=$OUT/cp.db ;;
  postgres)
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    RUN=()
    # As root, the cluster runs as the postgres user, which must own its directories.
    if [ "$(id -u)" = 0 ]; then RUN=(runuser -u postgres --); chown postgres "$OUT"; fi
    "${RUN[@]}" "$PGBIN/initdb" -D "$OUT/pg" -U postgres --auth=trust >/dev/null
    "${RUN[@]}" "$PGBIN/postgres" -D "$OUT/pg" -p "$PORT" -k "$OUT" -c listen_addresses=127.0.0.1 \
      -c fsync=on -c synchronous_commit=${PG_SYNC_COMMIT:-on} >"$OUT/pg.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 100); do "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PORT" >/dev/null 2>&1 && break; sleep 0.1; done
    DB=postgres://postgres@127.0.0.1:$PORT/postgres ;;
  *) echo "backend must be sqlite or postgres" >&2; exit 2 ;;
esac
# RETAIN_DAYS=N: after the queries, ingest once more while the events older than N days are
# deleted (the control plane deletes every second), and compare with the same ingest before.
start cp env RUST_LOG=info "$BIN/palisade" control-plane --listen 127.0.0.1:0 --database "$DB" \
  --event-prune-interval "$([ -n "${RETAIN_DAYS:-}" ] && echo 1s || echo 60s)"
CP=$START_URL
# The bench reads the control plane's CPU over the ingest (not Postgres's own processes).
export CP_PID=$START_PID
KEY=$(PALISADE_SERVICE_KEY=$PALISADE_ADMIN_KEY "$BIN/palisade" keys create --role gateway -e dev \
  --control-plane "$CP" 2>/dev/null)
echo "backend=$BACKEND control plane $CP ($(nproc) cores)"
"$BIN/palisade-events-bench" "$CP" "$KEY" "$PALISADE_ADMIN_KEY" "${SENDERS:-4}" "$INGEST" "$TOTAL"
if [ -n "${RETAIN_DAYS:-}" ] && [ "$BACKEND" = sqlite ]; then
  # How far the deletion got by the end of the ingest (the bench stored TOTAL + 2 × INGEST).
  python3 -c "import sqlite3; print('RESULT phase=retention stored_after=%d' % sqlite3.connect('$DB').execute('SELECT COUNT(*) FROM events').fetchone()[0])"
fi
