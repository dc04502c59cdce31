"""Label-free recovery after pruning: refit the layers whose inputs lost channels so that their
outputs on calibration images match the unpruned model's (``reconstruct``), and the record and
check that keep the structural proof intact (``RefitRecord``, ``check_refit``)."""
from onnxprune.recover.record import LayerRefit, RefitCheck, RefitRecord, check_refit, tensor_sha256
from onnxprune.recover.reconstruct import reconstruct

__all__ = ["reconstruct", "RefitRecord", "LayerRefit", "RefitCheck", "check_refit", "tensor_sha256"]
