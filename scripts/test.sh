#!/usr/bin/env bash
# Run the whole test suite (real models included) in the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
