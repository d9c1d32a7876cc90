#!/usr/bin/env bash
# Many concurrent slow streams: N clients each hold one streamed chat answer open (the mock sends
# CHUNKS content chunks DELAY_MS apart), through nginx and through the gateway on the full chain
# (audit + PII on request and response + budget), in the same run. For each target: the peak
# RSS while the N streams are open, RSS per stream above the idle process, CPU per completed
# stream, and errors.
#
#   benches/load/streams.sh [N]                       # default 9000
#   DUR=12 CHUNKS=40 DELAY_MS=50 TARGETS="nginx full full-h2" benches/load/streams.sh 2000
#
# Targets: nginx; full (the gateway, HTTP/1.1 to the provider); full-h2 (the same pack with the
# provider on `protocol: http2`, so streams share provider connections).
#
# Needs wrk, nginx (skipped when missing) and the release binaries:
#   cargo build --release -p palisade -p palisade-load-bench
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
N=${1:-9000} DUR=${DUR:-12} CHUNKS=${CHUNKS:-40} DELAY_MS=${DELAY_MS:-50}
TARGETS=${TARGETS:-"nginx full full-h2"}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$(mktemp -d /tmp/palisade-streams.XXXXXX)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
trap 'cleanup; rm -rf "$OUT"' EXIT
# Every stream holds a socket on each side of a proxy that opens one provider connection per
# stream (nginx, `full`): 2N descriptors. `full-h2` puts 100 streams on a provider connection:
# N + N/100. Raise the soft limit to the hard one; a machine whose hard limit is lower than
# what the targets need measures fewer.
ulimit -n "$(ulimit -Hn)"
need=$((N + N / 100 + 200))
for t in $TARGETS; do
  [ "$t" = full-h2 ] || need=$((N * 2 + 200))
done
if [ "$(ulimit -n)" != unlimited ] && [ "$need" -gt "$(ulimit -n)" ]; then
  echo "N=$N needs $need open files per proxy for TARGETS=\"$TARGETS\"; the limit here is $(ulimit -n)" >&2
  exit 2
fi
export BODY_FILE=$HERE/body-stream.json PALISADE_BENCH_PROVIDER_KEY=sk-bench-provider RUST_LOG=warn
MOCK_THREADS=1 MOCK_CHUNKS=$CHUNKS MOCK_CHUNK_DELAY_MS=$DELAY_MS start mock "$BIN/palisade-load-mock"
MOCK_URL=$START_URL
declare -A URL PID
for t in $TARGETS; do
  case $t in
    nginx)
      if ! command -v nginx >/dev/null; then echo "nginx is not installed: skipped" >&2; continue; fi
      PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      mkdir -p "$OUT/nginx/tmp"
      cat >"$OUT/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log warn;
events { worker_connections 65536; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx/tmp/body;
  proxy_temp_path $OUT/nginx/tmp/proxy;
  upstream mock { server ${MOCK_URL#http://}; keepalive 1024; }
  server {
    listen 127.0.0.1:$PORT backlog=65535;
    location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout 60s; }
  }
}
NGINX
      nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -g 'daemon off; master_process off;' >"$OUT/nginx.out" 2>&1 &
      PIDS+=("$!"); PID[nginx]=$!; URL[nginx]=http://127.0.0.1:$PORT
      for _ in $(seq 1 100); do curl -s -o /dev/null "${URL[nginx]}/" && break; sleep 0.05; done ;;
    full | full-h2)
      PROTOCOL=http1; [ "$t" = full-h2 ] && PROTOCOL=http2
      cat >"$OUT/$t.yaml" <<YAML
pack: {name: bench, version: 1.0.0, enabled: true}
policies:
  chain: [${CHAIN-audit-logger, pii-detector, budget-enforcer}]
providers:
  mock: {base_url: $MOCK_URL/v1, api_key_env: PALISADE_BENCH_PROVIDER_KEY, first_byte_timeout_ms: 60000, protocol: $PROTOCOL}
models:
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
policy:
  pii-detector: {action: redact, scan: [request, response]}
  audit-logger: {dir: $OUT/audit-$t, retention_days: 30}
  budget-enforcer:
    limits:
      - {scope: environment, window: monthly, usd: 1000000, on_exhausted: block}
YAML
      start "$t" "$BIN/palisade" gateway --pack "$OUT/$t.yaml" --environment dev --listen 127.0.0.1:0 \
        --state-dir "$OUT/state-$t" --max-connections $((N * 2 + 1000)) --max-connections-per-client 0
      PID[$t]=$START_PID; URL[$t]=$START_URL
      for _ in $(seq 1 200); do curl -sf "${URL[$t]}/readyz" >/dev/null && break; sleep 0.05; done ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "N=$N streams of $CHUNKS chunks ${DELAY_MS} ms apart, ${DUR}s each target ($(nproc) cores)"
echo "| target | peak RSS MB | idle RSS MB | KB per stream | CPU µs per stream | streams done | errors |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for t in $TARGETS; do
  [ -n "${PID[$t]:-}" ] || continue
  pid=${PID[$t]}
  idle=$(rss_kb "$pid") c0=$(ticks "$pid")
  wrk -t2 -c"$N" -d"${DUR}s" --timeout 30s -s "$HERE/wrk-post.lua" "${URL[$t]}/v1/chat/completions" >"$OUT/$t.wrk" 2>&1 &
  wrk_pid=$!
  peak=$idle
  while kill -0 "$wrk_pid" 2>/dev/null; do
    r=$(rss_kb "$pid"); [ "$r" -gt "$peak" ] && peak=$r
    sleep 0.2
  done
  wait "$wrk_pid" || true
  c1=$(ticks "$pid")
  line=$(grep '^RESULT' "$OUT/$t.wrk" || echo "RESULT requests=0")
  get() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
  n=$(get requests)
  errors=$(( $(get err_connect) + $(get err_read) + $(get err_write) + $(get err_timeout) + $(get non2xx) ))
  awk -v t="$t" -v peak="$peak" -v idle="$idle" -v N="$N" -v d=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" -v e="$errors" \
    'BEGIN {printf "| %s | %.0f | %.0f | %.1f | %.0f | %d | %d |\n", t, peak / 1024, idle / 1024, (peak - idle) / N, (n > 0 ? d * 1e6 / hz / n : 0), n, e}'
done
