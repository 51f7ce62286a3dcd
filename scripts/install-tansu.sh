#!/usr/bin/env bash
# Installs the tansu broker (Kafka wire protocol, Rust) from crates.io unless it is already there.
# A cold build takes 15-20 minutes on 2 cores, so it is skipped whenever `tansu --version` answers.
set -euo pipefail
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"
if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "tansu $TANSU_VERSION already installed: $(command -v tansu)"
  exit 0
fi
echo "installing tansu $TANSU_VERSION from crates.io (cold build: ~15-20 min)..."
# `dynostore` carries the memory storage engine; default features have none (shared/BROKER.md).
cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore
