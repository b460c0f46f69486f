#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu/README.md): results in $OUT (default benchmarks/gpu/out).
#
#   on the lent GPU machine, after installing the carried wheels (the one-call command in the README):
#       PYTHONPATH=/tmp/site bash benchmarks/gpu/run_check.sh
#   here, on the CPU, small and quick:
#       bash benchmarks/gpu/run_check.sh --cpu --tiny
#
# Options go to `python -m benchmarks.gpu.check` (--help lists them). PYTHON=<interpreter> picks the Python
# (default: the project's .venv if there is one, else python3). KIT_SIMULATE_BARE=1 simulates the bare GPU machine
# here: imports of packages that machine lacks and the kit does not carry fail (benchmarks/gpu/bare/).
set -o pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export OUT=${OUT:-benchmarks/gpu/out}
mkdir -p "$OUT"
if [ "${KIT_SIMULATE_BARE:-0}" = "1" ]; then
    export PYTHONPATH="$PWD/benchmarks/gpu/bare${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PYTHON" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('nnunetv2', 'SimpleITK', 'blosc2', 'acvl_utils', 'batchgeneratorsv2', 'dynamic_network_architectures')))"; then
    echo "nnU-Net is not importable by $PYTHON. On the GPU machine install the carried wheels first:" >&2
    echo "  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site" >&2
    exit 3
fi
"$PYTHON" -m benchmarks.gpu.check "$@" 2>&1 | tee "$OUT/gpu_check.log"
