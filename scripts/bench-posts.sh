#!/usr/bin/env bash
# Posts throughput benchmark: posts analysed per second end to end through the broker, next to the
# raw rate at which the same topic can simply be read, on this machine, in the same run.
# Not part of the test suite (nothing runs it automatically); about a minute for the default N.
#
#   usage: scripts/bench-posts.sh [N]        (or N=... scripts/bench-posts.sh)
#
# Environment:
#   N                   posts to produce and process (default 1000000)
#   SIZE                approximate post value size in bytes (default 100)
#   BENCH_BUILD         1 (default): `cargo build --release` first (a no-op when up to date);
#                       0: use the existing target/release/pagepulse as it is
#   PAGEPULSE_BIN       the pagepulse binary to measure (default target/release/pagepulse, or
#                       $CARGO_TARGET_DIR/release/pagepulse when CARGO_TARGET_DIR is set), e.g. a
#                       copy of an older build for a before/after pair (then BENCH_BUILD=0)
#   BENCH_PASSTHROUGH   0: skip the passthrough reference (phase 5; it builds a bench with cargo)
#   BENCH_RUN_CONFIG    a config file given to `pagepulse run` only (`-c FILE`), e.g. to try
#                       [kafka.producer] settings
#   BENCH_POLL          seconds between /metrics polls in the pipeline phase (default 0.1)
#   BENCH_STALL         seconds without progress after which the pipeline counts as stalled (30)
#   BENCH_KEEP          1: keep the work directory (logs, metrics series); kept anyway on failure
#   APPS_CSV            an App Store catalogue (e.g. ../shared/data/AppleStore.csv) loaded before
#                       the pipeline phase, so that the apps pipeline matches every post against
#                       it next to the posts pipeline (the demo posts mention apps now and then)
#   APPS                0: run without the apps pipeline (default 1; with no catalogue it idles)
#   BENCH_FETCH_WAIT_MS unset (default): pagepulse's own consumer settings (fetch.wait.max.ms 10)
#                       for `pagepulse run` and `pagepulse consume`; the Python reader keeps
#                       librdkafka's 500 ms, at which tansu caps every reader near 150k/s (it
#                       holds a fetch for the full wait even when data is there). Set (e.g. 10):
#                       also set it for the Python reader and, through a generated config file
#                       ([kafka.consumer]), for pagepulse, and take the ratio against Python.
#
# Phases (one tansu broker, in-memory storage, on a free port; a unique topic prefix):
#   1. produce N posts with `pagepulse demo posts --rate 0`
#   2. raw read #1: `pagepulse consume posts -b -n N -f quiet` (plain librdkafka BaseConsumer) and
#      scripts/bench_read.py (Python confluent-kafka, assign() + batch consume) as an independent
#      reference; both time from the first record to the last
#   3. pipeline: `pagepulse run` with a fresh group; /metrics polled every BENCH_POLL seconds; the
#      rate is the counter delta of produced_total{topic="posts.analysis"} (broker acks) between
#      the first poll that saw consumption and the first poll that saw it reach N
#   4. raw read #2 (same as #1) to show drift; the raw rate for the ratio is the mean of #1 and #2
#   5. passthrough reference: benches/kafka_passthrough.rs reads every post and writes it back
#      unchanged on one thread with pagepulse's client settings: the clients' and broker's share
# CPU figures come from /proc/PID/stat (utime+stime) and /proc/stat deltas over each phase.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"

