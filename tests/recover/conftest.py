"""The recover tests build their models with tests/onnx_builders.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
