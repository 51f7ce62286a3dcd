#!/usr/bin/env bash
# Backfill benchmark (issue 15; not part of the tests): a job of HOURS real-size hours downloaded
# from a local mirror, through a tansu broker (in memory) and a release pagepulse, side by side on
# this machine.
#
# 1. `pagepulse demo pageviews-dump --gzip` writes HOURS hours of LINES lines over DOMAINS domains
#    (gzipped, as Wikimedia publishes them), laid out as dumps.wikimedia.org/other/pageviews is:
#    {YYYY}/{YYYY-MM}/pageviews-{YYYYMMDD}-{HH}0000.gz, the time being the END of the hour.
# 2. `python3 -m http.server` serves that tree (threaded: backfill_concurrency downloads at once).
# 3. `pagepulse run` (only the pageviews pipeline) with dump_mirror pointing there; the job is
#    submitted with POST /api/v1/pageviews/reports and its report polled until it ends.
# 4. Figures, all from timestamps pagepulse wrote (its job and hour documents, and the Kafka
#    timestamps of the `pageviews.top` and `pageviews.jobs` records, read with `pagepulse consume`):
#    - hours per minute: hours done / (job's first download start -> last hour finished);
#    - lines per second: lines ingested (hour documents' `lines`) / (first download start -> last
#      hour's last line produced);
#    - per hour, from its last line produced to its final records: "last line" is the hour
#      document's `ingested_at` when pagepulse writes one, else the first `pageviews.jobs` record
#      of the hour with status `ingesting` (downloaded, last records acknowledged); "final records"
#      is the newest Kafka timestamp of the hour's `pageviews.top` records (one per domain), and
#      the hour document's `finished_at` is shown next to it.
#    Peak RSS (VmHWM) and CPU seconds of `pagepulse run` from /proc.
#
#   usage: scripts/bench_backfill.sh
#
# Environment: LINES (per hour, default 6000000: a real hour of all Wikimedia projects), DOMAINS
# (default 20), HOURS (default 3), START (first hour, default 2024-03-10T00), CONCURRENCY
# (backfill_concurrency, default: pagepulse's, 2), BENCH_BUILD (1: cargo build --release first,
# default; 0: use the release binary as it is), CARGO_TARGET_DIR (where that binary is, default
# ./target), KEEP_DUMPS (a directory to generate the dumps into once and reuse; default: a fresh
# temporary directory).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
LINES="${LINES:-6000000}"
DOMAINS="${DOMAINS:-20}"
HOURS="${HOURS:-3}"
START="${START:-2024-03-10T00}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pagepulse"
[ "${BENCH_BUILD:-1}" = 1 ] && cargo build --release --quiet
[ -x "$BIN" ] || { echo "no release binary at $BIN (BENCH_BUILD=1 builds it)" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is not installed" >&2; exit 2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pagepulse-bench-backfill.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  echo "logs in $WORK" >&2
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# 1. The dumps, in Wikimedia's layout.
GEN="${KEEP_DUMPS:-$WORK/gen}"
MIRROR="$WORK/mirror"
mkdir -p "$GEN" "$MIRROR"
# Reused only if the directory holds exactly the files this run would write.
EXPECTED=$(python3 - "$START" "$HOURS" <<'EOF'
import datetime, sys
start = datetime.datetime.strptime(sys.argv[1], "%Y-%m-%dT%H")
for h in range(int(sys.argv[2])):
    end = start + datetime.timedelta(hours=h + 1)
    print(end.strftime("pageviews-%Y%m%d-%H0000.gz"))
EOF
)
have_all=1
for f in $EXPECTED; do [ -s "$GEN/$f" ] || have_all=0; done
if [ "$have_all" = 1 ] && [ -f "$GEN/.spec" ] && [ "$(cat "$GEN/.spec")" = "$LINES $DOMAINS" ]; then
  echo "reusing the dumps in $GEN" >&2
else
  t0=$(now)
  "$BIN" demo pageviews-dump --out "$GEN" --start "$START" --hours "$HOURS" --lines "$LINES" \
    --domains "$DOMAINS" --gzip >/dev/null
  echo "$LINES $DOMAINS" >"$GEN/.spec"
  echo "generated $HOURS hours of $LINES lines in $(python3 -c "print(round($(now) - $t0, 1))") s" >&2
fi
for f in $EXPECTED; do
  # pageviews-YYYYMMDD-HH0000.gz -> YYYY/YYYY-MM/
  d="${f#pageviews-}"; y="${d:0:4}"; m="${d:4:2}"
  mkdir -p "$MIRROR/$y/$y-$m"
  ln -f "$GEN/$f" "$MIRROR/$y/$y-$m/$f" 2>/dev/null || cp "$GEN/$f" "$MIRROR/$y/$y-$m/$f"
  echo "  $y/$y-$m/$f $(du -m "$GEN/$f" | cut -f1) MB" >&2
done

# 2. The mirror.
MPORT=$(free_port)
python3 -m http.server "$MPORT" --bind 127.0.0.1 --directory "$MIRROR" >"$WORK/mirror.log" 2>&1 &
PIDS+=($!)

# 3. Broker and pagepulse.
BPORT=$(free_port); HPORT=$(free_port)
BROKER=$("$ROOT/scripts/broker.sh" "$BPORT" "$WORK/tansu.log")
PIDS+=("$BROKER")
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$MPORT/" && break
  sleep 0.1
done
export PAGEPULSE_BROKERS="127.0.0.1:$BPORT" PAGEPULSE_TOPIC_PREFIX="bf$$." PAGEPULSE_GROUP_ID="bf$$"
export PAGEPULSE_HTTP_LISTEN="127.0.0.1:$HPORT" PAGEPULSE_WRITE_TOKEN="bench-token-0123456789abcdef"
export PAGEPULSE_LOG="info,librdkafka=warn" NO_COLOR=1
export PAGEPULSE__pipelines__pageviews__dump_mirror="http://127.0.0.1:$MPORT"
for p in posts pages fans messages apps; do export "PAGEPULSE__pipelines__${p}__enabled=false"; done
[ -n "${CONCURRENCY:-}" ] && export PAGEPULSE__pipelines__pageviews__backfill_concurrency="$CONCURRENCY"
"$BIN" topics create >/dev/null
"$BIN" run >"$WORK/pagepulse.log" 2>&1 &
RUN=$!
PIDS+=("$RUN")
URL="http://127.0.0.1:$HPORT"
for _ in $(seq 1 600); do
  curl -sf "$URL/readyz" >/dev/null 2>&1 && break
  kill -0 "$RUN" 2>/dev/null || { echo "pagepulse exited; log:" >&2; tail -30 "$WORK/pagepulse.log" >&2; exit 1; }
  sleep 0.1
done

# The job.
END=$(python3 -c "import datetime as d; print((d.datetime.strptime('$START', '%Y-%m-%dT%H') + d.timedelta(hours=$HOURS - 1)).strftime('%Y-%m-%dT%H'))")
SUBMITTED=$(now)
ANSWER=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer $PAGEPULSE_WRITE_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"start\": \"$START\", \"end\": \"$END\"}" "$URL/api/v1/pageviews/reports")
CODE="${ANSWER##*$'\n'}"
BODY="${ANSWER%$'\n'*}"
[ "$CODE" = 202 ] || { echo "POST /api/v1/pageviews/reports answered $CODE: $BODY" >&2; exit 1; }
JOB=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["job"])' "$BODY")
echo "job $JOB: $START ..= $END ($HOURS hours), submitted" >&2
LAST=""
while :; do
  REPORT=$(curl -s -H "Authorization: Bearer $PAGEPULSE_WRITE_TOKEN" "$URL/api/v1/pageviews/reports/$JOB" || true)
  STATE=$(python3 -c '
import json, sys
try:
    r = json.loads(sys.argv[1])
except ValueError:
    print("?"); sys.exit()
c = r.get("counts") or {}
print(r.get("status", "?"), " ".join(f"{k}={v}" for k, v in c.items() if v))' "$REPORT")
  if [ "$STATE" != "$LAST" ]; then
    echo "  +$(python3 -c "print(round($(now) - $SUBMITTED, 1))") s: $STATE" >&2
    LAST="$STATE"
  fi
  case "$STATE" in done*|failed*) break ;; esac
  kill -0 "$RUN" 2>/dev/null || { echo "pagepulse exited; log:" >&2; tail -30 "$WORK/pagepulse.log" >&2; exit 1; }
  sleep 0.5
