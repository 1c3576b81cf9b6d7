#!/usr/bin/env bash
# Set up (if needed) and run the demo: the exact Hessian of a small network on built-in data, summarized.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m hessian_core.demo "$@"
