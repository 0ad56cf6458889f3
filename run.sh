#!/usr/bin/env bash
# Usage:
#   bash run.sh train|eval|predict|inference MODEL_NAME CONFIG   (as the model zoo)
#   bash run.sh serve MODEL_NAME CONFIG [--weights W --port 8000] (HTTP server and page)
#   bash run.sh demo                                             (built-in demo, no data needed)
#   bash run.sh test                                             (install test needs, run tests)
# Extra arguments after CONFIG go to the Python script, e.g. `-o TRAIN.epoch=1`.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-}
name=${2:-TSM}
configs=${3:-./configs/tsm.yaml}
if [ "$mode" = demo ] || [ "$mode" = test ]; then shift $(( $# < 1 ? $# : 1 )); else shift $(( $# < 3 ? $# : 3 )); fi

pretrain=""           # path to pretrained weights; empty: ImageNet ResNet-50 is downloaded
resume=""             # checkpoint prefix to resume from, e.g. ./data/checkpoints/TSM_epoch10
weights=""            # weights for eval/predict/inference; empty: the released model
backend=""            # inference: paddle (empty: its default), onnxruntime (.onnx) or openvino (IR)
save_dir=""           # empty: each script's default
use_gpu=""            # True/False; empty: the config's TRAIN.use_gpu (CPU when no GPU)
fix_random_seed=False
log_interval=10
valid_interval=1

# memory settings of the original, for the GPU build
export FLAGS_fast_eager_deletion_mode=1
export FLAGS_eager_delete_tensor_gb=0.0
export FLAGS_fraction_of_gpu_memory_to_use=0.98

opt=()
[ -n "$save_dir" ] && opt+=(--save_dir "$save_dir")
[ -n "$use_gpu" ] && opt+=(--use_gpu "$use_gpu")

# number of GPUs visible (0 without nvidia-smi or CUDA)
num_gpus() {
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
        echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c GPU || true
    else
        echo 0
    fi
}

# what the demo and the tests need; Paddle only when none is installed (keeps a GPU build)
setup() {
    python -c "import paddle" 2>/dev/null || python -m pip install -q paddlepaddle
    python -m pip install -q -r requirements.txt "$@"
    # Paddle 2.6 (paddlepaddle-gpu 2.6.2) converts to ONNX with paddle2onnx 1.x only
    if python -c "import sys, paddle; sys.exit(not paddle.__version__.startswith('2.'))" 2>/dev/null; then
        python -m pip install -q 'paddle2onnx<2'
    fi
}

case "$mode" in
train)
    args=(--model_name "$name" --config "$configs" --log_interval "$log_interval"
          --valid_interval "$valid_interval" --fix_random_seed "$fix_random_seed" "${opt[@]}")
    [ -n "$pretrain" ] && args+=(--pretrain "$pretrain")
    [ -n "$resume" ] && args+=(--resume "$resume")
    n=$(num_gpus)
    if [ "$n" -gt 1 ] && [ "$use_gpu" != "False" ]; then
        echo "training on $n GPUs with paddle.distributed.launch"
        python -m paddle.distributed.launch --log_dir ./log train.py "${args[@]}" "$@"
    else
        python train.py "${args[@]}" "$@"
    fi
    ;;
eval)
    args=(--model_name "$name" --config "$configs" --log_interval "$log_interval" "${opt[@]}")
    [ -n "$weights" ] && args+=(--weights "$weights")
    python eval.py "${args[@]}" "$@"
    ;;
predict)
    args=(--model_name "$name" --config "$configs" --log_interval "$log_interval" "${opt[@]}")
    [ -n "$weights" ] && args+=(--weights "$weights")
    python predict.py "${args[@]}" "$@"
    ;;
inference)
    args=(--model_name "$name" --config "$configs" "${opt[@]}")
    [ -n "$weights" ] && args+=(--weights "$weights")
    [ -n "$backend" ] && args+=(--backend "$backend")
    python inference_model.py "${args[@]}" "$@"   # e.g. --backend openvino: README, Export
    ;;
serve)
    args=(--model_name "$name" --config "$configs")
    [ -n "$weights" ] && args+=(--weights "$weights")
    python serve.py "${args[@]}" "$@"
    ;;
demo)
    setup
    python -m tools.demo --out_dir output/demo "$@"
    ;;
test)
    setup -r requirements-test.txt
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        echo "note: Chromium is not installed, so the browser tests are left out (sudo apt-get install chromium chromium-driver)"
    fi
    # one pytest process; the 25 slowest tests are listed (the suite's time budget)
    python -m pytest tests -q -p no:cacheprovider --durations=25 "$@"
    ;;
*)
    echo "error: unknown mode '$mode' (use train, eval, predict, inference, serve, demo or test)" >&2
    echo "usage: bash run.sh train|eval|predict|inference|serve MODEL_NAME CONFIG [extra flags]" >&2
    exit 2
    ;;
esac
