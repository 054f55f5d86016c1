#!/usr/bin/env bash
# Issue 11's CPU table: the authors' protocol on real CIFAR-10 at a size 2 CPU cores can run
# (ResNet18 from scratch, 1,000 images per class, 10 epochs, classes 3 and 8 with their retrained
# models), with the new defaults and with each of the three protocol choices switched back. The
# models are trained once (the first run) and read from the cache by the others; best-test and
# last epoch come from the same training run. Results: $OUT/<variant>/summary.json and a log.
#     bash bench/cifar_cpu.sh        # about 30 minutes on 2 cores
#     bash bench/cifar_cpu.sh "--select last"    # only the variants named (models from the cache)
set -uo pipefail
OUT="${OUT:-bench/measured/cifar_cpu}"
PYTHON="${PYTHON:-.venv/bin/python}"
ARCHIVE="${ARCHIVE:-../shared/data/cifar10-jpeg.tar.gz}"
mkdir -p "$OUT"
RUN=("$PYTHON" single_class_unlearning.py --dataset cifar10 --data-root "$ARCHIVE" --model ResNet18 --no-pretrained
     --max-per-class 1000 --epochs 10 --forget-classes 3,8 --device cpu --no-progress --cache-dir "$OUT/checkpoints")
status=0
VARIANTS=("defaults" "--unlearn-mode train" "--neighbour-pool subset" "--select last")
(( $# )) && VARIANTS=("$@")
for variant in "${VARIANTS[@]}"; do
    name=$(echo "$variant" | tr -d '-' | tr ' ' '_')
    echo "== $variant ($(date -u +%H:%M:%S))" | tee -a "$OUT/log.txt"
    flags=(); [[ "$variant" != defaults ]] && read -ra flags <<< "$variant"
    /usr/bin/time -f "%e s wall" "${RUN[@]}" "${flags[@]}" --out "$OUT/$name" 2>&1 | tee -a "$OUT/log.txt" || status=1
done
exit "$status"
