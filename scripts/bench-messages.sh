#!/usr/bin/env bash
# Messages throughput benchmark: messages counted per second end to end through the broker, next
# to the raw rate at which the same topic can simply be read, on this machine, in the same run.
# Not part of the test suite (nothing runs it automatically); about a minute for the default N.
#
#   usage: scripts/bench-messages.sh [N]        (or N=... scripts/bench-messages.sh)
#
# Environment:
#   N            messages to produce and count (default 1000000)
#   USERS        distinct users writing them (default 20000)
#   BENCH_BUILD  1 (default): `cargo build --release` first; 0: use target/release/pagepulse as is
#   BENCH_POLL   seconds between /metrics polls in the pipeline phase (default 0.1)
#   BENCH_STALL  seconds without progress after which the pipeline counts as stalled (30)
#   BENCH_KEEP   1: keep the work directory (logs, metrics series); kept anyway on failure
#
# Phases (one tansu broker, in-memory storage, on a free port; a unique topic prefix):
#   1. produce N messages with `pagepulse demo messages --rate 0` (event time: now)
#   2. raw read #1: `pagepulse consume messages -b -n N -f quiet` (a plain librdkafka consumer with
#      pagepulse's settings), from the first record to the last
#   3. pipeline: `pagepulse run` with only the messages pipeline, a fresh group, durable state;
#      the rate is the delta of pagepulse_end_to_end_latency_seconds_count{pipeline="messages"}
#      (records whose every effect, the changelog flush included, the broker acknowledged) from the
#      first poll that saw consumption to the first poll that saw it reach N
#   4. raw read #2 (same as #1) to show drift; the raw rate for the ratio is their mean
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

