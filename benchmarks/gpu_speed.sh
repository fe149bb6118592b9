#!/usr/bin/env bash
# The speed measurements on a CUDA machine (issue 24): our step against diffusers' example step at each model's
# native resolution (benchmarks/real_scale.py), and the GPU path's options on and off (benchmarks/step_options.py).
# Each result is written to its own file as soon as it is measured (into $OUT when set), so that a run cut short
# keeps what it finished. On the lent GPU machine diffusers is not installed: carry its wheel in .whl/ (docs/gpu.md).
# The GPU-only tests run first.
set -o pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
out=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, diffusers, transformers, peft, accelerate; print('torch', torch.__version__, 'diffusers', \
diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', \
accelerate.__version__, 'cuda', torch.cuda.is_available())" || exit 1
python3 -c "import textual_inversion.training, benchmarks.real_scale, benchmarks.step_options" || exit 1
measure() {  # a benchmark module and its options; says how long it took, and goes on after a failure
  local started=$SECONDS
  echo "== $*"
  python3 -m "$@" || echo "FAILED (rc $?): $*"
  echo "== $(( SECONDS - started )) s"
}
# First the tests that only a GPU runs (fp16/bf16 training and previews of each family and method, nf4): a
# minute; then the measurements, the ones not yet taken first (Flux.1-dev whole, at 1024 px: never measured on a
# GPU; then SD 2.1 after the GPU fixes): more than one 10-minute call holds, and each result is already written when
# the next begins.
python3 -m pytest tests/test_training.py tests/test_memory_options.py tests/methods/test_methods.py \
  -k "gpu or mixed_precision" -q -p no:cacheprovider -rs --tb=short > "$out/pytest-gpu.log" 2>&1
grep -E "^(FAILED|ERROR)|passed|failed" "$out/pytest-gpu.log"
measure benchmarks.real_scale --models flux-dev --resolution 0 --rounds 3 --device cuda --precision bf16 --threads "$(nproc)" --output "$out/real_scale_cuda_flux.md"
measure benchmarks.real_scale --models sd21 --resolution 0 --device cuda --precision bf16 --threads "$(nproc)" --output "$out/real_scale_cuda_sd21.md"
measure benchmarks.real_scale --models sd15 --resolution 0 --device cuda --precision bf16 --threads "$(nproc)" --output "$out/real_scale_cuda_sd15.md"
measure benchmarks.real_scale --models sdxl --resolution 0 --device cuda --precision bf16 --threads "$(nproc)" --output "$out/real_scale_cuda_sdxl.md"
measure benchmarks.real_scale --models sd15 --resolution 0 --device cuda --precision bf16 --threads "$(nproc)" \
  --token-gradient up --output "$out/real_scale_cuda_sd15_token_gradient_up.md"
measure benchmarks.step_options --model sd15 --device cuda --precision bf16 --options classic-attention channels-last compile \
  --output "$out/step_options_sd15_bf16_cuda.md"
measure benchmarks.step_options --model sd15 --device cuda --precision fp32 --options tf32 --output "$out/step_options_sd15_fp32_cuda.md"
