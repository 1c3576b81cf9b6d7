#!/usr/bin/env bash
# Set up (if needed, with test tools and GNU Octave) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
export CI=${CI:-}
echo "== pytest"
.venv/bin/python -m pytest "$@"
