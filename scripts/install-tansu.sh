#!/usr/bin/env bash
# Installs the tansu broker (Kafka wire protocol, Rust) from crates.io unless it is already there,
# as two commands:
#   - `tansu-sqlite` (a link in ~/.cargo/bin to $TANSU_SQLITE_ROOT/bin/tansu): tansu with the
#     SQLite storage engine (`--features libsql`), which keeps topics, committed offsets and
#     changelogs on disk across restarts and applies compaction. The quickstart runs it, and so
#     does the test of a broker restart (tests/broker_restart_e2e.rs).
#   - `tansu` (in ~/.cargo/bin): what the other tests run, on the memory engine. On a machine
#     without one it is a link to the same SQLite build (which has the memory engine too), so a
#     cold machine builds tansu once; `--memory-only` builds a memory-only one instead.
# A cold build takes 15-20 minutes on 2 cores, so each is skipped whenever its binary answers
# `--version` with the wanted release.
#   usage: scripts/install-tansu.sh [--memory-only]
set -euo pipefail
TANSU_VERSION=0.6.0
TANSU_SQLITE_ROOT="${TANSU_SQLITE_ROOT:-$HOME/.cache/pagepulse/tansu-libsql}"
export PATH="$HOME/.cargo/bin:$PATH"

has_version() { "$1" --version 2>/dev/null | grep -q "$TANSU_VERSION"; }

SQLITE_BIN="$TANSU_SQLITE_ROOT/bin/tansu"
if [ "${1:-}" != "--memory-only" ]; then
  if [ -x "$SQLITE_BIN" ] && has_version "$SQLITE_BIN"; then
    echo "tansu $TANSU_VERSION with SQLite storage already installed: $SQLITE_BIN"
  else
    echo "installing tansu $TANSU_VERSION with SQLite storage into $TANSU_SQLITE_ROOT (cold build: ~15-20 min)..."
    # Its own --root, so this build never replaces a memory-only `tansu` (the feature name is
    # tansu 0.6.0's `libsql`; `dynostore` keeps `memory://` working in this binary too).
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --root "$TANSU_SQLITE_ROOT"
  fi
  mkdir -p "$HOME/.cargo/bin"
  ln -sfn "$SQLITE_BIN" "$HOME/.cargo/bin/tansu-sqlite"
  echo "tansu-sqlite -> $SQLITE_BIN"
fi

if command -v tansu >/dev/null 2>&1 && has_version tansu; then
  echo "tansu $TANSU_VERSION already installed: $(command -v tansu)"
elif [ -x "$SQLITE_BIN" ] && has_version "$SQLITE_BIN"; then
  # One cold build serves both: the SQLite build runs `memory://` as well.
  mkdir -p "$HOME/.cargo/bin"
  ln -sfn "$SQLITE_BIN" "$HOME/.cargo/bin/tansu"
  echo "tansu -> $SQLITE_BIN (the SQLite build, which has the memory engine too)"
else
  echo "installing tansu $TANSU_VERSION from crates.io (cold build: ~15-20 min)..."
  # `dynostore` carries the memory storage engine; default features have none (shared/BROKER.md).
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore
fi
