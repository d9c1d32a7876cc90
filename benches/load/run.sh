#!/usr/bin/env bash
# Gateway load benchmark, one run on loopback, on a ~1 KB chat request, JSON and SSE, at each
# concurrency in CONNS: direct to a fast mock provider, through nginx, and through the gateway on
# several packs; then RSS with 256 open connections.
#
#   benches/load/run.sh                       # build release binaries, then measure
#   DURATION=5 WARMUP=1 CONNS="1 16 64" MODES="json stream" TARGETS="direct nginx empty full" benches/load/run.sh
#   ROUNDS=3 CONNS="1 16" MODES=json TARGETS="direct empty audit durable" benches/load/run.sh   # audit on vs off
#   ROUNDS=3 CONNS="1 16" MODES=json TARGETS="direct empty budget redis redis-pre" benches/load/run.sh   # budgets
#
# Targets: direct (the mock itself); nginx (when installed: a bare proxy hop to the same mock,
# one worker, upstream keep-alive, no buffering — the baseline the gateway's targets are stated
# against); and gateways, each on its own pack: empty (chain [], no policy), audit (chain
# [audit-logger], default settings: fsync every 100 ms, the request never waits), durable
# ([audit-logger] with `on_queue_full: block` + `fsync_interval_ms: 0`: each response waits for
# its record to be written and fsynced), pii (chain [pii-detector], redact, request and
# response), budget (chain [budget-enforcer], one in-memory limit), redis (the same limit in a
# redis-server started here: one reserve script per request, one settle script after it),
# redis-pre (the same with `preborrow_fraction: 0.1`: admission from a local lease, its settles
# sent in batches), full (audit + PII + budget). Redis' own CPU is not in the gateway's CPU
# column; it is in $OUT/redis-cpu.txt per point. Audit files go to $OUT/audit-*; the report
# counts the records written, so a run with the audit logger silently off shows 0; budget
# decisions and pre-borrowed reservations per gateway are in $OUT/budget-metrics.txt. Gateways
# keep their budget state files in $OUT/state-TARGET.
#
# For each mode and concurrency the targets run back to back (then the next concurrency), and
# ROUNDS repeats the whole sweep; the report averages the rounds, so the targets compared share
# the same stretch of a noisy machine. The load average is recorded before, between rounds and
# after ($OUT/loadavg.txt).
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
ROUNDS=${ROUNDS:-1}
GW_THREADS=${GW_THREADS:-0}   # gateway serving threads; 0: one per core, 1: like nginx's one worker
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

# shellcheck source=lib.sh
. "$HERE/lib.sh"

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
# One pack per gateway target: $OUT/TARGET.yaml.
pack 1.0.0 "" "" >"$OUT/empty.yaml"
pack 1.0.0 "audit-logger" $'policy:\n  audit-logger:\n    dir: '"$OUT/audit-audit" >"$OUT/audit.yaml"
pack 1.0.0 "audit-logger" $'policy:\n  audit-logger:\n    dir: '"$OUT/audit-durable"$'\n    on_queue_full: block\n    fsync_interval_ms: 0' >"$OUT/durable.yaml"
pack 1.0.0 "pii-detector" $'policy:\n  pii-detector:\n    action: redact\n    scan: [request, response]' >"$OUT/pii.yaml"
BUDGET_LIMIT=$'\n    limits:\n      - {scope: environment, window: monthly, usd: 1000000, on_exhausted: block}'
pack 1.0.0 "budget-enforcer" $'policy:\n  budget-enforcer:'"$BUDGET_LIMIT" >"$OUT/budget.yaml"
pack 1.0.0 "budget-enforcer" $'policy:\n  budget-enforcer:\n    store: redis'"$BUDGET_LIMIT" >"$OUT/redis.yaml"
pack 1.0.0 "budget-enforcer" $'policy:\n  budget-enforcer:\n    store: redis\n    preborrow_fraction: 0.1'"$BUDGET_LIMIT" >"$OUT/redis-pre.yaml"
FULL_POLICY=$'policy:\n  pii-detector:\n    action: redact\n    scan: [request, response]\n  audit-logger:\n    dir: '"$OUT/audit-full"$'\n    retention_days: 30\n  budget-enforcer:\n    limits:\n      - {scope: environment, window: monthly, usd: 1000000, on_exhausted: block}'
pack 1.0.0 "audit-logger, pii-detector, budget-enforcer" "$FULL_POLICY" >"$OUT/full.yaml"
for t in $TARGETS; do
  case $t in direct | nginx) continue ;; esac
  [ -f "$OUT/$t.yaml" ] || { echo "unknown target $t (no pack $OUT/$t.yaml)" >&2; exit 1; }
  "$BIN/palisade" validate "$OUT/$t.yaml" >"$OUT/$t-validate.txt" 2>&1 \
    || { echo "the $t pack does not validate:" >&2; cat "$OUT/$t-validate.txt" >&2; exit 1; }
