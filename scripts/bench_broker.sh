#!/usr/bin/env bash
# tansu's memory engine against its SQLite engine, side by side in the same run: the same N
# records (keyed JSON of ~SIZE bytes, 4 partitions) produced by an idempotent acks=all producer and
# read back from the beginning, with Python confluent-kafka (scripts/bench_broker.py), ROUNDS
# times per engine, alternating, on fresh brokers of this script's own (free ports; the SQLite one
# on a temporary data directory, removed at the end). Not part of the test suite.
#   usage: scripts/bench_broker.sh [N] [SIZE] [ROUNDS]        (defaults 200000 100 2)
# Needs both tansu builds (scripts/install-tansu.sh) and confluent-kafka (scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-200000}"
SIZE="${2:-100}"
ROUNDS="${3:-2}"
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu-sqlite >/dev/null || { echo "tansu-sqlite is missing: run scripts/install-tansu.sh" >&2; exit 1; }
python3 -c 'import confluent_kafka' || { echo "Python confluent-kafka is missing" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

MEM_PORT="$(free_port)"
PIDS+=("$(BROKER_STORAGE=memory scripts/broker.sh "$MEM_PORT" "$TMP/memory.log")")
SQL_PORT="$(free_port)"
PIDS+=("$(BROKER_STORAGE=sqlite BROKER_DATA="$TMP/sqlite" scripts/broker.sh "$SQL_PORT" "$TMP/sqlite.log")")

echo "tansu $(tansu --version 2>/dev/null | awk '{print $NF}'): $N records of ~$SIZE bytes, 4 partitions, $ROUNDS rounds per engine ($(nproc) cores)"
printf '%-8s %5s %14s %14s %10s\n' engine round "produce rec/s" "consume rec/s" "commit s"
declare -A PROD CONS
for r in $(seq 1 "$ROUNDS"); do
  for engine in memory sqlite; do
    port="$MEM_PORT"; [ "$engine" = sqlite ] && port="$SQL_PORT"
    out="$(python3 scripts/bench_broker.py "127.0.0.1:$port" "bench-$r" "$N" --size "$SIZE")"
    read -r p c s < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["produce_rps"], d["consume_rps"], d["commit_s"])' "$out")
    printf '%-8s %5s %14s %14s %10s\n' "$engine" "$r" "$p" "$c" "$s"
    PROD[$engine]="${PROD[$engine]:-} $p"
    CONS[$engine]="${CONS[$engine]:-} $c"
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
pm="$(echo "${PROD[memory]}" | median)"; ps="$(echo "${PROD[sqlite]}" | median)"
cm="$(echo "${CONS[memory]}" | median)"; cs="$(echo "${CONS[sqlite]}" | median)"
echo "median produce: memory $pm rec/s, sqlite $ps rec/s (memory/sqlite $(python3 -c "print(round($pm/$ps, 1))")x)"
echo "median consume: memory $cm rec/s, sqlite $cs rec/s (memory/sqlite $(python3 -c "print(round($cm/$cs, 1))")x)"
echo "sqlite data after the run: $(du -sh "$TMP/sqlite" | cut -f1) for $((N * ROUNDS)) records"
