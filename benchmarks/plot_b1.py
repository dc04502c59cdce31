"""PNG plots of the B1 results: one-shot top-1 vs MACs reduction, per method and test set.

Usage: python benchmarks/plot_b1.py  (reads and writes benchmarks/results/)
"""
import json
from pathlib import Path

from onnxprune.plots import plot_accuracy_vs_macs

RESULTS = Path(__file__).resolve().parent / "results"
rows = json.loads((RESULTS / "b1_oneshot.json").read_text())["rows"]
plot_accuracy_vs_macs(rows, RESULTS / "b1_oneshot_lossless.png", "acc_lossless",
                      "ResNet-56 one-shot top-1 (1017 lossless test images)")
plot_accuracy_vs_macs(rows, RESULTS / "b1_oneshot_jpeg.png", "acc_jpeg",
                      "ResNet-56 one-shot top-1 (10 000 JPEG test images)")
