#!/usr/bin/env bash
# pagepulse's main job on one machine: a local broker (tansu), the topics, a simulated Graph API
# and Mastodon (`pagepulse simulate graph-api`), the pipelines, demo pages to track, demo producers
# of posts and of users' messages, and two generated hours of page views, with results printed as
# they flow. Ctrl-C stops everything.
#   usage: scripts/quickstart.sh [--duration SECONDS]
# Environment: PAGEPULSE_BROKERS (default 127.0.0.1:9092; a broker already listening there is
# reused), PAGEPULSE_HTTP_LISTEN (default 127.0.0.1:9898), SIM_LISTEN (default 127.0.0.1:8787),
# DEMO_PAGES (default 2000), DEMO_INTERVAL_S (default 20), DEMO_RATE (posts/s, default 20),
# DEMO_MESSAGES_RATE (messages/s, default 50), APPS_CSV (an App Store catalogue in the form of
# Kaggle's AppleStore.csv; default one generated in that form), BROKER_STORAGE (sqlite, the
# default: the broker keeps its topics, committed offsets and changelogs in BROKER_DATA, default
# .run/broker, so a later run, or a broker restarted on the same directory, carries on where the
# last one stopped; memory: nothing is kept). `rm -rf .run/broker` starts from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
DURATION=0
if [ "${1:-}" = "--duration" ]; then DURATION="${2:?seconds}"; fi
export PAGEPULSE_BROKERS="${PAGEPULSE_BROKERS:-127.0.0.1:9092}"
export PAGEPULSE_HTTP_LISTEN="${PAGEPULSE_HTTP_LISTEN:-127.0.0.1:9898}"
RUN_DIR=.run
mkdir -p "$RUN_DIR"
PIDS=()
BROKER_PID=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # The broker last, once its clients are gone, and killed rather than asked to stop: tansu
  # 0.6.0's SQLite engine answers requests with errors for the 5 s of a graceful stop, which makes
  # a connected idempotent producer crash the next broker's storage (README, "The local broker").
  # A kill loses nothing acknowledged (SQLite, WAL journal).
  if [ -n "$BROKER_PID" ]; then kill -KILL "$BROKER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

scripts/install-tansu.sh
echo "building pagepulse (release)..."
cargo build --release --quiet
PP=target/release/pagepulse

PORT="${PAGEPULSE_BROKERS##*:}"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "using the broker already listening on $PAGEPULSE_BROKERS"
else
  export BROKER_STORAGE="${BROKER_STORAGE:-sqlite}" BROKER_DATA="${BROKER_DATA:-$RUN_DIR/broker}"
  BROKER_PID="$(scripts/broker.sh "$PORT" "$RUN_DIR/tansu.log")"
  if [ "$BROKER_STORAGE" = sqlite ]; then kept=" (topics kept in $BROKER_DATA/tansu.db)"; else kept=""; fi
  echo "started tansu on $PAGEPULSE_BROKERS$kept (log: $RUN_DIR/tansu.log)"
fi

$PP topics create

# A simulated platform: deterministic audiences, with a few faults to show how they are handled.
SIM_LISTEN="${SIM_LISTEN:-127.0.0.1:8787}"
DEMO_PAGES="${DEMO_PAGES:-2000}"
$PP simulate graph-api --listen "$SIM_LISTEN" --pages "$DEMO_PAGES" --error-rate 0.02 --malformed-rate 0.01 \
  >"$RUN_DIR/simulator.log" 2>&1 &
PIDS+=("$!")
export PAGEPULSE__platforms__facebook__base_url="http://$SIM_LISTEN"
export PAGEPULSE__platforms__mastodon__base_url="http://$SIM_LISTEN"
export PAGEPULSE__platforms__mastodon__rate_per_sec=100
# Provisional top articles of hours still open, every 30 s (GET /api/v1/pageviews/top/{domain}/{hour}).
export PAGEPULSE__pipelines__pageviews__provisional_interval="\"30s\""
# Results charted in Prometheus/Grafana: three watched pages and three domains' top articles.
export PAGEPULSE__pipelines__fans__watch='["facebook:page-000001", "facebook:page-000002", "facebook:page-000003"]'
export PAGEPULSE__pipelines__pageviews__export_domains='["en", "de", "ja"]'
export PAGEPULSE_FACEBOOK_TOKEN="${PAGEPULSE_FACEBOOK_TOKEN:-demo-token}"
# The HTTP API's token (writes and reads): a demo value unless you set your own.
export PAGEPULSE_WRITE_TOKEN="${PAGEPULSE_WRITE_TOKEN:-quickstart-token-change-me}"
echo "simulated Graph API and Mastodon on http://$SIM_LISTEN ($DEMO_PAGES pages; log: $RUN_DIR/simulator.log)"