done
echo "$REPORT" >"$WORK/report.json"
HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$RUN/status")
CPU=$(python3 -c "
f = open('/proc/$RUN/stat').read().rsplit(')', 1)[1].split()
import os; print(round((int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK'), 1))")

# 4. Kafka timestamps of the results and of the hour documents' history.
"$BIN" consume pageviews.top -b -f json --idle-timeout 3s >"$WORK/top.jsonl" 2>/dev/null
"$BIN" consume pageviews.jobs -b -f json --idle-timeout 3s >"$WORK/jobs.jsonl" 2>/dev/null

python3 - "$WORK" "$SUBMITTED" "$LINES" "$DOMAINS" "$HOURS" "$HWM" "$CPU" <<'EOF'
import datetime, json, sys

work, submitted, lines_per_hour, domains, hours = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
hwm_kb, cpu_s = int(sys.argv[6] or 0), float(sys.argv[7] or 0)
report = json.load(open(f"{work}/report.json"))


def t(s):
    """Epoch seconds of an RFC 3339 time (None stays None)."""
    if not s:
        return None
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def records(name):
    out = []
    for line in open(f"{work}/{name}"):
        line = line.strip()
        if line:
            out.append(json.loads(line))
    return out


# Newest pageviews.top record per hour (one per domain when all are final).
tops = {}
for r in records("top.jsonl"):
    key, value = r.get("key") or "", r.get("value")
    if "|" not in key or value is None:
        continue
    hour = key.rsplit("|", 1)[1]
    try:
        final = json.loads(value).get("final")
    except ValueError:
        continue
    if final:
        ts = r["timestamp"] / 1000.0
        n, first, last = tops.get(hour, (0, ts, ts))
        tops[hour] = (n + 1, min(first, ts), max(last, ts))

# First hour-document record per hour with status `ingesting` (the downloaded hour's last
# records acknowledged) in this job.
ingesting = {}
for r in records("jobs.jsonl"):
    key, value = r.get("key") or "", r.get("value")
    if not key.startswith("hour/") or value is None:
        continue
    doc = json.loads(value)
    if doc.get("job") == report["job"] and doc.get("status") == "ingesting":
        ingesting.setdefault(doc["hour"], r["timestamp"] / 1000.0)

rows, starts, last_lines, finishes, total_lines = [], [], [], [], 0
for h in report["hours"]:
    hour = h["hour"]
    started, finished = t(h.get("started_at")), t(h.get("finished_at"))
    last_line = t(h.get("ingested_at")) or ingesting.get(hour)
    source = "ingested_at" if h.get("ingested_at") else ("first `ingesting` record" if hour in ingesting else None)
    n, first_final, last_final = tops.get(hour, (0, None, None))
    total_lines += h.get("lines") or 0
    if started:
        starts.append(started)
    if last_line:
        last_lines.append(last_line)
    if finished:
        finishes.append(finished)
    rows.append({
        "hour": hour,
        "status": h["status"],
        "tries": h.get("try_count"),
        "lines": h.get("lines"),
        "download_and_produce_s": round(last_line - started, 2) if last_line and started else None,
        "last_line_source": source,
        "final_records": n,
        "last_line_to_first_final_s": round(first_final - last_line, 3) if first_final and last_line else None,
        "last_line_to_last_final_s": round(last_final - last_line, 3) if last_final and last_line else None,
        "last_line_to_finished_at_s": round(finished - last_line, 3) if finished and last_line else None,
        "lines_per_s_of_the_hour": round(h["lines"] / (last_line - started)) if h.get("lines") and last_line and started and last_line > started else None,
    })

done = sum(1 for h in report["hours"] if h["status"] in ("done", "skipped"))
job_start = min(starts) if starts else None
span = (max(finishes) - job_start) if finishes and job_start else None
ingest_span = (max(last_lines) - job_start) if last_lines and job_start else None
print(json.dumps({
    "job": report["job"],
    "status": report["status"],
    "counts": {k: v for k, v in report["counts"].items() if v},
    "lines_per_hour_generated": lines_per_hour,
    "domains": domains,
    "submitted_to_first_download_s": round(job_start - submitted, 2) if job_start else None,
    "first_download_to_last_hour_finished_s": round(span, 2) if span else None,
    "hours_per_minute": round(done / span * 60, 2) if span else None,
    "lines_ingested": total_lines,
    "first_download_to_last_line_s": round(ingest_span, 2) if ingest_span else None,
    "lines_per_s": round(total_lines / ingest_span) if ingest_span else None,
    "pagepulse_peak_rss_mb": round(hwm_kb / 1024),
    "pagepulse_cpu_s": cpu_s,
    "hours": rows,
}, indent=2))
EOF