done

export PALISADE_BENCH_PROVIDER_KEY=sk-bench-provider RUST_LOG=warn
case " $TARGETS " in *" redis"*)
  command -v redis-server >/dev/null || { echo "the redis targets need redis-server (apt-get install redis-server)" >&2; exit 1; }
  REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$OUT/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT/redis" >"$OUT/redis.out" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  export PALISADE_REDIS_URL=redis://127.0.0.1:$REDIS_PORT ;;
esac
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
for t in $TARGETS; do
  case $t in direct | nginx) continue ;; esac
  start "gw-$t" "$BIN/palisade" gateway --pack "$OUT/$t.yaml" --environment bench --listen 127.0.0.1:0 --threads "$GW_THREADS" \
    --state-dir "$OUT/state-$t"
  URL[$t]=$START_URL PID[$t]=$START_PID
done

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "before: $(loadavg)" | tee "$OUT/loadavg.txt"
printf 'round\ttarget\tmode\tc\trps\tp50_ms\tp99_ms\tcpu_us_per_req\trss_mb\tnon2xx\terrors\trequests\n' >"$OUT/results.tsv"
[ -z "${REDIS_PID:-}" ] || printf 'target\tmode\tc\tredis_cpu_us_per_req\n' >"$OUT/redis-cpu.txt"
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    body="$HERE/body-$mode.json"
    for c in $CONNS; do
      for t in $TARGETS; do
        url="${URL[$t]}/v1/chat/completions"
        BODY_FILE=$body wrk -t1 -c"$c" -d"${WARMUP}s" -s "$HERE/wrk-post.lua" "$url" >/dev/null
        cpu0=$(cpu_ticks "${PID[$t]}")
        rcpu0=$([ -z "${REDIS_PID:-}" ] || cpu_ticks "$REDIS_PID")
        line=$(BODY_FILE=$body wrk -t1 -c"$c" -d"${DURATION}s" -s "$HERE/wrk-post.lua" "$url" | grep '^RESULT')
        cpu1=$(cpu_ticks "${PID[$t]}")
        rcpu1=$([ -z "${REDIS_PID:-}" ] || cpu_ticks "$REDIS_PID")
        rss=$(rss_mb "${PID[$t]}")
        get() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
        reqs=$(get requests)
        errs=$(( $(get err_connect) + $(get err_read) + $(get err_write) + $(get err_timeout) ))
        cpu_us=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", n ? d * 1e6 / hz / n : 0}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$t" "$mode" "$c" "$(get rps)" "$(get p50_ms)" \
          "$(get p99_ms)" "$cpu_us" "$rss" "$(get non2xx)" "$errs" "$reqs" | tee -a "$OUT/results.tsv"
        if [ -n "${REDIS_PID:-}" ]; then
          printf '%s\t%s\t%s\t%s\n' "$t" "$mode" "$c" \
            "$(awk -v d=$((rcpu1 - rcpu0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.1f", n ? d * 1e6 / hz / n : 0}')" >>"$OUT/redis-cpu.txt"
        fi
      done
    done
  done
  echo "after round $round: $(loadavg)" | tee -a "$OUT/loadavg.txt"
done

# RSS with RSS_CONNS open connections (sampled mid-run), per gateway target.
printf 'target\tconnections\trss_mb_during\tpeak_rss_mb\n' >"$OUT/rss.tsv"
for t in $TARGETS; do
  case $t in direct | nginx) continue ;; esac
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

# Budget decisions and pre-borrowed reservations per gateway target.
for t in $TARGETS; do
  case $t in direct | nginx) continue ;; esac
  curl -s "${URL[$t]}/metrics" | grep -E '^palisade_budget_(decisions_total|preborrowed_total|store_errors_total)' \
    | sed "s/^/$t /" || true
done >"$OUT/budget-metrics.txt"

# Audit records written per audit target.
for t in $TARGETS; do
  [ -d "$OUT/audit-$t" ] || continue
  echo "audit records written by $t: $(cat "$OUT"/audit-$t/*.jsonl | grep -c '"kind":"request"')"
