#!/usr/bin/env bash
# The GPU measurements in one call: the article's code vs ptflow fp32 vs ptflow bf16 (20 epochs,
# the article's configuration), time to accuracy of the presets, on a machine with several GPUs
# the data-parallel runs, and a timm fine-tune in bf16 and fp16 with --channels_last (needs timm
# and torchvision; FT_EPOCHS, FT_PER_CLASS size it). Run from the repository root on a CUDA
# machine with PyTorch and ptflow's dependencies installed (ptflow runs from this tree,
# PYTHONPATH=src; nothing is installed or downloaded), given MNIST's four IDX files and the
# article's reference code:
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

# A timm fine-tune (issue 19): timm:resnet18 on a generated photo folder (4 classes of 96 px JPEGs,
# bench/finetune_bench.py's), with --channels_last. First --precision bf16 from scratch, then
# --precision fp16 (GradScaler) starting from the bf16 run's weights (--pretrained_path) with the
# backbone frozen for the first epoch. Each run must finish; the line printed is its training
# samples/s over the epochs after the first (the first includes cuDNN's autotuning), validation
# included. fp16 is refused on a CPU, so DEVICE=cpu runs the bf16 step only. Skipped without
# timm and torchvision (pip install 'ptflow[images,timm]').
FT_EPOCHS=${FT_EPOCHS:-3}
FT_PER_CLASS=${FT_PER_CLASS:-320}  # training photos per class
if "$PYTHON" -c 'import timm, torchvision' 2>/dev/null; then
    PHOTOS="$OUT/photos"
    if [ ! -d "$PHOTOS/train" ]; then
        "$PYTHON" -c 'import sys; from pathlib import Path; sys.path.insert(0, "bench")
from finetune_bench import make_photos
make_photos(Path(sys.argv[1]), int(sys.argv[2]))' "$PHOTOS" "$FT_PER_CLASS"
    fi
    rm -rf "$OUT/timm_runs"
    PRECISIONS="bf16 fp16"
    [ "$DEVICE" = cuda ] || PRECISIONS="bf16"
    for PRECISION in $PRECISIONS; do
        START=()
        if [ "$PRECISION" = fp16 ]; then
            START=(--pretrained_path "$OUT/timm_runs/resnet18-bf16/model.safetensors" --freeze_backbone_epochs 1)
        fi
        "$PYTHON" -m ptflow train --dataset "folder:$PHOTOS/train" --model timm:resnet18 --image_size 96 \
            --augment light --batch_size 64 --optimizer adamw --lr 1e-3 --scheduler cosine \
            --n_epochs "$FT_EPOCHS" --precision "$PRECISION" --channels_last --device "$DEVICE" ${START[@]+"${START[@]}"} \
            --runs_dir "$OUT/timm_runs" --run_name "resnet18-$PRECISION" --verbose 1 \
            | tee "$OUT/timm_resnet18_$PRECISION.log"
        "$PYTHON" - "$OUT/timm_runs/resnet18-$PRECISION" "$OUT/timm_resnet18_$PRECISION.log" <<'PY'
import json, re, sys
from pathlib import Path

run, log = Path(sys.argv[1]), Path(sys.argv[2]).read_text()
status = json.loads((run / "run.json").read_text())
assert status["status"] == "finished", f"{run.name}: {status['status']}"
assert status["memory_format"] == {"weights": "channels_last", "batches": "channels_last"}, status["memory_format"]
n_train = int(re.search(r"Train: \((\d+),", log).group(1))
seconds = [json.loads(line)["seconds"] for line in (run / "metrics.jsonl").read_text().splitlines()]
later = seconds[1:] or seconds
print(f"{run.name}: {status['precision']}, channels_last, {len(seconds)} epochs, "
      f"{n_train * len(later) / sum(later):.0f} samples/s after the first epoch, test_acc={status['test_acc']:.4f}")
PY
    done
else
    echo "timm fine-tune: skipped (timm or torchvision not installed)"
fi
