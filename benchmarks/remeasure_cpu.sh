#!/usr/bin/env bash
# The CPU ratios that issue 32's equal-work changes touch, measured again: run it on a quiet machine (nothing else
# running: these are speed ratios), about 45 minutes on 2 cores. Each benchmark's output goes to
# benchmarks/results/equal-work-<date>-cpu/, to replace docs/results.md's, docs/scaling.md's and README's numbers.
#
#   DATA_DIR=../shared/data bash benchmarks/remeasure_cpu.sh
#
# (The GPU numbers those pages quote, Lightning's overhead on the H200 and benchmarks.gpu_efficiency's GPU table,
# need the lent machine: `bash benchmarks/gpu_run.sh --parts overhead` and `bash benchmarks/gpu_run.sh efficiency`.)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATA_DIR:?set DATA_DIR to the folder that holds FashionMNIST/ and tinyshakespeare/}"
PYTHON=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/equal-work-$(date +%F)-cpu
mkdir -p "$OUT"

# VAE against PyTorch's examples/vae loop: docs/results.md's VAE bullet, README's "x its speed"
"$PYTHON" -m benchmarks.vae_reference --architectures mlp --rounds 4 | tee "$OUT/vae_reference.txt"
# Lightning (genlab's train) against the plain GPT loop: docs/results.md's "GPT training throughput", docs/scaling.md
"$PYTHON" -m benchmarks.gpt_throughput --steps 300 --rounds 5 | tee "$OUT/gpt_throughput.txt"
# time to quality, nanoGPT's settings and genlab's: docs/results.md's table and "--reference same", README's GPT row
for reference in nanogpt same; do
    "$PYTHON" -m benchmarks.gpt_time_to_quality --rounds 3 --reference "$reference" \
        --out "$OUT/gpt-time-to-quality-$reference.json" | tee "$OUT/gpt-time-to-quality-$reference.txt"
done
# every family against its plain loop at the recipe's batch: docs/scaling.md's CPU ratios
"$PYTHON" -m benchmarks.gpu_efficiency --cpu --families ae vae gan-bce gan-hinge gan-wgan-gp diffusion flow \
    classifier normalizing_flow --out "$OUT/gpu-efficiency"
echo "results: $OUT"
