#!/usr/bin/env bash
# Set up (if needed, with test tools, GNU Octave and the peer libraries the tests compare against) and run the
# whole test suite (under CI a missing Octave or peer fails the tests instead of skipping them).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev --bench
export CI=${CI:-}
echo "== pytest"
.venv/bin/python -m pytest "$@"
