#!/usr/bin/env bash
# The production scaler's footprint: crates in its normal dependency graph, cold release build
# time (an empty target directory, so every dependency is compiled), and binary size before and
# after stripping. Run it in any checkout (e.g. an older commit's worktree) to compare.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
crates=$(cargo tree -p keda-gpu-scaler -e normal --prefix none --locked |
  sed 's/ (\*)//; s/ (proc-macro)//' | sort -u | wc -l)
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
start=$(date +%s)
CARGO_TARGET_DIR="$target" cargo build --release -p keda-gpu-scaler --locked --quiet
seconds=$(( $(date +%s) - start ))
bin="$target/release/keda-gpu-scaler"
strip -o "$target/stripped" "$bin"
echo "crates (cargo tree -e normal):  $crates"
echo "cold release build:             ${seconds} s on $(nproc) cores"
echo "binary (line tables):           $(stat -c %s "$bin") bytes"
echo "binary (stripped):              $(stat -c %s "$target/stripped") bytes"
for heavy in faer cudarc image rayon indicatif hdrhistogram gpu-workload; do
  if cargo tree -p keda-gpu-scaler -e normal --prefix none --locked | grep -q "^$heavy "; then
    echo "in the graph: $heavy"
  fi
done
