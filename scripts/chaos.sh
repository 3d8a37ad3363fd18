#!/usr/bin/env bash
# Chaos benchmark (README: Reliability): hostile and careless tenants against the scaler binary,
# every case on loopback, printing the figures the README records.
#
#   scripts/chaos.sh [OLD_BINARY]   full size on this tree's release build, then on OLD_BINARY
#                                   (the "before" column) when given
#   CHAOS_SHORT=1 scripts/chaos.sh  the CI size on the dev build, with the scaler's promises
#                                   checked (exit 1 when one is broken)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${CHAOS_SHORT:-}" == 1 ]]; then
  exec cargo bench --profile dev --bench chaos
fi
cargo bench --bench chaos
if [[ $# -ge 1 ]]; then
  CHAOS_SCALER_BIN="$1" cargo bench --bench chaos
fi