$PP run >"$RUN_DIR/pagepulse.log" 2>&1 &
PIDS+=("$!")
echo "pagepulse running (log: $RUN_DIR/pagepulse.log); waiting until ready..."
for _ in $(seq 1 300); do
  if curl -sf "http://$PAGEPULSE_HTTP_LISTEN/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -sf "http://$PAGEPULSE_HTTP_LISTEN/readyz" >/dev/null || { echo "pagepulse did not become ready; see $RUN_DIR/pagepulse.log" >&2; exit 1; }

# Track the demo pages (every 10th on Mastodon, 3 unknown to the platform: they show as failing).
$PP demo pages --count "$DEMO_PAGES" --interval-s "${DEMO_INTERVAL_S:-20}" --mastodon-every 10 --unknown 3
# The app catalogue: the file named in APPS_CSV (e.g. Kaggle's AppleStore.csv), else one generated
# in the same CSV form; the demo posts mention its apps now and then (apps.top, apps.mentions).
if [ -z "${APPS_CSV:-}" ]; then
  APPS_CSV="$RUN_DIR/AppleStore-generated.csv"
  $PP demo apps-csv --out "$APPS_CSV"
fi
$PP ingest apps --quiet "$APPS_CSV"
$PP demo posts --rate "${DEMO_RATE:-20}" --bad-every 25 2>"$RUN_DIR/demo.log" &
PIDS+=("$!")
# Messages of 500 users from skewed cities and states (a few malformed, a few dated three minutes
# back: late); each event-time minute's statistics reach messages.stats about 30 s after it ends.
$PP demo messages --rate "${DEMO_MESSAGES_RATE:-50}" --bad-every 40 --late-every 200 2>"$RUN_DIR/demo-messages.log" &
PIDS+=("$!")
# Page views: two generated Wikimedia-style hours (200,000 lines each) and a small blacklist;
# the hours' top articles reach pageviews.top once the input has been idle for a minute.
rm -rf "$RUN_DIR/dumps"
$PP demo pageviews-dump --out "$RUN_DIR/dumps" --hours 2 --start "$(date -u -d '-2 hours' +%Y-%m-%dT%H)" \
  --lines 200000 --domains 10 --gzip >/dev/null
printf 'en Main_Page\nen Special:Search\nde Wikipedia:Hauptseite\n' >"$RUN_DIR/blacklist.txt"
$PP ingest blacklist --quiet "$RUN_DIR/blacklist.txt"
$PP ingest pageviews --quiet "$RUN_DIR"/dumps/pageviews-*.gz
cat <<EOT

pagepulse is ready and polling $DEMO_PAGES pages. Its live page (fan chart, top pages, top
articles, trending hashtags, messages, top apps):
  http://$PAGEPULSE_HTTP_LISTEN/#token=$PAGEPULSE_WRITE_TOKEN&page=facebook:page-000001
Results flow below (fans.top: the top pages by
24 h growth and by 24 h delta, every 10 s when changed). Elsewhere, try:
  $PP consume fans.stats                   # rolling figures of every page after each poll
  $PP consume pageviews.top -b             # top 25 articles per domain and hour (a minute after ingest)
  $PP consume pageviews.trending -b        # trending now, per domain
  curl -s -H "Authorization: Bearer $PAGEPULSE_WRITE_TOKEN" http://$PAGEPULSE_HTTP_LISTEN/api/v1/pages/facebook:page-000001
                                           # one page's live figures and chart (API docs: http://$PAGEPULSE_HTTP_LISTEN/docs)
  $PP consume posts.analysis               # word counts, hashtags and mentions of each post
  $PP consume posts.trending -b            # top hashtags of the last hour, every 5 s when changed
  $PP consume messages.stats -b            # messages per minute: total, users, states, top cities
  $PP consume messages.totals -b           # all-time message figures, every minute when changed
  $PP consume apps.top -b                  # top apps of Book and Music, with their mentions
  $PP consume apps.mentions -b             # mentions of each app in the posts
  curl -s -H "Authorization: Bearer $PAGEPULSE_WRITE_TOKEN" "http://$PAGEPULSE_HTTP_LISTEN/api/v1/apps/top/Book%2BMusic?format=csv"
  $PP consume deadletter -b -f json        # malformed posts and messages, the reason in headers
  curl -s http://$PAGEPULSE_HTTP_LISTEN/metrics | grep -E '^pagepulse_(polls|pages|schedule)'
  curl -s http://$PAGEPULSE_HTTP_LISTEN/metrics | grep ^pagepulse_
  (on a real Kafka cluster kcat works too: kcat -C -b HOST:9092 -t posts.analysis)
Ctrl-C stops everything.

EOT
if [ "$DURATION" -gt 0 ]; then
  timeout "$DURATION" $PP consume fans.top || true
else
  $PP consume fans.top
fi
