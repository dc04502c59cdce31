"""Stage 2: activation capture with onnxruntime, in bounded batches."""
from onnxprune.capture.session import CaptureSession, Probe, batch_size_for, probes_for

__all__ = ["CaptureSession", "Probe", "batch_size_for", "probes_for"]
