#!/usr/bin/env bash
# The CUDA path measured in one go (bf16 autocast training, single-GPU training, evaluation, attribution):
#
#   1. train_bench at the paper's scale (d_model 256, 4 layers, 8 heads, batch 512, 1,783 classes) in bf16,
#      token-dropping model against the mask-token model: samples/s, the ratio, peak GPU memory;
#   2. the demo recipe trained for 2 epochs on the GPU and on the CPU (same data, same seed): per-epoch
#      training losses must agree within LOSS_RTOL (bf16 autocast on the GPU, float32 on the CPU);
#   3. eval-subsets and one attribution report (`--modality landsat --by year`, 21 players) on the GPU run;
#   4. samples/s and peak GPU memory of every step.
#
# Usage: benchmarks/gpu_check.sh [--dry-run] [WORK_DIR]     (WORK_DIR default: build/gpu-check)
#   --dry-run  the same flow on the CPU at toy sizes (seconds to minutes): checks the script itself
#              where no GPU is lent. It exits 1 without --dry-run when torch sees no CUDA device.
# Environment: PY (default .venv/bin/python), LOSS_RTOL (default 0.05), SURVEYS (default 1500).
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
WORK=${1:-build/gpu-check}
PY=${PY:-.venv/bin/python}
[[ -x "$PY" ]] || PY=python3
LOSS_RTOL=${LOSS_RTOL:-0.05}
cd "$(dirname "$0")/.."

if [[ $DRY == 1 ]]; then
  DEVICE=cpu; SURVEYS=${SURVEYS:-300}; EPOCHS=1
  BENCH_ARGS=(--d-model 32 --depth 1 --heads 4 --classes 50 --batch 32 --steps 1 --repeats 1)
  echo "== dry run: the CUDA checks' flow on the CPU at toy sizes (no figure here means anything)"
else
  DEVICE=cuda; SURVEYS=${SURVEYS:-1500}; EPOCHS=2
  BENCH_ARGS=(--bf16 --d-model 256 --depth 4 --heads 8 --classes 1783 --batch 512 --steps 4 --repeats 3)
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: torch sees no CUDA device (use --dry-run to check the flow on a CPU)" >&2; exit 1; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
mkdir -p "$WORK"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', \
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"

echo "== 1. train_bench: token dropping vs mask tokens ($DEVICE)"
"$PY" benchmarks/train_bench.py --device "$DEVICE" --skip-sampler "${BENCH_ARGS[@]}"

echo "== 2. demo data ($SURVEYS surveys) and the demo recipe, $EPOCHS epochs on $DEVICE and on cpu"
if [[ ! -f "$WORK/store/store.json" ]]; then
  "$PY" -m miam_cli synth geoplant "$WORK/raw" --surveys "$SURVEYS" --species 16 > /dev/null
  "$PY" -m miam_cli prepare geoplant "$WORK/raw" "$WORK/store" > /dev/null
fi
rm -rf "$WORK/run-$DEVICE" "$WORK/run-cpu-reference"

# One Python process per step, so that torch's peak-memory counter belongs to that step alone.
step() {  # step NAME DEVICE ARGS...: one of train / eval-subsets / attribute; prints wall time, figures, peak memory
  "$PY" - "$@" <<'PYTHON'
import csv, sys, time
from pathlib import Path

import torch

name, device, *rest = sys.argv[1:]
start = time.monotonic()
if name == "train":
    from miam_cli.recipe import load_recipe
    from miam_cli.engine.train import train
    store, out, epochs = rest
    recipe = load_recipe("recipes/demo.yaml", [f"store={store}", f"train.epochs={epochs}", f"train.device={device}", "train.seed=0"])
    train(recipe, Path(out), log=lambda *_: None)
    rows = list(csv.DictReader(open(Path(out) / "metrics.csv")))
    info = f"samples/s per epoch {[round(float(r['samples_per_s'])) for r in rows]}, train_loss {[float(r['train_loss']) for r in rows]}"
elif name == "eval-subsets":  # the public API (docs/api.md): stable whatever moves inside the package
    from miam_cli import api
    table = api.evaluate_subsets(api.load_run(rest[0], device=device)).table
    info = f"{len(table)} subsets, all-inputs AUC {table['auc'].max():.4f}, {table['samples'].iloc[0]} samples each"
elif name == "attribute":
    from miam_cli import api
    r = api.attribute(api.load_run(rest[0], device=device), modality="landsat", by="year").result
    info = f"{r.method}, {r.evaluations} coalition evaluations, largest SE {max(r.std_errors):.2g}, converged {r.converged}"
else:
    raise SystemExit(f"unknown step {name}")
seconds = time.monotonic() - start
peak = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device == "cuda" else ""
print(f"{name} on {device}: {seconds:.1f} s; {info}{peak}")
PYTHON
}

step train "$DEVICE" "$WORK/store" "$WORK/run-$DEVICE" "$EPOCHS"
step train cpu "$WORK/store" "$WORK/run-cpu-reference" "$EPOCHS"
"$PY" - "$WORK/run-$DEVICE" "$WORK/run-cpu-reference" "$LOSS_RTOL" <<'PYTHON'
import csv, sys

a, b, rtol = sys.argv[1], sys.argv[2], float(sys.argv[3])
la = [float(r["train_loss"]) for r in csv.DictReader(open(f"{a}/metrics.csv"))]
lb = [float(r["train_loss"]) for r in csv.DictReader(open(f"{b}/metrics.csv"))]
worst = max(abs(x - y) / abs(y) for x, y in zip(la, lb))
print(f"loss agreement: {la} vs cpu {lb}: largest relative difference {worst:.2e} "
      f"({'within' if worst <= rtol else 'OUTSIDE'} the tolerance {rtol})")
sys.exit(0 if worst <= rtol else 1)
PYTHON

echo "== 3. eval-subsets and one attribution report on the $DEVICE run"
step eval-subsets "$DEVICE" "$WORK/run-$DEVICE"
step attribute "$DEVICE" "$WORK/run-$DEVICE"
echo "== done ($([[ $DRY == 1 ]] && echo 'dry run on the CPU' || echo 'CUDA'))"
