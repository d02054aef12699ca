#!/usr/bin/env bash
# The GPU session of docs/performance.md ("GPU"), as one command on the device machine, from the repository's root:
#
#     bash benchmarks/device_session.sh [OPTIONS of python -m benchmarks.device_session]
#
# Installs the carried wheels (.gpu-carry/wheels/: pymanopt, geoopt, autograd and this project, built by
# benchmarks/prepare_device_carry.sh) with --no-deps into /tmp/site (or $DEVICE_SITE), so that the image's torch
# with CUDA stays untouched, then runs python -m benchmarks.device_session --out "$OUT" (two files come back from $OUT).
set -u
site=${DEVICE_SITE:-/tmp/site}
wheels=(.gpu-carry/wheels/*.whl)
if [ ! -e "${wheels[0]}" ]; then
    echo "no wheels in .gpu-carry/wheels: run bash benchmarks/prepare_device_carry.sh here first and carry .gpu-carry" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}" || exit 3
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec python3 -m benchmarks.device_session --out "${OUT:?OUT must name the folder whose files come back}" "$@"
