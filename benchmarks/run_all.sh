#!/usr/bin/env bash
# Run every benchmark in sequence, in one process tree; each prints JSON lines on stdout.
#   benchmarks/run_all.sh                  # defaults: ../shared/data/isic9/Train, bundled model
#   DATA=/path/Train MODEL=runs/final benchmarks/run_all.sh | tee benchmarks/results.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
data=()
model=()
if [[ -n "${DATA:-}" ]]; then data=(--data "$DATA"); fi
if [[ -n "${MODEL:-}" ]]; then model=(--model "$MODEL"); fi
"$python" benchmarks/train_throughput.py "${data[@]}"
"$python" benchmarks/pipeline_throughput.py "${data[@]}"
"$python" benchmarks/predict_speed.py "${data[@]}" "${model[@]}"
"$python" benchmarks/bootstrap_speed.py
