"""Read-only graph view: shapes, constants (with constant folding), producers and consumers."""
from onnxprune.graph.view import GraphView, fix_input_shapes, node_label

__all__ = ["GraphView", "node_label", "fix_input_shapes"]