done | tee "$OUT/audit-records.txt"
# A run writes about 1 KB of audit log per request (gigabytes over a long sweep): keep the counts,
# not the logs, unless asked.
if [ "${KEEP_AUDIT:-0}" != 1 ]; then for t in $TARGETS; do rm -rf "${OUT:?}/audit-$t"; done; fi

# Report 1: throughput ratio and added latency versus direct, and RPS and CPU per request versus
# nginx (when measured), at the same mode and concurrency, averaged over the rounds.
awk -F'\t' 'NR == 1 {next}
  {key = $2 "\t" $3 "\t" $4
   if (!(key in n)) order[++k] = key
   n[key]++; rps[key] += $5; p50[key] += $6; p99[key] += $7; cpu[key] += $8; rss[key] = $9; bad[key] += $10 + $11}
  END {
    for (i = 1; i <= k; i++) {
      key = order[i]; split(key, f, "\t"); m = n[key]; dk = f[2] "/" f[3]
      if (f[1] == "direct") {d_rps[dk] = rps[key] / m; d_p50[dk] = p50[key] / m; d_p99[dk] = p99[key] / m}
      if (f[1] == "nginx") {n_rps[dk] = rps[key] / m; n_cpu[dk] = cpu[key] / m}
    }
    print "| target | mode | c | RPS | ×direct | ×nginx RPS | p50 ms | added p50 µs | p99 ms | added p99 µs | CPU µs/req | ×nginx CPU | RSS MB | non2xx+errors |"
    print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= k; i++) {
      key = order[i]; split(key, f, "\t"); m = n[key]; dk = f[2] "/" f[3]
      r = rps[key] / m; a50 = p50[key] / m; a99 = p99[key] / m; c = cpu[key] / m
      ratio = (d_rps[dk] > 0) ? sprintf("%.2f", r / d_rps[dk]) : "-"
      nr = (n_rps[dk] > 0 && f[1] != "direct") ? sprintf("%.2f", r / n_rps[dk]) : "-"
      nc = (n_cpu[dk] > 0 && f[1] != "direct") ? sprintf("%.2f", c / n_cpu[dk]) : "-"
      ap50 = (f[1] == "direct" || !(dk in d_p50)) ? "–" : sprintf("%.0f", (a50 - d_p50[dk]) * 1000)
      ap99 = (f[1] == "direct" || !(dk in d_p99)) ? "–" : sprintf("%.0f", (a99 - d_p99[dk]) * 1000)
      printf "| %s | %s | %s | %.0f | %s | %s | %.3f | %s | %.3f | %s | %.1f | %s | %s | %d |\n", f[1], f[2], f[3], r, ratio, nr, a50, ap50, a99, ap99, c, nc, rss[key], bad[key]
    }
  }' "$OUT/results.tsv" | tee "$OUT/report.md"

# Report 2: each gateway target versus the empty chain (`empty`), same run: what a policy adds.
awk -F'\t' 'NR == 1 {next}
  {key = $2 "\t" $3 "\t" $4
   if (!(key in n)) order[++k] = key
   n[key]++; rps[key] += $5; p50[key] += $6; p99[key] += $7; cpu[key] += $8}
  END {
    print ""
    print "| target | mode | c | RPS | ×empty | p50 ms | added p50 µs | p99 ms | added p99 µs | CPU µs/req | added CPU µs/req |"
    print "|---|---|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= k; i++) {
      key = order[i]; split(key, f, "\t")
      if (f[1] == "direct" || f[1] == "nginx" || f[1] == "empty") continue
      off = "empty\t" f[2] "\t" f[3]
      if (!(off in n)) continue
      m = n[key]; o = n[off]
      r = rps[key] / m; a50 = p50[key] / m; a99 = p99[key] / m; c = cpu[key] / m
      printf "| %s | %s | %s | %.0f | %.2f | %.3f | %.0f | %.3f | %.0f | %.1f | %.1f |\n", f[1], f[2], f[3], r, r / (rps[off] / o), a50, (a50 - p50[off] / o) * 1000, a99, (a99 - p99[off] / o) * 1000, c, c - cpu[off] / o
    }
  }' "$OUT/results.tsv" | tee -a "$OUT/report.md"
echo "after: $(loadavg)" | tee -a "$OUT/loadavg.txt"
echo "results in $OUT"
