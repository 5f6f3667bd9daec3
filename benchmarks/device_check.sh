#!/usr/bin/env bash
# The prepared device check: what a GPU session measures, in at most 5 minutes (DC_BUDGET_S).
#
#   1. torch: end-to-end and bare-forward rates of Depth-Anything-V2-Small (random weights, the
#      real size; benchmarks/random_model.py) in fp16 on 1920x1080 frames, batch sizes 1,4,8,16
#      (benchmarks/gpu_bench.py: forward = the model alone; end to end = generate: decode,
#      prepare, infer, resize back, 16-bit PNG, atomic write, manifest).
#   2. onnx: the same rates for the model's export (fp32: export-onnx writes fp32 graphs) on each
#      of DC_ONNX_DEVICES (cuda, tensorrt) that this onnxruntime has; one line says why where not.
#   3. video: Video Depth Anything-Small (random weights, the real size; fp16 autocast on CUDA):
#      one 32-frame window's forward rate and generate's end-to-end rate (gpu_bench.py --arch video).
# Each step runs under a timeout (its share of what is left of the budget); a failed or timed
# out step says so and the next one runs. Numbers go to stdout and to RESULT_FILE.
#
# Prepare the environment first; this script installs nothing (the device machine may reach
# no network, not even a package registry):
#   pip install torch==2.13.0   (a CUDA build of torch>=2.1; pick its index at pytorch.org)
#   pip install -e .[onnx]      (for the CUDA/TensorRT rows also: pip install onnxruntime-gpu,
#                                which replaces the CPU onnxruntime it brings)
#
# Usage (from the repository root):
#   benchmarks/device_check.sh [RESULT_FILE]    default: $OUT/device_check.txt, else ./device_check.txt
#   DC_TINY=1 benchmarks/device_check.sh r.txt  tiny settings on the CPU (tests/test_benchmarks.py)
# Settings (environment; DC_TINY=1 changes the defaults to the tiny ones in brackets):
#   DC_DEVICE auto [cpu]  DC_ARCH small [tiny]  DC_VIDEO_ARCH video [video-tiny]  DC_FRAMES 128 [2]  DC_SIZE 1920x1080 [64x48]
#   DC_BATCH_SIZES 1,4,8,16 [1,2]  DC_INPUT_SIZE 518 [56]  DC_DTYPE fp16 [fp32]
#   DC_ONNX_DEVICES "cuda tensorrt" ["cpu cuda tensorrt"]  DC_TRT_BATCH_SIZES 1,8 [1]
#   DC_EXPORTER dynamo [torchscript]  DC_BUDGET_S 290  DC_WORKDIR (default: a temporary folder)

set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python="${PYTHON:-python3}"

tiny="${DC_TINY:-0}"
pick() { if [ "$tiny" = 1 ]; then echo "$2"; else echo "$1"; fi; }
device="${DC_DEVICE:-$(pick auto cpu)}"
arch="${DC_ARCH:-$(pick small tiny)}"
video_arch="${DC_VIDEO_ARCH:-$(pick video video-tiny)}"
frames="${DC_FRAMES:-$(pick 128 2)}"
size="${DC_SIZE:-$(pick 1920x1080 64x48)}"
batch_sizes="${DC_BATCH_SIZES:-$(pick 1,4,8,16 1,2)}"
input_size="${DC_INPUT_SIZE:-$(pick 518 56)}"
dtype="${DC_DTYPE:-$(pick fp16 fp32)}"
onnx_devices="${DC_ONNX_DEVICES:-$(pick "cuda tensorrt" "cpu cuda tensorrt")}"
trt_batch_sizes="${DC_TRT_BATCH_SIZES:-$(pick 1,8 1)}"
exporter="${DC_EXPORTER:-$(pick dynamo torchscript)}"
budget="${DC_BUDGET_S:-290}"

