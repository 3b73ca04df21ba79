#!/usr/bin/env bash
# GPU check: benchmark both training paths on CUDA, then train the full tutorial recipe on Cornell
# (4000 iterations, batch 64, fast path) and print wall time, speedup and held-out perplexity.
#
# Run from anywhere inside a copy of the repo on a machine with a CUDA GPU and a python3 that has
# torch, tqdm, pyyaml and matplotlib (no venv needed):
#     bash bench/gpu_check.sh
# The Cornell corpus must be inside that copy, at $DATA_PATH (default data/cornell, gitignored).
# Put it there with `make data` (it links data/cornell to an existing copy when DATA_PATH is set).
# Tools that copy the working tree to the GPU machine send a link as a link, so carry the two files
# through it: data/cornell/movie_lines.txt and data/cornell/movie_conversations.txt (about 41 MB).
#
# Knobs (environment): PYTHON (python3), DATA_PATH (data/cornell), DEVICE (cuda), ITERATIONS (4000),
# SAVE_EVERY (500), SAVE_DIR (runs/cornell-gpu: checkpoints, ~280 MB each), BENCH_ARGS (extra
# bench.train_bench flags), TRAIN_ARGS (extra train.main flags). Logs, the loss curve and a summary go to
# $OUT when set, else runs/gpu_check. To dry-run it on a CPU with tiny sizes:
#     DEVICE=cpu ITERATIONS=4 SAVE_EVERY=2 BENCH_ARGS="--timed-iterations 2 --warmup 1 --hidden-size 32" \
#     TRAIN_ARGS="--hidden-size 32" bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DATA_PATH=${DATA_PATH:-data/cornell}
DEVICE=${DEVICE:-cuda}
ITERATIONS=${ITERATIONS:-4000}
SAVE_EVERY=${SAVE_EVERY:-500}
SAVE_DIR=${SAVE_DIR:-runs/cornell-gpu}
REPORT_DIR=${OUT:-runs/gpu_check}
read -r -a BENCH_EXTRA <<< "${BENCH_ARGS:-}"
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

for f in movie_lines.txt movie_conversations.txt; do
  [ -f "$DATA_PATH/$f" ] || { echo "error: $DATA_PATH/$f not found: set DATA_PATH or carry data/cornell" >&2; exit 1; }
done
mkdir -p "$REPORT_DIR" "$SAVE_DIR"
"$PYTHON" -c 'import torch, tqdm, yaml, matplotlib, sys
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {gpu}")'

echo "== benchmark: tutorial step loop vs fast path ($DEVICE)"
"$PYTHON" -m bench.train_bench --device "$DEVICE" --data-path "$DATA_PATH" "${BENCH_EXTRA[@]}" \
  2>&1 | tee "$REPORT_DIR/bench.txt"

echo "== full recipe: $ITERATIONS iterations on Cornell ($DEVICE)"
start=$(date +%s)
"$PYTHON" -m train.main --corpus cornell --data-path "$DATA_PATH" --device "$DEVICE" --iterations "$ITERATIONS" \
  --save-every "$SAVE_EVERY" --save-dir "$SAVE_DIR" "${TRAIN_EXTRA[@]}" 2>&1 | tee "$REPORT_DIR/train.log"
wall=$(( $(date +%s) - start ))
cp "$SAVE_DIR/loss.png" "$REPORT_DIR/loss.png"

"$PYTHON" - "$SAVE_DIR/${ITERATIONS}_checkpoint.tar" "$wall" "$REPORT_DIR/bench.txt" <<'EOF' | tee "$REPORT_DIR/summary.txt"
import math, sys, torch
ckpt = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
speedup = [line.split()[-1] for line in open(sys.argv[3]) if line.startswith("train_speedup:")]
for iteration, train_loss, heldout_loss in ckpt["history"]:
    print(f"iteration {iteration}: train loss {train_loss:.4f}, held-out loss {heldout_loss:.4f} "
          f"(perplexity {math.exp(heldout_loss):.1f})")
print(f"gpu_check: training wall time {sys.argv[2]} s for {ckpt['iteration']} iterations "
      f"(including data preparation and evaluations)")
print(f"gpu_check: heldout_perplexity {math.exp(ckpt['heldout_loss']):.2f}")
print(f"gpu_check: train_speedup {speedup[-1] if speedup else 'missing'}")
EOF

# Multi-GPU variant (DistributedDataParallel over NCCL, train/distributed.py) on machines with more than one GPU:
# the same recipe and global batch, each GPU training on its share.
GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
if [ "$GPUS" -gt 1 ]; then
  echo "== data-parallel: $ITERATIONS iterations on $GPUS GPUs (torchrun)"
  start=$(date +%s)
  "$PYTHON" -m torch.distributed.run --nproc-per-node "$GPUS" -m train.main --corpus cornell --data-path "$DATA_PATH" \
    --device cuda --iterations "$ITERATIONS" --save-every "$SAVE_EVERY" --save-dir "$SAVE_DIR-ddp" "${TRAIN_EXTRA[@]}" \
    2>&1 | tee "$REPORT_DIR/train-ddp.log"
  echo "gpu_check: ddp_wall_time_s $(( $(date +%s) - start )) on $GPUS GPUs" | tee -a "$REPORT_DIR/summary.txt"
else
  echo "== data-parallel: skipped (one GPU; it runs with two or more)"
fi
