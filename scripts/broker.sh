#!/usr/bin/env bash
# Starts a tansu broker on 127.0.0.1:PORT (default 9092) in the background, waits until it accepts
# connections, and prints its PID. Stop it with `kill PID` (memory) or `kill -KILL PID` (sqlite:
# see below).
#   usage: [BROKER_STORAGE=memory|sqlite] [BROKER_DATA=DIR] scripts/broker.sh [PORT] [LOGFILE]
# BROKER_STORAGE=memory (the default, what the tests use): everything lives in the broker's
#   memory and is gone when it stops; never compacts.
# BROKER_STORAGE=sqlite: topics, records, committed offsets and consumer groups are kept in
#   BROKER_DATA/tansu.db (default $HOME/.local/share/pagepulse/tansu), so a broker started again on
#   the same directory carries on where the last one stopped, and compacted topics are compacted
#   (at start-up, then every 10 minutes). Needs the `tansu-sqlite` build of scripts/install-tansu.sh.
#   Only one broker may run on a data directory at a time. Stop it with SIGKILL once its clients
#   are gone: a kill loses nothing acknowledged (SQLite in WAL mode), whereas a graceful stop
#   (SIGTERM) answers every request with UNKNOWN_SERVER_ERROR for 5 s, after which a still
#   connected idempotent producer crashes the restarted broker's storage (tansu 0.6.0; README).
set -euo pipefail
PORT="${1:-9092}"
LOG="${2:-/tmp/pagepulse-tansu-$PORT.log}"
STORAGE="${BROKER_STORAGE:-memory}"
# Absolute, because the broker runs in a directory of its own.
case "$LOG" in /*) ;; *) LOG="$PWD/$LOG" ;; esac
export PATH="$HOME/.cargo/bin:$PATH"
case "$STORAGE" in
  memory)
    BIN=tansu
    ENGINE=memory://tansu/
    # tansu reads a .env file from its working directory: run it in an empty one.
    WORK="$(mktemp -d)"
    ;;
  sqlite)
    BIN=tansu-sqlite
    # tansu resolves a sqlite:// URL against its working directory (even one with an absolute
    # path), so the broker runs in the data directory and the database is `tansu.db` there. The
    # directory holds nothing else, so there is no .env for tansu to read either.
    ENGINE=sqlite://tansu.db
    WORK="${BROKER_DATA:-$HOME/.local/share/pagepulse/tansu}"
    mkdir -p "$WORK"
    WORK="$(cd "$WORK" && pwd)"
    ;;
  *) echo "BROKER_STORAGE must be memory or sqlite, not '$STORAGE'" >&2; exit 2 ;;
esac
command -v "$BIN" >/dev/null || { echo "$BIN is not installed: run scripts/install-tansu.sh" >&2; exit 1; }
cd "$WORK"
nohup "$BIN" broker \
  --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine "$ENGINE" >"$LOG" 2>&1 &
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
