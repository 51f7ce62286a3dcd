#!/usr/bin/env bash
# Starts a tansu broker with in-memory storage on 127.0.0.1:PORT (default 9092) in the background,
# waits until it accepts connections, and prints its PID. Stop it with `kill PID`.
#   usage: scripts/broker.sh [PORT] [LOGFILE]
set -euo pipefail
PORT="${1:-9092}"
LOG="${2:-/tmp/pagepulse-tansu-$PORT.log}"
# Absolute, because the broker runs in a directory of its own.
case "$LOG" in /*) ;; *) LOG="$PWD/$LOG" ;; esac
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu >/dev/null || { echo "tansu is not installed: run scripts/install-tansu.sh" >&2; exit 1; }
# tansu reads a .env file from its working directory: run it in an empty one.
WORK="$(mktemp -d)"
cd "$WORK"
nohup tansu broker \
  --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine memory://tansu/ >"$LOG" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "$PID"
    exit 0
  fi
  kill -0 "$PID" 2>/dev/null || { echo "tansu exited; log:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
echo "tansu did not accept connections on port $PORT within 10 s; log: $LOG" >&2
kill "$PID" 2>/dev/null || true
exit 1
