#!/usr/bin/env bash
# Streaming latency: how much later streamed text reaches a caller through the gateway than
# straight from a provider that paces its chunks like a model generating tokens.
#
#   benches/load/stream-latency.sh                          # prose, pii and card texts
#   N=50 CHUNKS=40 DELAY_MS=20 TEXTS=prose TARGETS="empty pii full" benches/load/stream-latency.sh
#   GATEWAY_B=/tmp/palisade-old benches/load/stream-latency.sh   # also a second gateway binary
#
# For each text (`prose`: no digit, `@` or key prefix; `pii`: an e-mail and a phone number per
# sentence; `card`: one card number split over three chunks) a paced mock (palisade-load-mock
# with MOCK_CHUNK_DELAY_MS) serves CHUNKS content chunks DELAY_MS apart, and
# palisade-stream-latency sends N streamed requests, one at a time, to the mock itself and
# through a gateway per target pack: empty (chain []), pii (pii-detector, redact, request and
# response), full (audit + PII + budget). With GATEWAY_B set, each target also runs on that
# binary (named TARGET-b), for a same-run A/B. Every process is started here and stopped by
# its PID. Output: one table per text in $OUT/latency-TEXT.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
N=${N:-30}
CHUNKS=${CHUNKS:-40}
DELAY_MS=${DELAY_MS:-20}
TEXTS=${TEXTS:-"prose pii card"}
TARGETS=${TARGETS:-"empty pii full"}
OUT=${OUT:-/tmp/palisade-latency/$(date +%Y%m%d-%H%M%S)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$OUT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p palisade -p palisade-load-bench)
fi
BIN=$CARGO_TARGET_DIR/release

# shellcheck source=lib.sh
. "$HERE/lib.sh"

export PALISADE_BENCH_PROVIDER_KEY=sk-bench-provider RUST_LOG=warn
for text in $TEXTS; do
  start "mock-$text" env MOCK_THREADS=1 MOCK_CHUNKS="$CHUNKS" MOCK_CHUNK_DELAY_MS="$DELAY_MS" MOCK_TEXT="$text" "$BIN/palisade-load-mock"
  MOCK_PID=$START_PID MOCK_URL=$START_URL
  pack() { # CHAIN POLICY_YAML
    printf 'pack:\n  name: bench\n  version: 1.0.0\n  enabled: true\npolicies:\n  chain: [%s]\nproviders:\n  mock:\n    base_url: %s/v1\n    api_key_env: PALISADE_BENCH_PROVIDER_KEY\nmodels:\n  gpt-4o-mini:\n    input_usd_per_mtok: 0.15\n    output_usd_per_mtok: 0.6\n%s\n' "$1" "$MOCK_URL" "$2"
  }
  pack "" "" >"$OUT/empty.yaml"
  pack "pii-detector" $'policy:\n  pii-detector:\n    action: redact\n    scan: [request, response]' >"$OUT/pii.yaml"
  pack "audit-logger, pii-detector, budget-enforcer" $'policy:\n  pii-detector:\n    action: redact\n    scan: [request, response]\n  audit-logger:\n    dir: '"$OUT/audit-$text"$'\n  budget-enforcer:\n    limits:\n      - {scope: environment, window: monthly, usd: 1000000, on_exhausted: block}' >"$OUT/full.yaml"
  args=()
  gws=()
  for t in $TARGETS; do
    for variant in a b; do
      bin=$BIN/palisade name=$t
      if [ "$variant" = b ]; then
        [ -n "${GATEWAY_B:-}" ] || continue
        bin=$GATEWAY_B name=$t-b
      fi
      start "gw-$text-$name" "$bin" gateway --pack "$OUT/$t.yaml" --environment bench \
        --listen 127.0.0.1:0 --no-watch --state-dir "$OUT/state-$text-$name"
      args+=("$name=$START_URL")
      gws+=("$START_PID")
    done
  done
  echo "### $text"
  "$BIN/palisade-stream-latency" "$N" "$MOCK_URL" "${args[@]}" | tee "$OUT/latency-$text.md"
  for p in "${gws[@]}" "$MOCK_PID"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
done
echo "results in $OUT"