result="${1:-${OUT:-.}/device_check.txt}"
mkdir -p "$(dirname "$result")"
: > "$result"
if [ -n "${DC_WORKDIR:-}" ]; then
    workdir="$DC_WORKDIR"
    mkdir -p "$workdir"
else
    workdir="$(mktemp -d -t device-check-XXXXXX)"
    trap 'rm -rf "$workdir"' EXIT
fi
export DEPTHPRIOR_TRT_CACHE="$workdir/tensorrt"
failures=0

say() { echo "$*" | tee -a "$result"; }

# step NAME CAP_S COMMAND...: COMMAND's stdout to the screen and the result file, under a timeout
# of CAP_S or what is left of the budget (less a reserve for the steps after it)
step() {
    local name="$1" cap="$2"
    shift 2
    local left=$((budget - SECONDS - 10))
    local limit=$((cap < left ? cap : left))
    say ""
    if [ "$limit" -lt 10 ]; then
        say "== $name: skipped, the ${budget} s budget is spent"
        failures=$((failures + 1))
        return
    fi
    say "== $name (at most $limit s)"
    local started=$SECONDS status
    timeout --kill-after=10 "$limit" "$@" | tee -a "$result"
    status=${PIPESTATUS[0]}
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        say "== $name: timed out after $limit s"
        failures=$((failures + 1))
    elif [ "$status" != 0 ]; then
        say "== $name: failed (exit $status) after $((SECONDS - started)) s; its error is on stderr above"
        failures=$((failures + 1))
    else
        say "== $name: done in $((SECONDS - started)) s"
    fi
}

bench=("$python" "$here/gpu_bench.py" --arch "$arch" --frames "$frames" --size "$size"
       --input-size "$input_size" --workdir "$workdir")

say "device check $(date -u +%Y-%m-%dT%H:%M:%SZ), depthprior $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '(no git)')"
say "settings: device $device, $arch model, $frames frames $size, input $input_size, torch $dtype batch sizes $batch_sizes"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /' | tee -a "$result"
fi

step "torch $dtype" 150 "${bench[@]}" --backend torch --device "$device" --dtype "$dtype" --batch-sizes "$batch_sizes"

providers="$("$python" -c 'import onnxruntime as o; print(" ".join(o.get_available_providers()))' 2>/dev/null)" || providers=""
for onnx_device in $onnx_devices; do
    case "$onnx_device" in
        cpu) provider=CPUExecutionProvider; sizes="$batch_sizes" ;;
        cuda) provider=CUDAExecutionProvider; sizes="$batch_sizes" ;;
        tensorrt) provider=TensorrtExecutionProvider; sizes="$trt_batch_sizes" ;;
        *) say ""; say "== onnx $onnx_device: skipped, not a device of the onnx backend (cpu, cuda, tensorrt)"; continue ;;
    esac
    if [ -z "$providers" ]; then
        say ""
        say "== onnx $onnx_device: skipped, onnxruntime is not installed (pip install -e .[onnx])"
    elif [[ " $providers " != *" $provider "* ]]; then
        say ""
        say "== onnx $onnx_device: skipped, this onnxruntime has no $provider (it has: $providers)"
    else
        step "onnx $onnx_device fp32" 150 "${bench[@]}" --backend onnx --device "$onnx_device" \
            --exporter "$exporter" --batch-sizes "$sizes"
    fi
done

# Video Depth Anything-Small (random weights, the real size), fp16 autocast on CUDA: one window's
# forward rate and generate's end-to-end rate over the frames as one sequence
step "video (Video Depth Anything-Small) $dtype" 120 "$python" "$here/gpu_bench.py" --arch "$video_arch" \
    --frames "$frames" --size "$size" --input-size "$input_size" --workdir "$workdir" \
    --backend torch --device "$device" --dtype "$dtype"

say ""
say "device check finished in $SECONDS s with $failures failed step(s) (timed out, failed or left out); numbers in $result"
[ "$failures" = 0 ]