N="${1:-${N:-1000000}}"
USERS="${USERS:-20000}"
BENCH_BUILD="${BENCH_BUILD:-1}"
POLL="${BENCH_POLL:-0.1}"
STALL="${BENCH_STALL:-30}"
KEEP="${BENCH_KEEP:-0}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pagepulse"
CMDLINE="$0 $*"
[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "N must be a positive integer, got '$N'" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pagepulse-bench-messages.XXXXXX")"
BROKER_PID="" RUN_PID="" FAILED=1
stop_pid() { # PID SIGNAL: signal, wait up to 5 s, then SIGKILL
  kill -0 "$1" 2>/dev/null || return 0
  kill "-$2" "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  [[ -n "$RUN_PID" ]] && stop_pid "$RUN_PID" TERM
  [[ -n "$BROKER_PID" ]] && stop_pid "$BROKER_PID" TERM
  if [[ "$FAILED" == 1 || "$KEEP" == 1 ]]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { # VAR PID: utime+stime of PID in clock ticks (0 if it is gone); builtins only
  local line rest f
  if ! read -r line 2>/dev/null <"/proc/$2/stat"; then printf -v "$1" 0; return; fi
  rest="${line##*) }"
  read -r -a f <<<"$rest"
  printf -v "$1" '%s' "$(( f[11] + f[12] ))"
}
secs() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }
usecs() { local t="${1/./}"; echo "$((10#$t))"; }
status_mb() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
rate_of() { sed -nE 's/.*: ([0-9.]+) records\/s.*/\1/p' <<<"$1" | tail -n 1; }
records_of() { sed -nE 's/.*read ([0-9]+) records.*/\1/p' <<<"$1" | tail -n 1; }

if [[ "$BENCH_BUILD" == 1 ]]; then
  log "cargo build --release (a no-op when up to date)"
  cargo build --release --quiet
fi
[[ -x "$BIN" ]] || { echo "$BIN is missing (run cargo build --release)" >&2; exit 1; }
GIT_REV="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"

BROKER_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
PREFIX="benchm$$."
export PAGEPULSE_BROKERS="127.0.0.1:$BROKER_PORT"
export PAGEPULSE_TOPIC_PREFIX="$PREFIX"
export PAGEPULSE_GROUP_ID="benchm$$-run"
export PAGEPULSE_HTTP_LISTEN="127.0.0.1:$HTTP_PORT"
export PAGEPULSE_LOG="${PAGEPULSE_LOG:-info}"
unset PAGEPULSE_CONFIG
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "starting tansu on 127.0.0.1:$BROKER_PORT (work dir $WORK)"
command -v tansu >/dev/null || scripts/install-tansu.sh
BROKER_PID="$(scripts/broker.sh "$BROKER_PORT" "$WORK/tansu.log")"
"$BIN" topics create >"$WORK/topics.log" 2>&1 || { cat "$WORK/topics.log" >&2; exit 1; }

# ---- 1. produce --------------------------------------------------------------------------------
PRODUCE_CMD="pagepulse demo messages --rate 0 --count $N --users $USERS"
log "producing: $PRODUCE_CMD"
"$BIN" demo messages --rate 0 --count "$N" --users "$USERS" >"$WORK/produce.log" 2>&1 \
  || { cat "$WORK/produce.log" >&2; exit 1; }
PRODUCE_LINE="$(grep -E '^produced ' "$WORK/produce.log" | tail -n 1)"
log "$PRODUCE_LINE"

# ---- raw reads ---------------------------------------------------------------------------------
READ_CMD="pagepulse consume messages -b -n $N -f quiet"
raw_read() {
  local line n tb0=0 tb1=0
  log "raw read #$1: $READ_CMD"
  cpu_ticks tb0 "$BROKER_PID"
  /usr/bin/time -f 'reader CPU %U s user + %S s sys' -o "$WORK/raw$1.time" \
    timeout 300 "$BIN" consume messages -b -n "$N" -f quiet --idle-timeout 15s >"$WORK/raw$1.log" 2>&1 \
    || { cat "$WORK/raw$1.log" >&2; exit 1; }
  cpu_ticks tb1 "$BROKER_PID"
  line="$(grep -E '^read [0-9]+ records' "$WORK/raw$1.log" | tail -n 1)"
  n="$(records_of "$line")"
  [[ "$n" == "$N" ]] || { echo "raw read #$1 got ${n:-no} records of $N: $line" >&2; exit 1; }
  printf -v "RAW_$1_RS" '%s' "$(rate_of "$line")"
  printf -v "RAW_$1_LINE" '%s; %s; tansu CPU %s s' "$line" "$(cat "$WORK/raw$1.time")" "$(secs $((tb1 - tb0)))"
  log "  $line"
}
raw_read 1

# ---- 3. pipeline -------------------------------------------------------------------------------
export PAGEPULSE__pipelines__posts__enabled=false PAGEPULSE__pipelines__pages__enabled=false
export PAGEPULSE__pipelines__fans__enabled=false PAGEPULSE__pipelines__pageviews__enabled=false
RUN_CMD="pagepulse run (only [pipelines.messages] enabled; fresh group $PAGEPULSE_GROUP_ID)"
log "pipeline: $RUN_CMD"
SERIES="$WORK/series.tsv"
: >"$SERIES"
T_LAUNCH="$EPOCHREALTIME"
"$BIN" run >"$WORK/run.log" 2>&1 &
RUN_PID=$!
STATUS="ok" T0="" T1="" done_n=0 consumed=0 last_progress_us="$(usecs "$T_LAUNCH")" last="" pc=0 bc=0
while :; do
  if ! kill -0 "$RUN_PID" 2>/dev/null; then STATUS="FAILED: pagepulse exited during the pipeline phase"; break; fi
  now="$EPOCHREALTIME"
  if metrics="$(curl -s --max-time 2 "http://$PAGEPULSE_HTTP_LISTEN/metrics")"; then
    c="" d="" s=""
    while IFS= read -r l; do
      case "$l" in
        'pagepulse_records_consumed_total{topic="messages"} '*) c="${l##* }" ;;
        'pagepulse_end_to_end_latency_seconds_count{pipeline="messages"} '*) d="${l##* }" ;;
        'pagepulse_records_produced_total{topic="messages.stats"} '*) s="${l##* }" ;;
      esac
    done <<<"$metrics"
    consumed="${c:-0}"; done_n="${d:-0}"; STATS="${s:-0}"
    consumed="${consumed%%.*}"; done_n="${done_n%%.*}"
    cpu_ticks pc "$RUN_PID"; cpu_ticks bc "$BROKER_PID"
    printf '%s\t%s\t%s\t%s\t%s\n' "$now" "$consumed" "$done_n" "$pc" "$bc" >>"$SERIES"
    if [[ -z "$T0" && "$consumed" -gt 0 ]]; then T0="$now"; D0="$done_n"; PC0="$pc"; BC0="$bc"; fi
    if [[ "$done_n" -ge "$N" ]]; then T1="$now"; D1="$done_n"; PC1="$pc"; BC1="$bc"; break; fi
    if [[ "$consumed/$done_n" != "$last" ]]; then last="$consumed/$done_n"; last_progress_us="$(usecs "$now")"; fi
  fi
  if (( $(usecs "$now") - last_progress_us > STALL * 1000000 )); then
    STATUS="STALLED: no progress for ${STALL}s (consumed=$consumed counted=$done_n of $N)"
    break
  fi
  sleep "$POLL"
