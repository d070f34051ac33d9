#!/usr/bin/env bash
# The GPU measurements of packs in one device call (a few minutes on an H100/H200; no Ray needed there):
#   1. the CUDA tests (tests/test_cuda.py, a pack's equivalence on the GPU among them);
#   2. one training step of K configurations, one after another against one pack (K = 1, 4, 16, 64);
#   3. successive halving in packs against one configuration at a time: configurations per GPU-hour and how
#      busy the GPU was in each (bench/fused.py);
#   4. one ResNet-8 on all of CIFAR-10 at r = 1: its epoch time (bench/train_wall.py);
#   5. what a member of a pack holds, as `--pack auto` measures it, against one training step (bench/footprint.py);
#   6. a pack's members choosing their subsets one at a time against together (bench/pack_selection.py);
#   7. an Optuna study of ResNet-8s in packs against one trial at a time (bench/packed_study.py; needs optuna).
# CIFAR-10's archive comes from ASP_TUNE_SHARED_DATA, by default .gpudata/ in the checkout (git-ignored; a
# device call carries it: mkdir -p .gpudata && cp ../shared/data/cifar10-jpg.tar.gz .gpudata/).
#
#   bash bench/gpu_packs.sh [results folder]      # default: $OUT where set, else bench/results
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results}}
mkdir -p "$out"
export ASP_TUNE_SHARED_DATA=${ASP_TUNE_SHARED_DATA:-$PWD/.gpudata} PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
failed=()
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/test_cuda.log" || failed+=(test_cuda)
python3 bench/pack_step.py --device cuda --sizes 1,4,16,64 --out "$out" || failed+=(pack_step)
python3 bench/fused.py --device cuda --out "$out" || failed+=(fused)
python3 bench/footprint.py --device cuda --out "$out" || failed+=(footprint)
python3 bench/pack_selection.py --device cuda --out "$out" || failed+=(pack_selection)
python3 bench/train_wall.py --device cuda --subset 0 --epochs 3 --ratios 1.0 --repeats 1 --out-dir "$out" \
    || failed+=(train_wall)
python3 bench/packed_study.py --device cuda --problems cifar10-resnet8 --quick --seeds 0 --out "$out" \
    || failed+=(packed_study)
if ((${#failed[@]})); then echo "failed: ${failed[*]}"; exit 1; fi
echo "all measured; results in $out"
