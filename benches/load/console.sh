#!/usr/bin/env bash
# Console benchmark: every console page's time on a large registry. A SQLite control plane is
# filled with EVENTS decision events (palisade-events-bench) and VERSIONS pack versions with a
# deploy history (palisade-console-bench), then each page is loaded 21 times (p50/p99).
#
#   benches/load/console.sh [VERSIONS] [EVENTS]
#
# Needs the release binaries: cargo build --release -p palisade -p palisade-load-bench
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VERSIONS=${1:-10000} EVENTS=${2:-1000000}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$(mktemp -d /tmp/palisade-console.XXXXXX)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
export PALISADE_ADMIN_KEY=pal_bench_admin_key_0123456789
start cp "$BIN/palisade" control-plane --listen 127.0.0.1:0 --database "$OUT/cp.db"
CP=$START_URL
KEY=$(PALISADE_SERVICE_KEY=$PALISADE_ADMIN_KEY "$BIN/palisade" keys create --role gateway -e dev \
  --control-plane "$CP" 2>/dev/null)
echo "control plane $CP ($(nproc) cores): $VERSIONS versions, $EVENTS events"
"$BIN/palisade-events-bench" "$CP" "$KEY" "$PALISADE_ADMIN_KEY" 4 "$EVENTS" "$EVENTS" | grep phase=ingest
"$BIN/palisade-console-bench" "$CP" "$PALISADE_ADMIN_KEY" "$VERSIONS"