done
RUN_HWM="$(status_mb "$RUN_PID" VmHWM)"
log "stopping pagepulse (SIGTERM)"
stop_pid "$RUN_PID" TERM
RUN_PID=""

# ---- 4. raw read #2 ----------------------------------------------------------------------------
raw_read 2

RAW_MEAN="$(awk -v a="$RAW_1_RS" -v b="$RAW_2_RS" 'BEGIN { printf "%.0f", (a + b) / 2 }')"
PIPE_RS="n/a" PIPE_SECS="n/a" RATIO="n/a" STEADY="n/a" CPU="n/a"
if [[ "$STATUS" == ok ]]; then
  PIPE_SECS="$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f", b - a }')"
  PIPE_RS="$(awk -v a="$T0" -v b="$T1" -v p0="$D0" -v p1="$D1" 'BEGIN { printf "%.0f", (p1 - p0) / (b - a) }')"
  RATIO="$(awk -v p="$PIPE_RS" -v r="$RAW_MEAN" 'BEGIN { printf "%.0f%%", 100 * p / r }')"
  STEADY="$(awk -F'\t' -v n="$N" '
    function cross(target) { return pt + (target - pp) * ($1 - pt) / ($3 - pp) }
    NR > 1 && !a && $3 >= 0.1 * n && $3 > pp { ta = cross(0.1 * n); a = 1 }
    NR > 1 && !b && $3 >= 0.9 * n && $3 > pp { tb = cross(0.9 * n); b = 1 }
    { pt = $1; pp = $3 }
    END { if (a && b && tb > ta) printf "%.0f", 0.8 * n / (tb - ta); else print "n/a" }' "$SERIES")"
  CPU="pagepulse $(secs $((PC1 - PC0))) s, tansu $(secs $((BC1 - BC0))) s of CPU in the $PIPE_SECS s window"
fi

cat <<EOT

================ pagepulse messages benchmark ================
date            $(date -u +%Y-%m-%dT%H:%M:%SZ); $(nproc) cores, $(uname -sr); load average at start $LOADAVG_START
source          $GIT_REV
broker          $(tansu --version 2>/dev/null | head -n 1), in-memory storage; topic ${PREFIX}messages (4 partitions)
command         $CMDLINE   (USERS=$USERS BENCH_POLL=$POLL)
produce         $PRODUCE_LINE   ($PRODUCE_CMD)
raw read #1     $(printf '%8s' "$RAW_1_RS") records/s  $READ_CMD
                    $RAW_1_LINE
raw read #2     $(printf '%8s' "$RAW_2_RS") records/s
                    $RAW_2_LINE
raw read mean   $(printf '%8s' "$RAW_MEAN") records/s
pipeline        $RUN_CMD
  status        $STATUS
  end to end    $(printf '%8s' "$PIPE_RS") messages/s  (first consumption -> every message's effect acknowledged: $PIPE_SECS s)
  steady 10-90% $(printf '%8s' "$STEADY") messages/s
  CPU           $CPU; peak RSS ${RUN_HWM} MB
  minutes       ${STATS:-0} messages.stats records written
RATIO           pipeline / raw read mean = $RATIO
==============================================================
EOT
[[ "$STATUS" == ok ]] || exit 1
FAILED=0
