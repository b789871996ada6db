#!/usr/bin/env bash
# The GPU measurements in one call: the article's code vs ptflow fp32 vs ptflow bf16 (20 epochs,
# the article's configuration), time to accuracy of the presets, and on a machine with several
# GPUs the data-parallel runs. Run from the repository root on a CUDA machine with PyTorch and
# ptflow's dependencies installed (ptflow runs from this tree, PYTHONPATH=src; nothing is
# installed or downloaded), given MNIST's four IDX files and the article's reference code:
#
#   MNIST=DIR SEED_CODE=DIR OUT=DIR bash bench/gpu_check.sh
#
# MNIST defaults to ../shared/data/mnist and SEED_CODE to ../shared/reference/seed_code (beside
# the checkout); OUT to bench/out. DEVICE=cpu EPOCHS=1 runs the same steps on a CPU.
set -euo pipefail
MNIST=${MNIST:-../shared/data/mnist}
SEED_CODE=${SEED_CODE:-../shared/reference/seed_code}
OUT=${OUT:-bench/out}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-20}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'
"$PYTHON" bench/train_bench.py --device "$DEVICE" --epochs "$EPOCHS" --contenders seed,ptflow,ptflow-bf16 \
    --data_dir "$MNIST" --seed_code "$SEED_CODE" --out "$OUT/train_bench_$DEVICE.json"
"$PYTHON" bench/recipes.py --device "$DEVICE" --only fast,accurate --mnist_dir "$MNIST" \
    --out "$OUT/recipes_$DEVICE.json"

# Several GPUs (issue 11): the article's configuration on every GPU of the machine as one
# data-parallel job (NCCL, one process per GPU, global batch 256), against one GPU; then the
# same job with SyncBatchNorm, which only GPUs run. Skipped on a machine with fewer than 2 GPUs.
NGPU=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
if [ "$DEVICE" = cuda ] && [ "$NGPU" -ge 2 ]; then
    for NPROC in 1 "$NGPU"; do
        "$PYTHON" -m ptflow train --dataset mnist --data_dir "$MNIST" --n_epochs "$EPOCHS" --batch_size 256 \
            --n_layers 5 --device cuda --nproc_per_node "$NPROC" --runs_dir "$OUT/ddp_runs" \
            --run_name "ddp-$NPROC" --verbose 1 | tee "$OUT/ddp_$NPROC.log"
    done
    "$PYTHON" -m ptflow train --dataset mnist --data_dir "$MNIST" --n_epochs "$EPOCHS" --batch_size 256 \
        --n_layers 5 --device cuda --nproc_per_node "$NGPU" --sync_bn --runs_dir "$OUT/ddp_runs" \
        --run_name "ddp-$NGPU-sync_bn" --verbose 1 | tee "$OUT/ddp_${NGPU}_sync_bn.log"
else
    echo "several GPUs: skipped ($NGPU GPU(s) visible)"
fi
