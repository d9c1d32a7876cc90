#!/usr/bin/env bash
# Gateway load benchmark, one run on loopback: direct to a fast mock provider, then through the
# gateway with an empty chain, then with the full chain, on a ~1 KB chat request, JSON and SSE,
# at each concurrency in CONNS; then RSS with 256 open connections.
#
#   benches/load/run.sh                       # build release binaries, then measure
#   DURATION=5 WARMUP=1 CONNS="1 16 64" MODES="json stream" TARGETS="direct nginx empty full" benches/load/run.sh
#
# `nginx` (when nginx is installed) is a bare proxy hop to the same mock, one worker, upstream
# keep-alive, no buffering: the baseline the issue's targets are stated against, in the same run.
#
# Needs wrk (apt-get install wrk). Every process is started here and stopped by its PID.
# CPU per request is the target process's utime+stime delta (from /proc/PID/stat) divided by the
# requests wrk completed in the measured window; for `direct` it is the mock's own CPU.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-"1 16 64"}
MODES=${MODES:-"json stream"}
TARGETS=${TARGETS:-"direct nginx empty full"}
RSS_CONNS=${RSS_CONNS:-256}
OUT=${OUT:-/tmp/palisade-load/$(date +%Y%m%d-%H%M%S)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p palisade -p palisade-load-bench)
fi
BIN=$CARGO_TARGET_DIR/release
CLK_TCK=$(getconf CLK_TCK)

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# start NAME CMD...: run in the background, wait for its "listening on URL" line.
# Sets START_PID and START_URL.
start() {
  local name=$1; shift
  "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
  START_PID=$!
  PIDS+=("$START_PID")
  START_URL=""
  for _ in $(seq 1 400); do
    START_URL=$(grep -o 'https\?://[0-9.:]*' "$OUT/$name.out" 2>/dev/null | head -1 || true)
    [ -n "$START_URL" ] && return 0
    kill -0 "$START_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$OUT/$name.err" >&2
  return 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

start mock env MOCK_THREADS=1 "$BIN/palisade-load-mock"
MOCK_PID=$START_PID MOCK_URL=$START_URL

pack() { # VERSION CHAIN POLICY_YAML
  cat <<YAML
pack:
  name: bench
  version: $1
  enabled: true
policies:
  chain: [$2]
providers:
  mock:
    base_url: $MOCK_URL/v1
    api_key_env: PALISADE_BENCH_PROVIDER_KEY
models:
  gpt-4o-mini:
    input_usd_per_mtok: 0.15
    output_usd_per_mtok: 0.6
$3
YAML
}
pack 1.0.0 "" "" >"$OUT/empty.yaml"
FULL_CHAIN="audit-logger, pii-detector, budget-enforcer"
FULL_POLICY=$'policy:\n  pii-detector:\n    action: redact\n    scan: [request, response]\n  audit-logger:\n    retention_days: 30\n  budget-enforcer:\n    limits:\n      - {scope: environment, window: monthly, usd: 1000000, on_exhausted: block}'
pack 1.0.0 "$FULL_CHAIN" "$FULL_POLICY" >"$OUT/full.yaml"
if ! "$BIN/palisade" validate "$OUT/full.yaml" >"$OUT/full-validate.txt" 2>&1; then
  FULL_CHAIN="audit-logger, budget-enforcer"
  FULL_POLICY=$'policy:\n  audit-logger:\n    retention_days: 30\n  budget-enforcer:\n    limits:\n      - {scope: environment, window: monthly, usd: 1000000, on_exhausted: block}'
  pack 1.0.0 "$FULL_CHAIN" "$FULL_POLICY" >"$OUT/full.yaml"
  echo "note: the full pack with pii-detector does not compile in this build (see $OUT/full-validate.txt); full = [$FULL_CHAIN]" | tee "$OUT/note.txt"
fi

export PALISADE_BENCH_PROVIDER_KEY=sk-bench-provider RUST_LOG=warn
declare -A URL PID
URL[direct]=$MOCK_URL PID[direct]=$MOCK_PID
case " $TARGETS " in *" nginx "*)
  if command -v nginx >/dev/null; then
    NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$OUT/nginx/tmp"
    cat >"$OUT/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx/tmp/body;
  proxy_temp_path $OUT/nginx/tmp/proxy;
  keepalive_requests 1000000;
  upstream mock { server ${MOCK_URL#http://}; keepalive 256; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
NGINX
    nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -g 'daemon off; master_process off;' >"$OUT/nginx.out" 2>&1 &
    PIDS+=("$!")
    PID[nginx]=$! URL[nginx]=http://127.0.0.1:$NGINX_PORT
    for _ in $(seq 1 100); do curl -s -o /dev/null "${URL[nginx]}/" && break; sleep 0.05; done
  else
    echo "nginx is not installed: skipping the nginx target" >&2
    TARGETS=$(echo " $TARGETS " | sed 's/ nginx / /')
  fi ;;
esac
for t in empty full; do
  case " $TARGETS " in *" $t "*) ;; *) continue ;; esac
  start "gw-$t" "$BIN/palisade" gateway --pack "$OUT/$t.yaml" --environment bench --listen 127.0.0.1:0
  URL[$t]=$START_URL PID[$t]=$START_PID
