# Sourced by the GPU scripts before any work: $PYTHON must import every module named in
# $NEEDED_MODULES and the CIFAR-10 archive must be at $ARCHIVE. One line per missing piece, then
# exit status 2.
missing=0
for module in $NEEDED_MODULES; do
    "$PYTHON" -c "import $module" 2>/dev/null || { echo "error: python module $module is missing" >&2; missing=1; }
done
[[ -f "$ARCHIVE" ]] || { echo "error: $ARCHIVE is missing; copy ../shared/data/cifar10-jpeg.tar.gz there first" >&2; missing=1; }
(( missing )) && exit 2
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "dry run: CPU, tiny sizes" | tee "$OUT/card.txt"
else
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
fi
