# Shared by the benchmark scripts (sourced): processes started here are stopped by their PID
# when the script exits.
# shellcheck shell=bash

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
