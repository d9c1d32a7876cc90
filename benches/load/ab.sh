#!/usr/bin/env bash
# Same-run A/B of two gateway binaries: both start on the same pack against one mock provider,
# and 4 s measurements alternate between them, so both see the same machine noise.
#
#   benches/load/ab.sh OLD_BINARY NEW_BINARY [PAIRS] [CONNECTIONS]
#   CHAIN=" " benches/load/ab.sh old new 5 16        # empty chain instead of the full one
#   EVENTS_SIDE=B benches/load/ab.sh bin bin 6 16      # B runs under a control plane, shipping
#                                                      # one decision event per request
#   EVENTS_SIDE=AB benches/load/ab.sh old new 6 16     # both ship: the cost of shipping, A/B
#   EVENTS_SIDE=AB ARGS_A="--events-buffer 0" benches/load/ab.sh bin bin 6 16
#                                                      # both under the control plane, only B
#                                                      # ships: the cost of shipping alone
#   ARGS_B="--otlp-endpoint {mock}" benches/load/ab.sh bin bin 8 16
#                                                      # extra gateway arguments of one side;
#                                                      # {mock} is the mock's URL, which is also
#                                                      # an OTLP/HTTP sink: the cost of traces
#   THREAD=palisade-otlp ARGS_B="--otlp-endpoint {mock}" benches/load/ab.sh bin bin 8 16
#                                                      # also prints the CPU of the threads of
#                                                      # that name (of the total, last column)
#   ROUTED_B=1 benches/load/ab.sh bin bin 8 16         # B: two deployments and a rate limit
#   PATH_B=/v1/messages BODY_FILE_B=$PWD/benches/load/body-messages-stream.json \
#     BODY_FILE=$PWD/benches/load/body-stream.json benches/load/ab.sh bin bin 6 16
#                                                      # one route against another (Anthropic
#                                                      # streams against chat streams)
#
# Prints one line per measurement (A = first binary, B = second: RPS, p50 ms, p99 ms, gateway
# CPU µs per request, non-2xx count) and the means. Build both binaries first, e.g.
#   cp target/release/palisade /tmp/palisade-before   # then change the code and rebuild.
# Needs wrk and the load mock (cargo build --release -p palisade-load-bench).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
A=$1 B=$2 PAIRS=${3:-6} C=${4:-16} DUR=${DUR:-4}
export BODY_FILE=${BODY_FILE:-$HERE/body-json.json}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$(mktemp -d /tmp/palisade-ab.XXXXXX)
export PALISADE_BENCH_PROVIDER_KEY=sk-bench-provider RUST_LOG=${RUST_LOG:-warn}
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$OUT"/audit-*' EXIT
url_of() { for _ in $(seq 1 100); do grep -o 'http://[0-9.:]*' "$1" 2>/dev/null | head -1 && return 0; sleep 0.05; done; return 1; }
MOCK_THREADS=1 "$BIN/palisade-load-mock" >"$OUT/mock.out" 2>&1 &
PIDS+=("$!")
MOCK_URL=$(url_of "$OUT/mock.out")
# An Anthropic provider and model only when a side calls /v1/messages (so an older binary,
# which knows no provider kinds, still loads the pack of a chat-only comparison).
ANTHROPIC_PROVIDER="" ANTHROPIC_MODEL=""
if [[ "${PATH_A:-}${PATH_B:-}" == *messages* ]]; then
  ANTHROPIC_PROVIDER="  claude: {kind: anthropic, base_url: $MOCK_URL/v1, api_key_env: PALISADE_BENCH_PROVIDER_KEY}"
  ANTHROPIC_MODEL="  claude-bench: {provider: claude, input_usd_per_mtok: 3, output_usd_per_mtok: 15}"
fi
# ROUTED_A=1 / ROUTED_B=1: that side's model has two deployments (both on the mock) and the
# environment a per-minute rate limit (never reached): the cost of routing and rate limits.
pack() {
  local routed_var=ROUTED_$1 model="  gpt-4o-mini: {provider: mock, input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}"
  local second="" rate=""
  if [ -n "${!routed_var:-}" ]; then
    model="  gpt-4o-mini: {deployments: [{provider: mock}, {provider: mock2}], input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}"
    second="  mock2: {base_url: $MOCK_URL/v1, api_key_env: PALISADE_BENCH_PROVIDER_KEY}"
    rate="      - {scope: environment, window: minute, requests: 1000000000, tokens: 1000000000000, on_exhausted: block}"
  fi
  cat <<YAML
pack: {name: bench-${1,,}, version: 1.0.0, enabled: true}
policies:
  chain: [${CHAIN-audit-logger, pii-detector, budget-enforcer}]
providers:
  mock: {base_url: $MOCK_URL/v1, api_key_env: PALISADE_BENCH_PROVIDER_KEY}
$second
$ANTHROPIC_PROVIDER
models:
$model
$ANTHROPIC_MODEL
policy:
  pii-detector: {action: redact, scan: [request, response]}
  audit-logger: {dir: $OUT/audit-$1, retention_days: 30}
  budget-enforcer:
    limits:
      - {scope: environment, window: monthly, usd: 1000000, on_exhausted: block}
$rate
YAML
}
if [ -n "${EVENTS_SIDE:-}" ]; then
  # The control plane's own CPU is not counted: only the gateway's request path is measured.
  export PALISADE_ADMIN_KEY=pal_bench_admin_key_0123456789
  "$A" control-plane --listen 127.0.0.1:0 --database "$OUT/cp.db" >"$OUT/cp.out" 2>"$OUT/cp.err" &
  PIDS+=("$!")
  CP_URL=$(url_of "$OUT/cp.out")
  GW_KEY=$(PALISADE_SERVICE_KEY=$PALISADE_ADMIN_KEY "$A" keys create --role gateway -e dev \
    --control-plane "$CP_URL" 2>/dev/null)
