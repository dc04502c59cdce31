#!/usr/bin/env bash
# Set-up and entry points. Usage:
#   ./run.sh demo   # create .venv if needed, then train, prune, verify, fine-tune and benchmark a digits CNN
#   ./run.sh demo --dataset cifar10   # the same story for the pretrained CIFAR-10 ResNet-56 (../shared/assets)
#   ./run.sh test   # create .venv if needed, then run the test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV=${ONNXPRUNE_VENV:-.venv}

setup() {
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import onnxprune, torch, onnxruntime, sklearn" 2>/dev/null; then
    echo "[run.sh] setting up $VENV (first run only)" >&2
    python3 -m venv "$VENV"
    # torch is pinned to the CPU build for development; the package itself accepts any torch>=2.1
    "$VENV/bin/pip" install -q -c constraints-dev.txt torch
    "$VENV/bin/pip" install -q -c constraints-dev.txt -e ".[torch,test,demo,plot]"
  fi
}

case "${1:-}" in
  demo) setup; shift; exec "$VENV/bin/python" -m onnxprune.demo "$@" ;;
  test) setup; shift; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *) echo "usage: ./run.sh demo|test [args...]" >&2; exit 2 ;;
esac
