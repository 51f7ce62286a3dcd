#!/usr/bin/env bash
# HTTP API benchmark (not part of the tests): while the posts pipeline works through a backlog at
# full rate, reads per second and latency (p50/p99) of one page's figures under wrk, and the
# processing rate with readers as a ratio to the same run without them (phases alternate:
# quiet, readers, quiet, so drift shows); then writes per second (POST /api/v1/posts, each
# answered 202 only after the broker's acknowledgement).
#
#   usage: scripts/bench_api.sh [PHASE_SECONDS]      (default 8)
#
# Environment: N (posts in the backlog, default 4000000), CONNS (wrk connections, default 16),
# BENCH_BUILD (1: cargo build --release first, default; 0: use target/release as it is).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
PHASE="${1:-8}"
N="${N:-4000000}"
CONNS="${CONNS:-16}"
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
export PAGEPULSE__pipelines__pages__enabled=false PAGEPULSE__pipelines__pageviews__enabled=false
export PAGEPULSE__http__read_rate=1000000.0 PAGEPULSE__http__read_burst=1000000
export PAGEPULSE__http__write_rate=1000000.0 PAGEPULSE__http__write_burst=1000000
"$BIN" topics create >/dev/null
# One page with a day of samples, so its figures and chart are a realistic answer.
python3 - <<EOF
from confluent_kafka import Producer
import datetime, json
p = Producer({"bootstrap.servers": "127.0.0.1:$BPORT"})
t0 = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=24)
for i in range(145):
    at = (t0 + datetime.timedelta(minutes=10 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p.produce("bench.fans.observations", key=b"facebook:bench",
              value=json.dumps({"platform": "facebook", "page_id": "bench", "fans": 1000 + i, "followers": 1200 + i, "observed_at": at}))
p.flush()
EOF
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
quiet1=$(rate "$PHASE")
wrk -t2 -c"$CONNS" -d"${PHASE}s" --latency -H "$AUTH" "$URL/api/v1/pages/facebook:bench" >"$WORK/wrk-page.txt" &
WRK=$!
busy=$(rate "$PHASE")
wait $WRK
quiet2=$(rate "$PHASE")
cat >"$WORK/post.lua" <<'EOF'
counter = 0
request = function()
  counter = counter + 1
  local body = '{"id":"w' .. counter .. '","content":"bench write #api"}'
  return wrk.format("POST", "/api/v1/posts", {["Content-Type"] = "application/json", ["Authorization"] = os.getenv("BEARER")}, body)
end
EOF
BEARER="Bearer $PAGEPULSE_WRITE_TOKEN" wrk -t2 -c"$CONNS" -d"${PHASE}s" --latency -s "$WORK/post.lua" "$URL" >"$WORK/wrk-post.txt"
field() { grep -E "$1" "$2" | head -1 | awk '{print $2}'; }
echo "== scripts/bench_api.sh $PHASE (N=$N, $CONNS connections)"
echo "processing, posts/s: quiet $quiet1, with readers $busy, quiet again $quiet2; ratio with/without readers: $(python3 -c "print(round($busy / (($quiet1 + $quiet2) / 2), 3))")"
echo "GET /api/v1/pages/{key} (a day of 10-minute samples): $(field '^Requests/sec' "$WORK/wrk-page.txt") reads/s, p50 $(field '^ +50%' "$WORK/wrk-page.txt"), p99 $(field '^ +99%' "$WORK/wrk-page.txt")"
echo "POST /api/v1/posts (202 after the broker's ack): $(field '^Requests/sec' "$WORK/wrk-post.txt") writes/s, p50 $(field '^ +50%' "$WORK/wrk-post.txt"), p99 $(field '^ +99%' "$WORK/wrk-post.txt"); $(grep -E 'Non-2xx' "$WORK/wrk-post.txt" || echo 'all 2xx')"
echo "(work directory: $WORK)"
