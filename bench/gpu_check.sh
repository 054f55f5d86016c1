#!/usr/bin/env bash
# Both benchmarks on a CUDA GPU at full CIFAR-10 size, in under 5 minutes; JSON and logs go to $OUT.
#
# Run from the repository root, with the CIFAR-10 archive copied to .data/ (git-ignored):
#     mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/
#     bash bench/gpu_check.sh            # on the GPU machine; with the device tool, carry [".data"]
#     DRY_RUN=1 bash bench/gpu_check.sh  # the same steps on the CPU at tiny sizes (CI runs this)
# Needs only what the device image has (python3 with torch, torchvision, numpy, Pillow, tqdm);
# installs nothing. Writes $OUT/card.txt, anti_sample.json, unlearn.json and a log of each. Each
# step runs even if the one before failed; the exit status is 1 if any failed.
set -uo pipefail

OUT="${OUT:-./bench_out}"
PYTHON="${PYTHON:-python3}"
ARCHIVE="${ARCHIVE:-.data/cifar10-jpeg.tar.gz}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

NEEDED_MODULES="torch torchvision numpy PIL tqdm"
source bench/preflight.sh

if [[ "${DRY_RUN:-0}" == 1 ]]; then
    DEVICE=cpu
    FAR_SIZE=(--n-forget 300 --n-retain 900 --repeats 1)
    UNLEARN_SIZE=(--max-per-class 20 --original-epochs 1 --percents 30 --speeds plain)
else
    DEVICE=cuda
    # CIFAR-10's full far-neighbour size: one class's 5,000 images against the other 45,000
    FAR_SIZE=(--n-forget 5000 --n-retain 45000 --repeats 3)
    # all 50,000 training images: original model 1 epoch, Unlearning-30, our loop plain / fused Adam /
    # CUDA graph / graph + bf16 (train_utils.Speed), two timed original-model epochs of each
    UNLEARN_SIZE=(--original-epochs 1 --percents 30 --speeds plain,fused,graph,graph_bf16)
fi

status=0
timeout -k 10 100 "$PYTHON" bench/anti_sample_bench.py --device "$DEVICE" "${FAR_SIZE[@]}" \
    --data-root "$ARCHIVE" --json "$OUT/anti_sample.json" 2>&1 | tee "$OUT/anti_sample.log" || status=1
timeout -k 10 190 "$PYTHON" bench/unlearn_bench.py --device "$DEVICE" --data-root "$ARCHIVE" "${UNLEARN_SIZE[@]}" \
    --json "$OUT/unlearn.json" 2>&1 | tee "$OUT/unlearn.log" || status=1
echo "gpu_check exit status $status"
exit "$status"