N="${1:-${N:-1000000}}"
SIZE="${SIZE:-100}"
BENCH_BUILD="${BENCH_BUILD:-1}"
POLL="${BENCH_POLL:-0.1}"
STALL="${BENCH_STALL:-30}"
KEEP="${BENCH_KEEP:-0}"
FETCH_WAIT="${BENCH_FETCH_WAIT_MS:-}"
BIN="${PAGEPULSE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/pagepulse}"
CMDLINE="$0 $*"
[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "N must be a positive integer, got '$N'" >&2; exit 2; }
[[ -z "$FETCH_WAIT" || "$FETCH_WAIT" =~ ^[0-9]+$ ]] || { echo "BENCH_FETCH_WAIT_MS must be a number" >&2; exit 2; }
[[ "$STALL" =~ ^[0-9]+$ ]] || { echo "BENCH_STALL must be whole seconds" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pagepulse-bench.XXXXXX")"
BROKER_PID=""
RUN_PID=""
FAILED=1
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
  if [[ "$FAILED" == 1 || "$KEEP" == 1 ]]; then
    echo "logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CLK_TCK="$(getconf CLK_TCK)"
NCPU="$(nproc)"
# The poll loop runs every 0.1 s on a 2-core machine, so these use bash builtins only (no forks).
# cpu_ticks VAR PID: VAR = utime+stime of PID in clock ticks (0 if it is gone).
cpu_ticks() {
  local line rest f
  if ! read -r line 2>/dev/null <"/proc/$2/stat"; then printf -v "$1" 0; return; fi
  rest="${line##*) }"
  read -r -a f <<<"$rest"
  printf -v "$1" '%s' "$(( f[11] + f[12] ))"
}
# sys_ticks VAR: busy ticks of the whole machine, all cores (user nice system irq softirq).
sys_ticks() {
  local cpu u n s i w q sq rest
  read -r cpu u n s i w q sq rest </proc/stat
  printf -v "$1" '%s' "$(( u + n + s + q + sq ))"
}
secs() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }
usecs() { local t="${1/./}"; echo "$((10#$t))"; }   # EPOCHREALTIME -> integer microseconds
# A /proc/PID/status field in MB (VmHWM, VmRSS).
status_mb() { awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
# The records/s figure and the record count of a "read N records ... R records/s" line.
rate_of() { sed -nE 's/.*: ([0-9.]+) records\/s.*/\1/p' <<<"$1" | tail -n 1; }
records_of() { sed -nE 's/.*read ([0-9]+) records.*/\1/p' <<<"$1" | tail -n 1; }

# ---- build -------------------------------------------------------------------------------------
if [[ "$BENCH_BUILD" == 1 ]]; then
  log "cargo build --release (a no-op when up to date)"
  cargo build --release --quiet
fi
[[ -x "$BIN" ]] || { echo "$BIN is missing (run cargo build --release)" >&2; exit 1; }
GIT_REV="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
BIN_MTIME="$(date -u -r "$BIN" +%Y-%m-%dT%H:%M:%SZ)"

# ---- broker and topics -------------------------------------------------------------------------
BROKER_PORT="${BENCH_BROKER_PORT:-$(free_port)}"
HTTP_PORT="${BENCH_HTTP_PORT:-$(free_port)}"
PREFIX="bench$$."
export PAGEPULSE_BROKERS="127.0.0.1:$BROKER_PORT"
export PAGEPULSE_TOPIC_PREFIX="$PREFIX"
export PAGEPULSE_GROUP_ID="bench$$-run"
export PAGEPULSE_HTTP_LISTEN="127.0.0.1:$HTTP_PORT"
export PAGEPULSE_LOG="${PAGEPULSE_LOG:-info}"
unset PAGEPULSE_CONFIG
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
log "starting tansu on 127.0.0.1:$BROKER_PORT (work dir $WORK)"
command -v tansu >/dev/null || scripts/install-tansu.sh
BROKER_PID="$(scripts/broker.sh "$BROKER_PORT" "$WORK/tansu.log")"
"$BIN" topics create >"$WORK/topics.log" 2>&1 || { cat "$WORK/topics.log" >&2; exit 1; }
[[ "${APPS:-1}" == 0 ]] && export PAGEPULSE__pipelines__apps__enabled=false
export PAGEPULSE__pipelines__messages__enabled=false
if [[ -n "${APPS_CSV:-}" ]]; then
  log "loading the app catalogue $APPS_CSV"
  "$BIN" ingest apps --quiet "$APPS_CSV" >"$WORK/apps.log" 2>&1 || { cat "$WORK/apps.log" >&2; exit 1; }
fi

RUN_ARGS=(run)
PY_EXTRA=()
if [[ -n "$FETCH_WAIT" ]]; then
  [[ -z "${BENCH_RUN_CONFIG:-}" ]] || { echo "BENCH_FETCH_WAIT_MS and BENCH_RUN_CONFIG do not combine" >&2; exit 2; }
  printf '[kafka.consumer]\n"fetch.wait.max.ms" = "%s"\n' "$FETCH_WAIT" >"$WORK/bench.toml"
  RUN_ARGS=(-c "$WORK/bench.toml" run)
  PY_EXTRA=(-X "fetch.wait.max.ms=$FETCH_WAIT")
elif [[ -n "${BENCH_RUN_CONFIG:-}" ]]; then
  RUN_ARGS=(-c "$BENCH_RUN_CONFIG" run)
fi

# ---- 1. produce --------------------------------------------------------------------------------
log "producing $N posts of ~$SIZE bytes"
PRODUCE_CMD="pagepulse demo posts --rate 0 --count $N --size $SIZE --id-prefix b"
"$BIN" demo posts --rate 0 --count "$N" --size "$SIZE" --id-prefix b >"$WORK/produce.log" 2>&1 \
  || { cat "$WORK/produce.log" >&2; exit 1; }
PRODUCE_LINE="$(grep -E '^produced ' "$WORK/produce.log" | tail -n 1)"
PRODUCE_RATE="$(sed -nE 's/.*: ([0-9.]+)\/s.*/\1/p' <<<"$PRODUCE_LINE")"
PRODUCE_SECS="$(sed -nE 's/.* in ([0-9.]+) s:.*/\1/p' <<<"$PRODUCE_LINE")"
log "$PRODUCE_LINE"

# ---- raw reads ---------------------------------------------------------------------------------
READ_CMD="pagepulse consume posts -b -n $N -f quiet"
PY_CMD="python3 scripts/bench_read.py $PAGEPULSE_BROKERS ${PREFIX}posts $N${PY_EXTRA[*]:+ ${PY_EXTRA[*]}}"
# one_read NAME TAG CMD...: runs a reader, checks it read N records, sets <NAME>_<TAG>_{RS,LINE,CPU}.
one_read() {
  local name="$1" tag="$2" line n tb0 tb1
  shift 2
  tb0=0; tb1=0
  cpu_ticks tb0 "$BROKER_PID"
  /usr/bin/time -f 'reader CPU %U s user + %S s sys, max RSS %M kB' -o "$WORK/$name$tag.time" \
    timeout 300 "$@" >"$WORK/$name$tag.log" 2>&1 || { cat "$WORK/$name$tag.log" >&2; exit 1; }
  cpu_ticks tb1 "$BROKER_PID"
  line="$(grep -E '^read [0-9]+ records' "$WORK/$name$tag.log" | tail -n 1)"
  n="$(records_of "$line")"
  [[ "$n" == "$N" ]] || { echo "$name read #$tag got ${n:-no} records of $N: $line" >&2; exit 1; }
  printf -v "${name}_${tag}_RS" '%s' "$(rate_of "$line")"
  printf -v "${name}_${tag}_LINE" '%s' "$line"
  printf -v "${name}_${tag}_CPU" '%s; tansu CPU %s s' "$(cat "$WORK/$name$tag.time")" "$(secs $((tb1 - tb0)))"
  log "  $line"
}
raw_read() {
  log "raw read #$1: $READ_CMD"
  one_read RAW "$1" "$BIN" consume posts -b -n "$N" -f quiet --idle-timeout 15s
  log "raw read #$1 (python): $PY_CMD"
  one_read PY "$1" python3 "$ROOT/scripts/bench_read.py" "$PAGEPULSE_BROKERS" "${PREFIX}posts" "$N" \
    --timeout 240 "${PY_EXTRA[@]}"
}
raw_read 1

# ---- 3. pipeline -------------------------------------------------------------------------------
RUN_CMD="pagepulse ${RUN_ARGS[*]}   (fresh PAGEPULSE_GROUP_ID=$PAGEPULSE_GROUP_ID)"
[[ -n "$FETCH_WAIT" ]] && RUN_CMD+="; config: [kafka.consumer] \"fetch.wait.max.ms\" = \"$FETCH_WAIT\""
log "pipeline: $RUN_CMD; polling http://$PAGEPULSE_HTTP_LISTEN/metrics every ${POLL}s"
SERIES="$WORK/series.tsv"   # time consumed produced pagepulse-ticks tansu-ticks machine-busy-ticks
: >"$SERIES"
T_LAUNCH="$EPOCHREALTIME"
"$BIN" "${RUN_ARGS[@]}" >"$WORK/run.log" 2>&1 &
RUN_PID=$!
STATUS="ok"
consumed=0 produced=0 last_produced=-1 last_consumed=-1
last_progress_us="$(usecs "$T_LAUNCH")"
T0="" T1=""
metrics=""
pc=0 bc=0 sc=0
while :; do
  if ! kill -0 "$RUN_PID" 2>/dev/null; then STATUS="FAILED: pagepulse exited during the pipeline phase"; break; fi
  now="$EPOCHREALTIME"
  if metrics="$(curl -s --max-time 2 "http://$PAGEPULSE_HTTP_LISTEN/metrics")"; then
    c="" p=""
    while IFS= read -r l; do
      case "$l" in
        'pagepulse_records_consumed_total{topic="posts"} '*) c="${l##* }" ;;
        'pagepulse_records_produced_total{topic="posts.analysis"} '*) p="${l##* }" ;;
      esac
    done <<<"$metrics"
    consumed="${c:-0}"; produced="${p:-0}"
    consumed="${consumed%%.*}"; produced="${produced%%.*}"
    cpu_ticks pc "$RUN_PID"; cpu_ticks bc "$BROKER_PID"; sys_ticks sc
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$now" "$consumed" "$produced" "$pc" "$bc" "$sc" >>"$SERIES"
    if [[ -z "$T0" && "$consumed" -gt 0 ]]; then
      T0="$now"; P0="$produced"; PC0="$pc"; BC0="$bc"; SC0="$sc"
      log "  first consumption seen: consumed=$consumed produced=$produced"
    fi
    if [[ "$produced" -ge "$N" ]]; then
      T1="$now"; P1="$produced"; PC1="$pc"; BC1="$bc"; SC1="$sc"
      break
    fi
    if [[ "$produced" != "$last_produced" || "$consumed" != "$last_consumed" ]]; then
      last_produced="$produced"; last_consumed="$consumed"; last_progress_us="$(usecs "$now")"
    fi
  fi
  if (( $(usecs "$now") - last_progress_us > STALL * 1000000 )); then
    STATUS="STALLED: no progress for ${STALL}s (consumed=$consumed produced=$produced of $N)"
    break
  fi
  sleep "$POLL"
