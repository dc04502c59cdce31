"""PNG plots of the B1 results: top-1 vs MACs reduction, per method and test set.

Usage: python benchmarks/plot_b1.py  (reads and writes benchmarks/results/)
  b1_oneshot.json          -> b1_oneshot_{lossless,jpeg}.png   (one-shot, pretrained start)
  b1_full/b1_finetune.json -> b1_full/b1_{oneshot,finetuned}_jpeg.png (adapted start)
"""
import json
from pathlib import Path

from onnxprune.tools.plots import plot_accuracy_vs_macs

RESULTS = Path(__file__).resolve().parent / "results"
if (RESULTS / "b1_oneshot.json").exists():
    rows = json.loads((RESULTS / "b1_oneshot.json").read_text())["rows"]
    plot_accuracy_vs_macs(rows, RESULTS / "b1_oneshot_lossless.png", "acc_lossless",
                          "ResNet-56 one-shot top-1 (1017 lossless test images)")
    plot_accuracy_vs_macs(rows, RESULTS / "b1_oneshot_jpeg.png", "acc_jpeg",
                          "ResNet-56 one-shot top-1 (10 000 JPEG test images)")
full = RESULTS / "b1_full" / "b1_finetune.json"
if full.exists():
    rows = json.loads(full.read_text())["rows"]
    plot_accuracy_vs_macs(rows, full.parent / "b1_oneshot_jpeg.png", "oneshot_jpeg",
                          "ResNet-56 (JPEG-adapted) one-shot top-1, JPEG test")
    plot_accuracy_vs_macs(rows, full.parent / "b1_finetuned_jpeg.png", "acc_jpeg",
                          "ResNet-56 (JPEG-adapted) after the short fine-tune, JPEG test")
