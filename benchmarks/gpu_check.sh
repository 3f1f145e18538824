#!/usr/bin/env bash
# The device check of the scale issue, as one prepared script: on a machine with GPUs, the demo
# operator stage under DDP and FSDP (NCCL), bf16-mixed and torch.compile, with samples/s.
#
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"  # once
#   benchmarks/gpu_check.sh                      # GPUs: ACCEL=gpu, DEVICES=<all visible GPUs>
#   ACCEL=cpu DEVICES=2 EPOCHS=1 benchmarks/gpu_check.sh   # the same steps on CPU (gloo), a dry run
#
# Prints one line per check (exit code, wall seconds, samples/s from the run's metrics.csv) and a
# stability matrix at the end; every run folder is kept under $OUT (default a temporary folder).
set -uo pipefail
cd "$(dirname "$0")/.."
UPS=${UPS:-.venv/bin/ups}
PY=${PY:-.venv/bin/python}
ACCEL=${ACCEL:-gpu}
DEVICES=${DEVICES:-$($PY -c "import torch; print(max(torch.cuda.device_count(), 1))")}
EPOCHS=${EPOCHS:-2}
OUT=${OUT:-$(mktemp -d -t ups-gpu-check-XXXX)}
mkdir -p "$OUT"
DATA=${DATA:-data/builtin}
BASE=(paths.data_dir=$DATA training.accelerator=$ACCEL training.latent_cache_dir=$OUT/cache
      stages.autoencoder.epochs=1 stages.operator.epochs=$EPOCHS)

$UPS data generate burgers1d --out "$DATA" --param nu=0.01 --quiet
$UPS data generate darcy2d --out "$DATA" --param beta=1.0 --quiet
$UPS train --config configs/demo.yaml --stage autoencoder --run-dir "$OUT/ae" "${BASE[@]}" \
    training.precision=32-true > "$OUT/ae.log" 2>&1 || { echo "autoencoder failed: $OUT/ae.log"; exit 1; }

results=()
check() {  # name, then overrides of the operator run
    local name=$1; shift
    local start=$SECONDS
    $UPS train --config configs/demo.yaml --stage operator --from-run "$OUT/ae" --run-dir "$OUT/$name" \
        "$@" "${BASE[@]}" > "$OUT/$name.log" 2>&1  # flags (--devices) before the overrides
    local code=$? took=$((SECONDS - start))
    local rate
    rate=$($PY - "$OUT/$name/logs/operator/metrics.csv" <<'EOF'
import csv, sys
try:
    rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("perf/samples_per_sec")]
    print(f"{float(rows[-1]['perf/samples_per_sec']):.0f}" if rows else "-")
except OSError:
    print("-")
EOF
)
    local line
    line=$(printf "%-28s exit %-3s %5ss  %8s samples/s (rank 0)" "$name" "$code" "$took" "$rate")
    echo "$line"
    results+=("$line")
    if [ "$code" != 0 ]; then tail -5 "$OUT/$name.log" | sed 's/^/    /'; fi
}

check single-32-true          training.precision=32-true
check single-bf16-mixed       training.precision=bf16-mixed
check single-bf16-compile     training.precision=bf16-mixed training.compile=true
if [ "$DEVICES" -gt 1 ]; then
    check ddp-bf16            --devices "$DEVICES" training.strategy=ddp training.precision=bf16-mixed
    check ddp-bf16-compile    --devices "$DEVICES" training.strategy=ddp training.precision=bf16-mixed training.compile=true
    check fsdp-bf16           --devices "$DEVICES" training.strategy=fsdp training.precision=bf16-mixed
    check fsdp-32-true        --devices "$DEVICES" training.strategy=fsdp training.precision=32-true
fi
for ckpt in "$OUT"/*/checkpoints/operator/last.ckpt; do  # every checkpoint evaluates
    $UPS evaluate --config configs/demo.yaml --checkpoint "$ckpt" --device "$([ "$ACCEL" = gpu ] && echo cuda || echo cpu)" \
        --output-prefix "${ckpt%.ckpt}-eval" "${BASE[@]}" evaluation.report=false > /dev/null 2>&1 \
        && echo "evaluate ok: $ckpt" || echo "evaluate FAILED: $ckpt"
done
echo
echo "stability matrix ($ACCEL, $DEVICES device(s), torch $($PY -c 'import torch; print(torch.__version__)')):"
printf '%s\n' "${results[@]}"
echo "logs and run folders: $OUT"
