#!/usr/bin/env bash
# Both benchmarks on a CUDA GPU at full size, in under 8 minutes; JSON and logs go to $OUT.
#
# Run from the repository root, with the CIFAR-10 archive copied to .data/ (git-ignored):
#     mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/
#     bash bench/gpu_check.sh            # on the GPU machine; with the device tool, carry [".data"]
# Needs only what is already installed there (python3 with torch + torchvision, Pillow, tqdm);
# installs nothing. Writes $OUT/card.txt, anti_sample_cuda.json, unlearn_cuda.json and a log of each.
set -uo pipefail

OUT="${OUT:-./bench_out}"
PYTHON="${PYTHON:-python3}"
ARCHIVE=".data/cifar10-jpeg.tar.gz"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

if [[ ! -f "$ARCHIVE" ]]; then
    echo "error: $ARCHIVE is missing; copy ../shared/data/cifar10-jpeg.tar.gz there first" >&2
    exit 2
fi
nvidia-smi --query-gpu=name --format=csv > "$OUT/card.txt"
cat "$OUT/card.txt"

status=0
# about 2 minutes: far neighbours and anti-samples, 5000 forget x 13500 retain real rows (3072 features)
timeout -k 10 120 "$PYTHON" bench/anti_sample_bench.py --device cuda --n-forget 5000 --n-retain 13500 \
    --data-root "$ARCHIVE" --json "$OUT/anti_sample_cuda.json" 2>&1 | tee "$OUT/anti_sample_cuda.log" || status=1
# about 5 minutes: all 50,000 training images, original model 2 epochs, Unlearning-30 and -100,
# our loop plain / fused Adam / CUDA graph / graph + bf16 (train_utils.Speed), 2 timed epochs of each
timeout -k 10 300 "$PYTHON" bench/unlearn_bench.py --device cuda --data-root "$ARCHIVE" --original-epochs 2 \
    --percents 30,100 --speeds plain,fused,graph,graph_bf16 --json "$OUT/unlearn_cuda.json" 2>&1 | tee "$OUT/unlearn_cuda.log" || status=1
exit "$status"