done
RUN_WALL="$(awk -v a="$T_LAUNCH" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')"
THREADS="" RUN_HWM="?" RUN_CPU="?"
if kill -0 "$RUN_PID" 2>/dev/null; then
  RUN_HWM="$(status_mb "$RUN_PID" VmHWM)"
  cpu_ticks t "$RUN_PID"; RUN_CPU="$(secs "$t")"
  # Cumulative CPU seconds by thread name, to see where pagepulse's time went.
  THREADS="$(for d in /proc/"$RUN_PID"/task/*; do
      read -r name <"$d/comm" 2>/dev/null || continue
      cpu_ticks t "${d#/proc/}" ; printf '%s\t%s\n' "$t" "$name"
    done | awk -F'\t' -v hz="$CLK_TCK" '{ a[$2] += $1; c[$2]++ }
      END { for (k in a) printf "%6.2f s  %s (%d threads)\n", a[k] / hz, k, c[k] }' \
    | sort -rn | head -n 8)"
  if [[ "$STATUS" != ok ]]; then
    log "$STATUS; last metrics:"
    grep -E '^pagepulse_(records|mailbox|assigned|tasks|dead)' <<<"$metrics" >&2 || true
  fi
  log "stopping pagepulse (SIGTERM)"
  t_stop="$EPOCHREALTIME"
  kill -TERM "$RUN_PID"
  rc=0; wait "$RUN_PID" || rc=$?
  STOP_INFO="exit code $rc $(awk -v a="$t_stop" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s after SIGTERM"
