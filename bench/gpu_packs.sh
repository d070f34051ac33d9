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
# device call carries it: mkdir -p .gpudata && cp ../shared/data/cifar10-jpg.tar.gz .gpudata/). Optuna (step 7)
# is not on the GPU image: its wheels travel in .whl/ (git-excluded), fetched here with
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl optuna alembic sqlalchemy colorlog mako
# and installed by this script into /tmp/site where .whl/ is there. The device call carries .gpudata and .whl.
#
#   bash bench/gpu_packs.sh [results folder]      # default: bench/results
# Under a device call ($OUT set, no folder named) every result goes into one file, $OUT/gpu_packs.tar.gz
# (a device call brings back at most 8 files).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ $# -eq 0 && -n "${OUT:-}" ]]; then out=$(mktemp -d); bundle=$OUT/gpu_packs.tar.gz; else out=${1:-bench/results}; bundle=; fi
mkdir -p "$out"
export ASP_TUNE_SHARED_DATA=${ASP_TUNE_SHARED_DATA:-$PWD/.gpudata} PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
if [[ ! -f $ASP_TUNE_SHARED_DATA/cifar10-jpg.tar.gz ]]; then
    echo "no $ASP_TUNE_SHARED_DATA/cifar10-jpg.tar.gz: every ResNet-8 measurement needs it (see above)"; exit 1
fi
failed=()
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/test_cuda.log" || failed+=(test_cuda)
python3 bench/pack_step.py --device cuda --sizes 1,4,16,64 --out "$out" || failed+=(pack_step)
python3 bench/fused.py --device cuda --out "$out" || failed+=(fused)
python3 bench/footprint.py --device cuda --out "$out" || failed+=(footprint)
python3 bench/pack_selection.py --device cuda --out "$out" || failed+=(pack_selection)
python3 bench/train_wall.py --device cuda --subset 0 --epochs 3 --ratios 1.0 --repeats 1 --out-dir "$out" \
    --name train_wall-resnet8-cuda-3epochs || failed+=(train_wall)
python3 -c "import optuna" 2>/dev/null || echo "no optuna (carry .whl, see above): the packed study cannot run"
python3 bench/packed_study.py --device cuda --problems cifar10-resnet8 --quick --seeds 0 --out "$out" \
    || failed+=(packed_study)
if [[ -n $bundle ]]; then tar -czf "$bundle" -C "$out" . && echo "every result in $bundle"; fi
if ((${#failed[@]})); then echo "failed: ${failed[*]}"; exit 1; fi
echo "all measured; results in ${bundle:-$out}"
