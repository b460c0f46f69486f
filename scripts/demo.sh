#!/usr/bin/env bash
# The main job end to end on the generated demo dataset (CPU, a few minutes): installs what it needs, then runs
# generate -> plan/preprocess -> CPS training -> nnUNetv2_predict -> nnUNetv2_evaluate_folder and prints Dice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/nnunet_semi_demo "$@"