fi
declare -A URL PID
for side in A B; do
  bin=$A; [ "$side" = B ] && bin=$B
  pack "$side" >"$OUT/$side.yaml"
  extra_var=ARGS_$side
  read -r -a extra <<<"${!extra_var:-}"
  extra=("${extra[@]//\{mock\}/$MOCK_URL}")
  if [[ "${EVENTS_SIDE:-}" == *"$side"* ]]; then
    PALISADE_SERVICE_KEY=$PALISADE_ADMIN_KEY "$A" push "$OUT/$side.yaml" --note bench \
      --control-plane "$CP_URL" >/dev/null
    PALISADE_SERVICE_KEY=$PALISADE_ADMIN_KEY "$A" deploy "bench-${side,,}" 1.0.0 -e dev --note bench \
      --control-plane "$CP_URL" >/dev/null
    PALISADE_GATEWAY_KEY=$GW_KEY "$bin" gateway --control-plane "$CP_URL" --pack "bench-${side,,}" -e dev \
      --listen 127.0.0.1:0 --state-dir "$OUT/state-$side" "${extra[@]}" >"$OUT/$side.out" 2>"$OUT/$side.err" &
  else
    "$bin" gateway --pack "$OUT/$side.yaml" --environment dev --listen 127.0.0.1:0 \
      --state-dir "$OUT/state-$side" "${extra[@]}" >"$OUT/$side.out" 2>"$OUT/$side.err" &
  fi
  PID[$side]=$! ; PIDS+=("$!")
  URL[$side]=$(url_of "$OUT/$side.out")
  for _ in $(seq 1 200); do
    curl -sf "${URL[$side]}/readyz" >/dev/null && break
    sleep 0.05
  done
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
thread_ticks() { # PID NAME: CPU ticks of the process's threads called NAME
  local sum=0 t
  for t in /proc/"$1"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] || continue
    sum=$((sum + $(awk '{print $14 + $15}' "$t/stat")))
  done
  echo "$sum"
}
measure() { # SIDE
  local path_var=PATH_$1 body_var=BODY_FILE_$1
  local url=${URL[$1]}${!path_var:-/v1/chat/completions} pid=${PID[$1]}
  local BODY_FILE=${!body_var:-$BODY_FILE}
  export BODY_FILE
  wrk -t1 -c"$C" -d1s -s "$HERE/wrk-post.lua" "$url" >/dev/null
  local c0 line c1 n t0=0 t1=0 extra=""
  c0=$(ticks "$pid")
  [ -n "${THREAD:-}" ] && t0=$(thread_ticks "$pid" "$THREAD")
  line=$(wrk -t1 -c"$C" -d"${DUR}s" -s "$HERE/wrk-post.lua" "$url" | grep '^RESULT')
  c1=$(ticks "$pid")
  [ -n "${THREAD:-}" ] && t1=$(thread_ticks "$pid" "$THREAD")
  get() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
  n=$(get requests)
  per_req() { awk -v d="$1" -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN {printf "%.1f", d * 1e6 / hz / n}'; }
  [ -n "${THREAD:-}" ] && extra=" $(per_req $((t1 - t0)))"
  echo "$1 $(get rps) $(get p50_ms) $(get p99_ms) $(per_req $((c1 - c0))) $(get non2xx)$extra"
}
for _ in $(seq 1 "$PAIRS"); do measure A; measure B; done | tee "$OUT/results.txt"
for side in A B; do
  if [[ "${EVENTS_SIDE:-}" == *"$side"* ]]; then
    echo "events of $side: $(curl -s "${URL[$side]}/status" | grep -o '"events":{[^}]*}')"
  fi
done
[ -n "${ARGS_A:-}${ARGS_B:-}" ] && echo "mock: $(curl -s "$MOCK_URL/mock/stats")"
awk -v thread="${THREAD:-}" '{rps[$1] += $2; cpu[$1] += $5; th[$1] += $7; n[$1]++}
  END {for (k in n) {
    printf "%s mean: rps=%.0f cpu_us_per_req=%.1f", k, rps[k] / n[k], cpu[k] / n[k]
    if (thread != "") printf " of_which_%s=%.1f", thread, th[k] / n[k]
    printf " (%d measurements)\n", n[k]}}' \
  "$OUT/results.txt" | sort
