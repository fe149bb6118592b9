#!/usr/bin/env bash
# The device check: the core test suite on a CUDA machine (fp16/bf16 training and CUDA generation for SD1, SDXL and
# the tiny Flux, SD3 and Z-Image models: tests/test_training.py::test_mixed_precision_trains_and_draws_previews; nf4 quantisation).
# On the lent GPU machine diffusers is not installed: carry its wheel in .whl/ (docs/gpu.md).
set -o pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__, torch.cuda.is_available())"
# Two CPU processes on one GPU machine are not what test_distributed checks, and the image has no Jupyter.
python3 -m pytest tests -q -p no:cacheprovider -m "slow or not slow" --ignore=tests/test_distributed.py --ignore=tests/test_notebooks.py \
  -rs 2>&1 | tee "${OUT:-.}/pytest-gpu.log"