else
  rc=0; wait "$RUN_PID" || rc=$?
  STOP_INFO="exited on its own with code $rc (see $WORK/run.log)"
  [[ "$STATUS" == ok ]] && STATUS="FAILED: pagepulse exited during the pipeline phase"
fi
RUN_PID=""
BROKER_RSS_MID="$(status_mb "$BROKER_PID" VmRSS)"

# ---- 4. raw read #2 ----------------------------------------------------------------------------
raw_read 2
BROKER_HWM="$(status_mb "$BROKER_PID" VmHWM)"

# ---- 5. passthrough reference -------------------------------------------------------------------
# Consume every post and produce it unchanged on one thread (pagepulse's client settings, no
# processing): what the Kafka clients and the broker alone cost for a read-and-write-back.
PT_OUT=""
if [[ "${BENCH_PASSTHROUGH:-1}" == 1 ]]; then
  log "passthrough reference: cargo bench --bench kafka_passthrough"
  PT_OUT="$(cargo bench --quiet --bench kafka_passthrough -- "$PAGEPULSE_BROKERS" "${PREFIX}posts" "${PREFIX}posts.analysis" "$N" 2>"$WORK/passthrough.log" | grep passthrough || true)"
fi
PT_RS="$(rate_of "$PT_OUT")"
PT_RS="${PT_RS%.*}"
[[ -n "$PT_RS" ]] || PT_RS="n/a"

