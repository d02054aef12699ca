#!/usr/bin/env bash
# What the GPU session (benchmarks/device_session.sh) carries to the device machine, built here into .gpu-carry/
# (git-ignored), from the repository's root, with the project's environment active:
#
#     bash benchmarks/prepare_device_carry.sh [TENG_OUT]
#
# .gpu-carry/wheels/: pymanopt, geoopt and autograd at the versions installed here (pure-Python wheels, fetched
# with pip download --no-deps for the device image's CPython 3.12 on x86-64; their own needs, numpy, scipy and
# torch, are in that image), and this project's wheel (pip wheel --no-deps .), built from this checkout: build it
# again after every commit that is to run there. .gpu-carry/teng/teng_initial_parameters.npz: TENG's fitted
# initial network, copied from TENG_OUT (the --out folder of python -m benchmarks.teng_side_by_side teng, which
# exports it); TENG's output, carried and never committed. Without it the session skips TENG's heat step.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
pins=$("$python" -c "import importlib.metadata as m; print(' '.join(f'{n}=={m.version(n)}' for n in ('pymanopt', 'geoopt', 'autograd')))")
rm -rf .gpu-carry/wheels
mkdir -p .gpu-carry/wheels .gpu-carry/teng
# shellcheck disable=SC2086  # the pins are words
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu-carry/wheels $pins
"$python" -m pip wheel -q --no-deps -w .gpu-carry/wheels .
if [ $# -ge 1 ]; then
    cp "$1/teng_initial_parameters.npz" .gpu-carry/teng/
fi
ls -l .gpu-carry/wheels .gpu-carry/teng
du -sh .gpu-carry
