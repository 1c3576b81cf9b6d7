#!/usr/bin/env bash
# Set up everything on a fresh machine (Python >= 3.10 is all it needs): a virtual environment in .venv with
# torch (the CPU build), the project and its extras. Idempotent: a second run only checks.
#   scripts/setup.sh            project + plotting (for the demo)
#   scripts/setup.sh --dev      also the test tools and GNU Octave (Debian's package, needs root or sudo)
#   scripts/setup.sh --bench    also the peer libraries that benchmarks/ and the tests compare against
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEV=0
BENCH=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --bench) BENCH=1 ;;
    *) echo "usage: scripts/setup.sh [--dev] [--bench]" >&2; exit 2 ;;
  esac
done

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# torch first and pinned, so pip takes the local CPU build instead of downloading CUDA builds.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "== installing torch 2.13.0"
  $PIP install -q torch==2.13.0
fi
EXTRAS=plot
[ $DEV = 1 ] && EXTRAS=plot,dev
echo "== installing hessiancore[$EXTRAS]"
$PIP install -q -e ".[$EXTRAS]"

if [ $DEV = 1 ] && ! command -v octave-cli >/dev/null 2>&1; then
  echo "== installing GNU Octave (Debian package 'octave')"
  SUDO=""
  [ "$(id -u)" != 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq octave >/dev/null
fi
if [ $BENCH = 1 ]; then
  echo "== installing benchmark peers (no-deps: some declare torchvision, which would replace torch)"
  $PIP install -q --no-deps curvlinops-for-pytorch==3.0.1 backpack-for-pytorch==1.7.1 pyhessian==0.1 \
    hessian-eigenthings==1.0.0a5 linear-operator==0.6.1 opt-einsum==3.4.0 einconv==0.1.0 jaxtyping==0.3.11 \
    wadler-lindig==0.1.8 einops==0.8.2 unfoldNd==0.2.3
  # laplace-torch declares torchvision too; what it really imports: asdfghjkl (ASDL), torchmetrics
  $PIP install -q --no-deps laplace-torch==0.3 asdfghjkl==0.1a4 torchmetrics==1.9.0 lightning-utilities==0.15.3 \
    packaging typing_extensions
  # transformers' declared dependencies do not include torch: a normal install
  $PIP install -q transformers==5.20.0
fi
echo "== setup done"
