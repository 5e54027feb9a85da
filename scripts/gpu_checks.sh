#!/usr/bin/env bash
# The GPU checks owed by issue 3, grouped so that each fits one call of the device tool (10 minutes) on a lent H200.
# Runs from the repository root with the machine's own python3 (torch with CUDA); the package is used from the
# source tree. Logs and JSON go to $OUT (the device tool's folder), else ./gpu_out.
#
#   bash scripts/gpu_checks.sh tests    # kernel build (timed) + pytest -m gpu (kernels, epilogue, generator, fallback;
#                                       the 3D decomposer's renderer vs CPU and a training step on CUDA)
#   bash scripts/gpu_checks.sh bench    # bench_generator at 1024^2 batch 32 and 256^2 batch 1/8/32: the target table
#   bash scripts/gpu_checks.sh sweep    # the wider sweep (CUDA graphs, torch.compile, channels_last, bf16 autocast)
#   bash scripts/gpu_checks.sh decomposer  # issue 10's figures on the GPU: the shipped decomposer's scores and
#                                       throughput (bench_decomposer.py --device cuda), training s/step fresh vs bank,
#                                       the renderer's ms per image (bench_renderer.py --device cuda)
set -uo pipefail

out="${OUT:-gpu_out}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
phase="${1:-tests}"
status=0

run() {  # run NAME CMD...: tee the output to $out/NAME.log, remember a failure, go on
  local name="$1"; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log" || status=1
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt" || true
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

case "$phase" in
  tests)
    run build "$py" -c "
import time
from stylegan_disentangle.ops import cuda_build
start = time.time()
ops = cuda_build.load_extension()
print(f'build+load {time.time() - start:.1f} s:', cuda_build.build_status())
raise SystemExit(0 if ops is not None else 1)"
    run pytest_gpu "$py" -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_ops.py tests/test_cuda_build.py \
      tests/test_decomposer_cuda.py
    ;;
  bench)
    run bench_1024 "$py" scripts/bench_generator.py --resolutions 1024 --batches 32 --impls ref cuda \
      --precisions fp32 tf32 fp16 bf16 --modconv fused non-fused --epilogue fused separate --reps 5 \
      --json "$out/bench_1024.json"
    run bench_256 "$py" scripts/bench_generator.py --resolutions 256 --batches 1 8 32 --impls ref cuda \
      --precisions fp32 fp16 --modconv fused non-fused --reps 5 --json "$out/bench_256.json"
    ;;
  sweep)
    run sweep_1024 "$py" scripts/bench_generator.py --resolutions 1024 --batches 32 --impls cuda \
      --precisions tf32 fp16 bf16 bf16-autocast --modconv non-fused --channels-last both --modes eager graphs compile \
      --reps 5 --json "$out/sweep_1024.json"
    ;;
  decomposer)
    run bench_decomposer "$py" scripts/bench_decomposer.py --device cuda --samples 1000 --reps 20 \
      --json "$out/bench_decomposer.json"
    run bench_decomposer_training "$py" scripts/bench_decomposer_training.py --device cuda --steps 40 --bank 2048 \
      --json "$out/bench_decomposer_training.json"
    run bench_decomposer_training_b64 "$py" scripts/bench_decomposer_training.py --device cuda --steps 40 \
      --batch-size 64 --bank 2048 --json "$out/bench_decomposer_training_b64.json"
    run bench_renderer "$py" scripts/bench_renderer.py --device cuda --reps 20 --json "$out/bench_renderer.json"
    ;;
  *)
    echo "unknown phase $phase (tests | bench | sweep | decomposer)"; exit 2 ;;
esac
exit $status
