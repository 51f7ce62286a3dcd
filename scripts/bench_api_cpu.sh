#!/usr/bin/env bash
# What reads cost in CPU (not part of the tests): with nothing else running, wrk sends RATE
# requests a second (open loop, the schedule of scripts/bench_api.sh) to PATH for SECONDS; the
# script prints the cores pagepulse used while idle and while answering, and the cores wrk used,
# from each process's own counters (/proc/PID/stat, utime + stime).
#
#   usage: scripts/bench_api_cpu.sh PATH [RATE] [SECONDS]     (defaults 20000 and 10)
#
# Environment: PCONNS (wrk connections, default 64), BIN (default target/release/pagepulse; build
# it first with cargo build --release). The data set is bench_api.sh's: page facebook:bench with a
# day of samples and the top 25 of domain en for 2026-12-05T10.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RATE="${2:-20000}"
SECS="${3:-10}"
export PATH="$HOME/.cargo/bin:$PATH"
BIN=${BIN:-$ROOT/target/release/pagepulse}
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pagepulse-bench-api-cpu.XXXXXX")"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BPORT=$(free_port); HPORT=$(free_port)
(cd "$WORK" && exec tansu broker --listener-url "tcp://127.0.0.1:$BPORT" --advertised-listener-url "tcp://127.0.0.1:$BPORT" --storage-engine memory://tansu/ >/dev/null 2>&1) &
PIDS+=($!)
sleep 0.5
export PAGEPULSE_BROKERS="127.0.0.1:$BPORT" PAGEPULSE_TOPIC_PREFIX="bench." PAGEPULSE_GROUP_ID="bench"
export PAGEPULSE_HTTP_LISTEN="127.0.0.1:$HPORT" PAGEPULSE_WRITE_TOKEN="bench-token-0123456789abcdef"
export PAGEPULSE__pipelines__pages__enabled=false
export PAGEPULSE__http__read_rate=1000000.0 PAGEPULSE__http__read_burst=1000000
"$BIN" topics create >/dev/null
python3 scripts/bench_api_seed.py "127.0.0.1:$BPORT" "$PAGEPULSE_TOPIC_PREFIX"
"$BIN" run >"$WORK/pagepulse.log" 2>&1 &
PP=$!; PIDS+=($PP)
AUTH="Authorization: Bearer $PAGEPULSE_WRITE_TOKEN"
URL="http://127.0.0.1:$HPORT"
for _ in $(seq 1 600); do curl -sf -H "$AUTH" "$URL$1" >/dev/null 2>&1 && break; sleep 0.1; done
sed -n '/^cat >"\$WORK\/paced.lua"/,/^EOF$/p' scripts/bench_api.sh | sed '1d;$d' > $WORK/paced.lua
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)
a=$(ticks $PP); sleep 3; b=$(ticks $PP); echo "pagepulse idle: $(python3 -c "print(round(($b - $a) / $HZ / 3, 3))") cores"
RATE=$RATE wrk -t2 -c"${PCONNS:-64}" -d"${SECS}s" --latency -s $WORK/paced.lua -H "$AUTH" "$URL$1" > $WORK/wrk.txt &
W=$!
sleep 1
a=$(ticks $PP); wa=$(ticks $W); sleep $((SECS - 2)); b=$(ticks $PP); wb=$(ticks $W)
wait $W
echo "GET $1 at $RATE/s: pagepulse $(python3 -c "print(round(($b - $a) / $HZ / ($SECS - 2), 3))") cores, wrk $(python3 -c "print(round(($wb - $wa) / $HZ / ($SECS - 2), 3))") cores"
grep -E "Requests/sec|50%|99%" $WORK/wrk.txt