done

printf 'target\tmode\tc\trps\tp50_ms\tp99_ms\tcpu_us_per_req\trss_mb\tnon2xx\terrors\trequests\n' >"$OUT/results.tsv"
for mode in $MODES; do
  body="$HERE/body-$mode.json"
  for t in $TARGETS; do
    for c in $CONNS; do
      url="${URL[$t]}/v1/chat/completions"
      BODY_FILE=$body wrk -t1 -c"$c" -d"${WARMUP}s" -s "$HERE/wrk-post.lua" "$url" >/dev/null
      cpu0=$(cpu_ticks "${PID[$t]}")
      line=$(BODY_FILE=$body wrk -t1 -c"$c" -d"${DURATION}s" -s "$HERE/wrk-post.lua" "$url" | grep '^RESULT')
      cpu1=$(cpu_ticks "${PID[$t]}")
      rss=$(rss_mb "${PID[$t]}")
      get() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
      reqs=$(get requests)
      errs=$(( $(get err_connect) + $(get err_read) + $(get err_write) + $(get err_timeout) ))
      cpu_us=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", n ? d * 1e6 / hz / n : 0}')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$mode" "$c" "$(get rps)" "$(get p50_ms)" \
        "$(get p99_ms)" "$cpu_us" "$rss" "$(get non2xx)" "$errs" "$reqs" | tee -a "$OUT/results.tsv"
    done
  done
done

# RSS with RSS_CONNS open connections (sampled mid-run), per gateway target.
printf 'target\tconnections\trss_mb_during\tpeak_rss_mb\n' >"$OUT/rss.tsv"
for t in empty full; do
  [ -n "${PID[$t]:-}" ] || continue
  BODY_FILE="$HERE/body-json.json" wrk -t1 -c"$RSS_CONNS" -d3s -s "$HERE/wrk-post.lua" "${URL[$t]}/v1/chat/completions" >/dev/null &
  wrk_pid=$!
  sleep 2
  during=$(rss_mb "${PID[$t]}")
  wait "$wrk_pid" || true
  peak=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/${PID[$t]}/status")
  printf '%s\t%s\t%s\t%s\n' "$t" "$RSS_CONNS" "$during" "$peak" | tee -a "$OUT/rss.tsv"
done

stats=$(curl -s "$MOCK_URL/mock/stats" || true)
echo "mock counters: $stats" | tee "$OUT/mock-stats.txt"

# Report: added latency and throughput ratio versus direct at the same mode and concurrency, and
# RPS and CPU per request versus nginx (when measured) — the issue's targets are stated that way.
awk -F'\t' 'NR == 1 {next}
  {key = $2 "/" $3; if ($1 == "direct") {d_rps[key] = $4; d_p50[key] = $5; d_p99[key] = $6}
   if ($1 == "nginx") {n_rps[key] = $4; n_cpu[key] = $7}
   row[NR] = $0}
  END {
    print "| target | mode | c | RPS | ×direct | ×nginx RPS | p50 ms | added p50 µs | p99 ms | added p99 µs | CPU µs/req | ×nginx CPU | RSS MB | non2xx |"
    print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for (i = 2; i <= NR; i++) {
      split(row[i], f, "\t"); key = f[2] "/" f[3]
      ratio = (d_rps[key] > 0) ? sprintf("%.2f", f[4] / d_rps[key]) : "-"
      nr = (n_rps[key] > 0 && f[1] != "direct") ? sprintf("%.2f", f[4] / n_rps[key]) : "-"
      nc = (n_cpu[key] > 0 && f[1] != "direct") ? sprintf("%.2f", f[7] / n_cpu[key]) : "-"
      ap50 = (f[1] == "direct") ? "–" : sprintf("%.0f", (f[5] - d_p50[key]) * 1000)
      ap99 = (f[1] == "direct") ? "–" : sprintf("%.0f", (f[6] - d_p99[key]) * 1000)
      printf "| %s | %s | %s | %.0f | %s | %s | %.3f | %s | %.3f | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4], ratio, nr, f[5], ap50, f[6], ap99, f[7], nc, f[8], f[9]
    }
  }' "$OUT/results.tsv" | tee "$OUT/report.md"
echo "results in $OUT"
