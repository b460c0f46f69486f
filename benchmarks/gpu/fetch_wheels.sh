#!/usr/bin/env bash
# Download here, into .whl/ at the repository root (ignored by git), exactly the wheels of benchmarks/gpu/wheels.txt
# for the GPU machine (CPython 3.12, manylinux x86_64), re-compress SimpleITK's with LZMA, and print the table of
# what travels and its size against the device tool's 64 MiB. Needs network access to PyPI; run from anywhere:
#
#     bash benchmarks/gpu/fetch_wheels.sh
#
# PYTHON=<interpreter> picks the Python whose pip downloads (default: python3). Existing .whl/*.whl are removed
# first: two versions of one package stop the install on the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
DEST=.whl
mkdir -p "$DEST"
rm -f "$DEST"/*.whl "$DEST"/*.whl.tmp
PLATFORM=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

"$PY" benchmarks/gpu/wheels.py list | while read -r spec how; do
    case "$how" in
        wheel|wheel+lzma)
            echo "download $spec"
            "$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$DEST" "$spec" ;;
        sdist)
            # no wheel on PyPI: build one here from the sdist (pure Python: the wheel is py3-none-any)
            echo "build $spec from its sdist"
            "$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$DEST" "$spec" ;;
        *) echo "wheels.txt: unknown 'how' $how for $spec" >&2; exit 1 ;;
    esac
    if [ "$how" = "wheel+lzma" ]; then
        name=${spec%%==*}; version=${spec##*==}
        "$PY" benchmarks/gpu/wheels.py repack "$DEST"/$(echo "$name" | tr '-' '_')-"$version"-*.whl
    fi
done
"$PY" benchmarks/gpu/wheels.py report --dir "$DEST"
# the pins against the project's environment, where there is one (a difference is a warning: update wheels.txt)
if [ -x .venv/bin/python ]; then
    .venv/bin/python benchmarks/gpu/wheels.py check-versions || echo "WARNING: wheels.txt differs from .venv" >&2
fi
