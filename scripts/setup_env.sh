#!/usr/bin/env bash
# Create .venv (once) and install nnunet-semi with its test extra; the torch/torchvision pair is pinned in
# constraints.txt. Re-running is cheap: pip finds everything installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "[nnunet-semi] creating .venv"
  "${PYTHON:-python3}" -m venv .venv
fi
echo "[nnunet-semi] installing (pip install -c constraints.txt -e '.[test]'; several minutes on a fresh machine)"
if ! .venv/bin/python -m pip install -q -c constraints.txt -e '.[test]' > .venv/pip-install.log 2>&1; then
  grep -v "is ignored: it is neither a file nor a directory" .venv/pip-install.log
  echo "[nnunet-semi] pip install failed (full log: .venv/pip-install.log)" >&2
  exit 1
fi
