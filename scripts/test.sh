#!/usr/bin/env bash
# The whole test suite, on a fresh machine of this kind: installs what the tests need (tansu's
# memory build, and its SQLite build for tests/broker_restart_e2e.rs; Python confluent-kafka,
# schemathesis, Debian's prometheus, docker-compose and chromium), then runs every unit, pipeline
# and integration test. Integration tests start their own tansu broker
# on a free port (or use PAGEPULSE_TEST_BROKERS).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/install-tansu.sh

if ! python3 -c 'import confluent_kafka' 2>/dev/null; then
  echo "installing Python confluent-kafka (an independent Kafka client for the tests)..."
  python3 -m pip install --quiet --disable-pip-version-check confluent-kafka
fi

if ! command -v st >/dev/null 2>&1; then
  echo "installing schemathesis (checks the HTTP API against its OpenAPI document)..."
  python3 -m pip install --quiet --disable-pip-version-check schemathesis
fi

# Debian packages: prometheus (promtool and a real server for the dashboard tests), iproute2,
# docker-compose (validates docker-compose.yml without a Docker engine) and chromium (drives the
# live page headless).
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# iproute2: network namespaces, so the multi-instance tests give each instance a host of its own.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (Debian packages)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A one-shot build gains nothing from incremental compilation, which only adds gigabytes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
avail_kb=$(df -Pk "${CARGO_TARGET_DIR:-target}" 2>/dev/null | awk 'NR == 2 {print $4}' || echo 0)
[ -d "${CARGO_TARGET_DIR:-target}" ] || avail_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ "${avail_kb:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: only $((avail_kb / 1024)) MiB free for the build; the test build needs about 8 GiB" >&2
fi

cargo test --locked -- --test-threads 2