# ---- figures -----------------------------------------------------------------------------------
mean() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (a + b) / 2 }'; }
RAW_MEAN="$(mean "$RAW_1_RS" "$RAW_2_RS")"
PY_MEAN="$(mean "$PY_1_RS" "$PY_2_RS")"
PIPE_RS="n/a" PIPE_SECS="n/a" PIPE_STEADY="n/a" RATIO="n/a" RATIO_PY="n/a" RATIO_PT="n/a" CPU_SHARE="n/a" CONSUME_DONE="n/a"
if [[ "$STATUS" == ok && -n "$T0" && -n "$T1" ]]; then
  PIPE_SECS="$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f", b - a }')"
  PIPE_RS="$(awk -v a="$T0" -v b="$T1" -v p0="$P0" -v p1="$P1" 'BEGIN { printf "%.0f", (p1 - p0) / (b - a) }')"
  RATIO="$(awk -v p="$PIPE_RS" -v r="$RAW_MEAN" 'BEGIN { printf "%.0f%%", 100 * p / r }')"
  RATIO_PY="$(awk -v p="$PIPE_RS" -v r="$PY_MEAN" 'BEGIN { printf "%.0f%%", 100 * p / r }')"
  RATIO_PT="n/a"
  [[ "$PT_RS" != n/a ]] && RATIO_PT="$(awk -v p="$PIPE_RS" -v r="$PT_RS" 'BEGIN { printf "%.0f%%", 100 * p / r }')"
  CPU_SHARE="$(awk -v a="$T0" -v b="$T1" -v p="$((PC1 - PC0))" -v t="$((BC1 - BC0))" -v s="$((SC1 - SC0))" \
    -v hz="$CLK_TCK" -v nc="$NCPU" 'BEGIN { d = b - a; p /= hz; t /= hz; s /= hz; o = s - p - t;
      printf "pagepulse %.0f%%, tansu %.0f%%, everything else (this script, other work) %.0f%%, idle %.0f%%\n", 100*p/d, 100*t/d, 100*o/d, 100*nc - 100*s/d;
      printf "                (%% of one core, %d cores = %d%%; CPU seconds in the %.2f s window: %.2f / %.2f / %.2f)", nc, 100*nc, d, p, t, o }')"
  # Steady state: interpolated times at which produced crossed 10% and 90% of N.
  PIPE_STEADY="$(awk -F'\t' -v n="$N" '
    function cross(target) { return pt + (target - pp) * ($1 - pt) / ($3 - pp) }
    NR > 1 && !a && $3 >= 0.1 * n && $3 > pp { ta = cross(0.1 * n); a = 1 }
    NR > 1 && !b && $3 >= 0.9 * n && $3 > pp { tb = cross(0.9 * n); b = 1 }
    { pt = $1; pp = $3 }
    END { if (a && b && tb > ta) printf "%.0f", 0.8 * n / (tb - ta); else print "n/a" }' "$SERIES")"
  CONSUME_DONE="$(awk -F'\t' -v n="$N" -v t0="$T0" '$2 >= n { printf "%.2f", $1 - t0; exit }' "$SERIES")"
