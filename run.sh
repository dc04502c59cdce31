#!/usr/bin/env bash
# Set-up and entry points. Usage:
#   ./run.sh demo   # create .venv if needed, then train, prune, verify, fine-tune and benchmark a digits CNN
#   ./run.sh demo --dataset cifar10   # the same story for the pretrained CIFAR-10 ResNet-56 (../shared/assets)
#   ./run.sh test   # create .venv if needed, then run the fast test set (a few minutes on 2 cores)
#   ./run.sh test --all   # every test, including the `slow` combinations (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${ONNXPRUNE_VENV:-.venv}

step() { echo "[run.sh] $*" >&2; }

setup() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import onnxprune, torch, onnxruntime, sklearn" 2>/dev/null; then
    return
  fi
  step "first run: setting up $VENV (downloads PyTorch, onnxruntime and their dependencies; pip shows its progress)"
  step "1/3 creating the virtual environment $VENV"
  python3 -m venv "$VENV"
  # torch is pinned to the CPU build for development; the package itself accepts any torch>=2.1
  step "2/3 installing PyTorch (CPU build, the largest download)"
  "$VENV/bin/pip" install --progress-bar on -c constraints-dev.txt torch
  step "3/3 installing onnxprune and its dependencies (onnx, onnxruntime, cvxpy, scikit-learn, matplotlib)"
  "$VENV/bin/pip" install --progress-bar on -c constraints-dev.txt -e ".[torch,test,demo,plot]"
  step "set-up done"
}

case "${1:-}" in
  demo) setup; shift; step "running the demo (python -m onnxprune.demo $*)"; exec "$VENV/bin/python" -m onnxprune.demo "$@" ;;
  test)
    setup; shift
    if [ "${1:-}" = "--all" ]; then
      shift; step "running every test"; exec "$VENV/bin/python" -m pytest -q "$@"
    fi
    step "running the fast tests (./run.sh test --all adds the slow ones)"
    exec "$VENV/bin/python" -m pytest -q -m "not slow" "$@" ;;
  *) echo "usage: ./run.sh demo [--dataset digits|cifar10] | test [--all] [pytest args...]" >&2; exit 2 ;;
esac
