#!/usr/bin/env bash
# pagepulse's main job on one machine: a local broker (tansu), the topics, the pipelines, and a
# demo producer, with results printed as they flow. Ctrl-C stops everything.
#   usage: scripts/quickstart.sh [--duration SECONDS]
# Environment: PAGEPULSE_BROKERS (default 127.0.0.1:9092; a broker already listening there is
# reused), PAGEPULSE_HTTP_LISTEN (default 127.0.0.1:9898), DEMO_RATE (posts/s, default 20).
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
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
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
  PIDS+=("$(scripts/broker.sh "$PORT" "$RUN_DIR/tansu.log")")
  echo "started tansu on $PAGEPULSE_BROKERS (log: $RUN_DIR/tansu.log)"
fi

$PP topics create
$PP run >"$RUN_DIR/pagepulse.log" 2>&1 &
PIDS+=("$!")
echo "pagepulse running (log: $RUN_DIR/pagepulse.log); waiting until ready..."
for _ in $(seq 1 300); do
  if curl -sf "http://$PAGEPULSE_HTTP_LISTEN/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -sf "http://$PAGEPULSE_HTTP_LISTEN/readyz" >/dev/null || { echo "pagepulse did not become ready; see $RUN_DIR/pagepulse.log" >&2; exit 1; }

$PP demo posts --rate "${DEMO_RATE:-20}" --bad-every 25 2>"$RUN_DIR/demo.log" &
PIDS+=("$!")
cat <<EOT

pagepulse is ready. Results flow below (posts.analysis). Elsewhere, try:
  $PP consume posts.trending -b            # top hashtags of the last hour, every 5 s when changed
  $PP consume deadletter -b -f json        # malformed posts with the reason in headers
  curl -s http://$PAGEPULSE_HTTP_LISTEN/metrics | grep ^pagepulse_
  (on a real Kafka cluster kcat works too: kcat -C -b HOST:9092 -t posts.analysis)
Ctrl-C stops everything.

EOT
if [ "$DURATION" -gt 0 ]; then
  timeout "$DURATION" $PP consume posts.analysis || true
else
  $PP consume posts.analysis
fi