fi
STARTUP="n/a"
[[ -n "$T0" ]] && STARTUP="$(awk -v a="$T_LAUNCH" -v b="$T0" 'BEGIN { printf "%.2f", b - a }')"
if [[ -n "$FETCH_WAIT" ]]; then
  RATIO_LINE="pipeline / python read mean (fetch.wait.max.ms=$FETCH_WAIT)   = $RATIO_PY   (target >= 50%)
                pipeline / pagepulse consume mean (librdkafka defaults) = $RATIO   (not like for like)"
else
  RATIO_LINE="pipeline / raw read mean (pagepulse consume) = $RATIO   (target >= 50%)
                pipeline / passthrough reference             = $RATIO_PT   (one thread reads + writes back, no processing: $PT_RS records/s)
                pipeline / python read mean                  = $RATIO_PY   (librdkafka defaults: tansu holds fetches 500 ms)"
fi

cat <<EOF

================ pagepulse posts benchmark ================
date            $(date -u +%Y-%m-%dT%H:%M:%SZ); $NCPU cores, $(awk '/MemTotal/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); load average at start $LOADAVG_START
source          $GIT_REV (binary $BIN, built $BIN_MTIME)
broker          $(tansu --version 2>/dev/null | head -n 1), in-memory storage, 127.0.0.1:$BROKER_PORT; topic ${PREFIX}posts (4 partitions)
N               $N posts, value ~$SIZE bytes
command         $CMDLINE   (BENCH_BUILD=$BENCH_BUILD BENCH_POLL=$POLL BENCH_FETCH_WAIT_MS=${FETCH_WAIT:-unset})

produce         $(printf '%8s' "$PRODUCE_RATE") records/s  ($PRODUCE_SECS s)   $PRODUCE_CMD
raw read #1     $(printf '%8s' "$RAW_1_RS") records/s  $READ_CMD
                    $RAW_1_LINE
                    $RAW_1_CPU
raw read #2     $(printf '%8s' "$RAW_2_RS") records/s
                    $RAW_2_LINE
                    $RAW_2_CPU
raw read mean   $(printf '%8s' "$RAW_MEAN") records/s
python #1       $(printf '%8s' "$PY_1_RS") records/s  $PY_CMD
                    $PY_1_LINE
                    $PY_1_CPU
python #2       $(printf '%8s' "$PY_2_RS") records/s
                    $PY_2_LINE
                    $PY_2_CPU
python mean     $(printf '%8s' "$PY_MEAN") records/s

pipeline        $RUN_CMD
  status        $STATUS
  end to end    $(printf '%8s' "$PIPE_RS") records/s  (posts.analysis acks, first consumption -> all N acked: $PIPE_SECS s)
  steady 10-90% $(printf '%8s' "$PIPE_STEADY") records/s
  timing        all consumed ${CONSUME_DONE} s after first consumption; launch -> first consumption ${STARTUP} s; run phase ${RUN_WALL} s
  CPU share     $CPU_SHARE
  pagepulse     peak RSS (VmHWM) ${RUN_HWM} MB, CPU ${RUN_CPU} s in total; stop: $STOP_INFO
  tansu         RSS after the pipeline ${BROKER_RSS_MID} MB, peak ${BROKER_HWM} MB
  pagepulse CPU by thread name:
$(sed 's/^/                /' <<<"${THREADS:-n/a}")

RATIO           $RATIO_LINE
===========================================================
EOF

[[ "$STATUS" == ok ]] || exit 1
FAILED=0
