#!/usr/bin/env bash
# HTTP API benchmark (not part of the tests): while the posts pipeline works through a backlog at
# full rate, reads per second and latency (p50/p99) under wrk of one page's figures
# (GET /api/v1/pages/{key}?series=false), of the same page with its chart and table (a day of
# 10-minute samples), and of an hour's top 25 articles (GET /api/v1/pageviews/top/{domain}/{hour},
# JSON and CSV), each next to the processing rate without readers (phases alternate: quiet,
# readers, quiet, readers, ..., so drift shows; each reader phase's ratio is against the mean of
# the quiet phases around it); then writes per second (POST /api/v1/posts, each answered 202 only
# after the broker's acknowledgement), with the backlog still being processed.
#
#   usage: scripts/bench_api.sh [PHASE_SECONDS]      (default 8)
#
# The first two reader phases send a fixed RATE of requests (default 20000 a second, the target
# read rate; open loop, on PCONNS connections, default 64): the processing rate next to readers
# at that rate. The others read as fast as wrk can (CONNS connections): the most reads a second,
# and what that costs the processing on a machine where wrk, broker and pagepulse share 2 cores.
#
# Environment: N (posts in the backlog, default 4000000; it must last through every phase),
# CONNS (wrk connections for reads, default 16), RATE and PCONNS (see above), WCONNS (for writes, default 256: each write
# waits for its acknowledgement, so writes per second are bounded by connections / latency),
# BENCH_BUILD (1: cargo build --release first, default; 0: use target/release as it is).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
PHASE="${1:-8}"
N="${N:-4000000}"
CONNS="${CONNS:-16}"
RATE="${RATE:-20000}"
PCONNS="${PCONNS:-64}"
WCONNS="${WCONNS:-256}"
BIN="$ROOT/target/release/pagepulse"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 2; }
[ "${BENCH_BUILD:-1}" = 1 ] && cargo build --release --quiet
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pagepulse-bench-api.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BPORT=$(free_port); HPORT=$(free_port)
(cd "$WORK" && exec tansu broker --listener-url "tcp://127.0.0.1:$BPORT" --advertised-listener-url "tcp://127.0.0.1:$BPORT" \
  --storage-engine memory://tansu/ >"$WORK/tansu.log" 2>&1) &
PIDS+=($!)
sleep 0.5
export PAGEPULSE_BROKERS="127.0.0.1:$BPORT" PAGEPULSE_TOPIC_PREFIX="bench." PAGEPULSE_GROUP_ID="bench"
export PAGEPULSE_HTTP_LISTEN="127.0.0.1:$HPORT" PAGEPULSE_WRITE_TOKEN="bench-token-0123456789abcdef"
export PAGEPULSE__pipelines__pages__enabled=false
export PAGEPULSE__http__read_rate=1000000.0 PAGEPULSE__http__read_burst=1000000
export PAGEPULSE__http__write_rate=1000000.0 PAGEPULSE__http__write_burst=1000000
"$BIN" topics create >/dev/null
# One page with a day of samples and an hour's top 25 (see the seed script).
python3 scripts/bench_api_seed.py "127.0.0.1:$BPORT" "$PAGEPULSE_TOPIC_PREFIX"
echo "producing $N posts..." >&2
"$BIN" demo posts --rate 0 --count "$N" --size 100 >/dev/null
"$BIN" run >"$WORK/pagepulse.log" 2>&1 &
PIDS+=($!)
AUTH="Authorization: Bearer $PAGEPULSE_WRITE_TOKEN"
URL="http://127.0.0.1:$HPORT"
for _ in $(seq 1 600); do
  curl -sf -H "$AUTH" "$URL/api/v1/pages/facebook:bench" >/dev/null 2>&1 && break
  sleep 0.1
done
analysed() { curl -s "$URL/metrics" | awk '/^pagepulse_records_produced_total\{topic="posts.analysis"\}/ {print $2}'; }
rate() { # seconds -> posts/s over the phase
  local a b; a=$(analysed); sleep "$1"; b=$(analysed); python3 -c "print(round(($b - ${a:-0}) / $1))"; }
# Wait until processing is under way.
for _ in $(seq 1 600); do
  v=$(analysed); v=${v%.*}
  [ "${v:-0}" -gt 10000 ] && break
  sleep 0.1
done
for _ in $(seq 1 600); do
  curl -sf -H "$AUTH" "$URL/api/v1/pageviews/top/en/2026-12-05T10" >/dev/null 2>&1 && break
  sleep 0.1
done
# reads NAME PATH [ACCEPT]: a reader phase on PATH next to the processing rate, then a quiet phase.
QUIET=("$(rate "$PHASE")")
READS=()
reads() {
  wrk -t2 -c"$CONNS" -d"${PHASE}s" --latency -H "$AUTH" -H "Accept: ${3:-application/json}" "$URL$2" >"$WORK/wrk-$1.txt" &
  local w=$! busy
  busy=$(rate "$PHASE")
  wait $w
  QUIET+=("$(rate "$PHASE")")
  READS+=("$1|$2|${3:-application/json}|$busy")
}
# An open-loop load at a fixed rate: each wrk thread sends its share of RATE requests a second on a
# schedule (LuaJIT's ffi reads the monotonic clock), whatever the answers' latency.
cat >"$WORK/paced.lua" <<'EOF'
local ffi = require("ffi")
ffi.cdef [[ typedef struct { long tv_sec; long tv_nsec; } pp_timespec; int clock_gettime(int, pp_timespec *); ]]
local ts = ffi.new("pp_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local per_ms, t0, n
function init(args)
  per_ms = tonumber(os.getenv("RATE")) / 2 / 1000
end
function delay()
  local t = now_ms()
  if t0 == nil then t0, n = t, 0 end
  n = n + 1
  local wait = t0 + n / per_ms - t
  if wait > 0 then return wait end
  return 0
end
EOF
# paced NAME PATH: like `reads`, at RATE requests a second.
paced() {
  RATE="$RATE" wrk -t2 -c"$PCONNS" -d"${PHASE}s" --latency -s "$WORK/paced.lua" -H "$AUTH" -H "Accept: application/json" "$URL$2" >"$WORK/wrk-$1.txt" &
  local w=$! busy
  busy=$(rate "$PHASE")
  wait $w
  QUIET+=("$(rate "$PHASE")")
  READS+=("$1|$2|application/json, at $RATE/s|$busy")
}
paced figures-paced "/api/v1/pages/facebook:bench?series=false"
paced top25-paced "/api/v1/pageviews/top/en/2026-12-05T10"
reads figures "/api/v1/pages/facebook:bench?series=false"
reads page-series "/api/v1/pages/facebook:bench"
reads top25 "/api/v1/pageviews/top/en/2026-12-05T10"
reads top25-csv "/api/v1/pageviews/top/en/2026-12-05T10" "text/csv"
cat >"$WORK/post.lua" <<'EOF'
counter = 0
request = function()
  counter = counter + 1
  local body = '{"id":"w' .. counter .. '","content":"bench write #api"}'
  return wrk.format("POST", "/api/v1/posts", {["Content-Type"] = "application/json", ["Authorization"] = os.getenv("BEARER")}, body)
end
EOF
BEARER="Bearer $PAGEPULSE_WRITE_TOKEN" wrk -t2 -c"$WCONNS" -d"${PHASE}s" --latency -s "$WORK/post.lua" "$URL" >"$WORK/wrk-post.txt"
field() { grep -E "$1" "$2" | head -1 | awk '{print $2}'; }
echo "== scripts/bench_api.sh $PHASE (N=$N, $CONNS connections for reads, $WCONNS for writes)"
echo "processing without readers, posts/s, in order: ${QUIET[*]}"
i=0
for r in "${READS[@]}"; do
  IFS='|' read -r name path accept busy <<<"$r"
  f="$WORK/wrk-$name.txt"
  ratio=$(python3 -c "q = (${QUIET[$i]} + ${QUIET[$((i + 1))]}) / 2; print(round($busy / q, 3) if q else 'n/a (no backlog left)')")
  echo "GET $path ($accept): $(field '^Requests/sec' "$f") reads/s, p50 $(field '^ +50%' "$f"), p99 $(field '^ +99%' "$f"); $(grep -E 'Non-2xx' "$f" || echo 'all 2xx'); processing with these readers $busy posts/s, ratio $ratio"
  i=$((i + 1))
done
echo "POST /api/v1/posts (202 after the broker's ack): $(field '^Requests/sec' "$WORK/wrk-post.txt") writes/s, p50 $(field '^ +50%' "$WORK/wrk-post.txt"), p99 $(field '^ +99%' "$WORK/wrk-post.txt"); $(grep -E 'Non-2xx' "$WORK/wrk-post.txt" || echo 'all 2xx')"
echo "(work directory: $WORK)"
